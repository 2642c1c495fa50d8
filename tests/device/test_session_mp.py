"""Whole charging sessions under the real MicroPython: a vehicle and a charger, each with a
real wallet on files and a simulated board (boards/sim: the charger's signing meter, the
vehicle's battery, one cable between them), run ``firmware.session`` from the deposit to
the settled channel, as one MicroPython process can be a whole vehicle or charger.

The ledger is a stand-in for the host's (sessiondrive.ChannelLedger); the link's clock is
manual and the boards' runs 1000 times faster, so energy flows without waiting.
"""
import sessiondrive as D
from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ManualClock, ScaledView
from plugpay.boards.sim.power import Battery, Meter
from plugpay.firmware.session import CHANNEL, Session, Terms
from plugpay.protocol import link
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256
from test_wallet_mp import _mint, _reopen, _wallet

SESSION = sha256(b"device session")[:16]
TIMEOUTS = link.Timeouts(response=2000, retransmit=500, sequence=20000, payment=3000, pause=60000)
N = 4
PARAMS = M.ChargeParameters(2000, 1790000000, 1790007200, 11000, 300, N, 5)


def _run(scenario):
    """Vehicle and charger of ``scenario`` (g2v: the charger sells; v2g: the vehicle sells);
    yields the pump's steps, then the two sessions and the ledger."""
    clock = ManualClock()
    vehicle_sells = scenario == "v2g"
    charger = SimBoard("charger", ScaledView(clock, 1000), 11000, meter=Meter(sha256(b"device meter")))
    vehicle = SimBoard("vehicle", ScaledView(clock, 1000), 11000,
                       battery=Battery(80000, 60000 if vehicle_sells else 20000, 50000, 50000))
    if vehicle_sells:
        charger.connect(vehicle)
    else:
        vehicle.connect(charger)
    wallets = {"vehicle": _wallet(scenario + "-v", 6), "charger": _wallet(scenario + "-c", 6)}
    _mint(wallets["charger" if vehicle_sells else "vehicle"], [800], 7)
    sessions = {}
    for name, board, initiator in (("vehicle", vehicle, True), ("charger", charger, False)):
        terms = Terms(SESSION, PARAMS, CHANNEL, (name == "vehicle") == vehicle_sells, initiator, window=10,
                      htlc_timeout=10 ** 6)
        sessions[name] = Session(wallets[name], board, terms, 0, TIMEOUTS, timestamp=1790000000)
    ledger = D.ChannelLedger()
    for step in D.Pump(sessions["vehicle"], sessions["charger"], ledger, clock).run(10 ** 7):
        yield step
    yield sessions, ledger


def _check(scenario, sessions, ledger):
    v, c = sessions["vehicle"], sessions["charger"]
    producer, consumer = (v, c) if scenario == "v2g" else (c, v)
    budget = consumer.terms.budget()
    assert v.stop_code == c.stop_code == M.OK, (v.log, c.log)
    assert v.finished and c.finished
    assert producer.payout == budget and consumer.payout == 0
    assert ledger.applied == [L.TAG_CHANNEL_OPEN, L.TAG_CHANNEL_CLOSE]
    assert 2000 <= c.board.meter.session_wh <= 2001 and c.board.meter.index == N  # the charger's meter signed N
    assert consumer.max_exposure <= budget // N and producer.max_exposure <= 0
    assert consumer.installments_paid == N and producer.channel.latest().seq == N - 1
    assert _reopen(scenario + ("-v" if producer is v else "-c")).status()["balance"] == budget


def test_a_g2v_channel_session_between_two_simulated_boards():
    for step in _run("g2v"):
        if isinstance(step, str):
            yield step
        else:
            _check("g2v", *step)


def test_a_v2g_channel_session_the_charger_meters_what_it_buys():
    for step in _run("v2g"):
        if isinstance(step, str):
            yield step
        else:
            _check("v2g", *step)
