"""A session's progress and its waits under the real MicroPython, as a board reports them:
a whole channel session whose producer stops delivering half-way, stepped as a runner
steps (every 50 ms of a manual clock), with the board console and the role's reporter
watching it. The stall is announced once, naming the meter reading awaited and when the
link gives up; progress comes at a steady pace; and a step between looks allocates nothing.
"""
import gc

import sessiondrive as D
from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ManualClock, ScaledView
from plugpay.boards.sim.power import Battery, Meter
from plugpay.firmware import console as C
from plugpay.firmware.progress import Progress, announcement
from plugpay.firmware.role import reporter
from plugpay.firmware.session import CHANNEL, Misbehaviour, Session, Terms
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256
from test_wallet_mp import _mint, _wallet

SESSION = sha256(b"progress session")[:16]
SEQUENCE_MS = 20000
TIMEOUTS = link.Timeouts(response=2000, retransmit=500, sequence=SEQUENCE_MS, payment=3000, pause=60000)
N = 4
PARAMS = M.ChargeParameters(2000, 1790000000, 1790007200, 11000, 300, N, 5)
NOW_S = 1790000000


def _sessions(name, cheat=None):
    clock = ManualClock()
    charger = SimBoard("charger", ScaledView(clock, 1000), 11000, meter=Meter(sha256(b"progress meter")))
    vehicle = SimBoard("vehicle", ScaledView(clock, 1000), 11000, battery=Battery(80000, 20000, 50000, 50000))
    vehicle.connect(charger)
    wallets = {"vehicle": _wallet(name + "-v", 6), "charger": _wallet(name + "-c", 6)}
    _mint(wallets["vehicle"], [800], 9)
    sessions = {}
    for side, board, initiator in (("vehicle", vehicle, True), ("charger", charger, False)):
        terms = Terms(SESSION, PARAMS, CHANNEL, not initiator, initiator, window=10, htlc_timeout=10 ** 6)
        sessions[side] = Session(wallets[side], board, terms, 0, TIMEOUTS, timestamp=NOW_S,
                                 misbehaviour=cheat if side == "charger" else None)
    return clock, sessions


def _frames(lines):
    out = []
    parser = C.Parser()
    for line in lines:
        out += [(f.kind, f.payload) for f in parser.feed(line) if isinstance(f, C.Frame)]
    return out


def test_a_stalled_session_announces_its_wait_once_then_reports_progress():
    clock, sessions = _sessions("stall", Misbehaviour(stop_delivering_after=2))
    vehicle, charger = sessions["vehicle"], sessions["charger"]
    written = []
    console = C.BoardConsole(written.append, "vehicle", "sim", "vehicle")
    said = []
    report = reporter(said.append, lambda: NOW_S)

    def watch(now):
        console.on_step(vehicle, now)
        report(charger, now)

    for step in D.Pump(vehicle, charger, D.ChannelLedger(), clock, poll_ms=50, on_step=watch).run(10 ** 6):
        if isinstance(step, str):
            yield step
    assert vehicle.stop_code == M.FAILED_Timeout and vehicle.finished and charger.finished
    frames = _frames(written)
    waits = [p for kind, p in frames if kind == C.WAIT]
    # the vehicle waited for meter reading 3 (the producer delivered 2 chunks), once, with what was left
    assert [(w[1], w[3], w[4]) for w in waits] == [("charging_status", 3, 2)], waits
    assert SEQUENCE_MS - 2000 < waits[0][2] <= SEQUENCE_MS
    steps = [p for kind, p in frames if kind == C.STEP]
    assert steps[-1][1:4] == [3, N, 1000] and steps[-1][5] == vehicle.exposure_bound()
    stalled = [s for s in steps if s[0] > waits[0][0]]
    assert stalled and all(s[6] == 1 for s in stalled[:-1])  # still waiting, until the timeout
    # a steady pace through the stall: a line a second, not one a step (400 steps)
    assert SEQUENCE_MS // 1000 - 2 <= len(stalled) <= SEQUENCE_MS // 1000 + 2, len(stalled)
    # the charger's reporter: its own wait, the energy of chunk 3, once, on the wall clock
    announced = [line for line in said if "waiting for" in line and "still" not in line]
    assert len(announced) == 1 and "waiting for the energy of chunk 3, stopping at " in announced[0], said
    assert len([line for line in said if "progress:" in line]) <= SEQUENCE_MS // 10000 + N + 4, said


def test_wait_words_and_deadlines():
    assert announcement("charging_status", 3, 2, 58001, NOW_S).startswith("waiting for meter reading 3, stopping at ")
    assert announcement("charging_status", 3, 2, 58001, NOW_S).endswith(" (in 59 s)")
    assert "the deposit (installment 0)" in announcement("installment_req", 0, 0, 5000, NOW_S)
    assert "installment 7," in announcement("installment_req", 7, 6, 5000, NOW_S)
    assert "the peer's answer to power delivery" in announcement("power_delivery_res", 1, 0, 100, NOW_S)


def test_between_looks_a_step_allocates_nothing():
    _, sessions = _sessions("quiet")
    session = sessions["vehicle"]
    progress = Progress(every_ms=10000, min_ms=1000)
    progress.step(session, 0)  # the first look
    gc.collect()
    before = gc.mem_alloc()
    for now in range(1, 1000, 7):
        progress.step(session, now)
    assert gc.mem_alloc() == before
