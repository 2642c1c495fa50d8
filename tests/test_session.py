"""Whole charging sessions: real wallets, real ledger state machine, simulated boards and clock.

Every scenario (G2V, V2G, V2V), both payment modes and every misbehaviour must keep the
risk bounds of Unterweger et al.: the consumer never has more than b/N outstanding, the
producer never delivers energy it holds no payment for; and the money on the ledger ends
where the last co-signed state (or the revealed preimages) say.
"""
import sqlite3

import pytest

from plugpay.boards.common.hardware import HardwareBoard
from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ManualClock, ScaledView
from plugpay.boards.sim.power import Battery, Meter
from plugpay.firmware.session import CHANNEL, HTLC, Misbehaviour, Session, Terms
from plugpay.firmware.session_channel import ACCEPT_WRITE_MS
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256
from sessionsim import InProcessLedger, Pair
import ledger_helpers as H
from wallet_helpers import Party, mint, ra_keys

SESSION = sha256(b"test session")[:16]
POWER_W = 11000
SCALE = 1000  # 200 Wh at 11 kW take 65 s of energy flow and 65 ms of link time
TIMEOUTS = link.Timeouts(response=2000, retransmit=500, sequence=20000, payment=3000, pause=60000)


def parameters(n=10, energy_wh=2000, unit_price=300, tolerance_wh=5):
    return M.ChargeParameters(energy_wh, 1790000000, 1790007200, POWER_W, unit_price, n, tolerance_wh)


class World:
    """A vehicle and a charger (or two vehicles) and the ledger, for one scenario; without
    ``cable`` each board stands alone, as in two processes (``plugpay session``)."""

    def __init__(self, tmp_path, authority, scenario="g2v", mode=CHANNEL, n=10, energy_wh=2000, cheat=None,
                 meter_error_ppm=0, latency=1, scale=SCALE, cable=True):
        self.clock = ManualClock(0)
        conn = sqlite3.connect(str(tmp_path / "ledger.db"))
        self.ledger = InProcessLedger(conn, ra_keys(authority), H.FAUCET_PUBKEY)
        self.params = parameters(n, energy_wh)
        initiator_produces = scenario == "v2g"
        # The initiator is a vehicle; the responder a charger (g2v, v2g) or another vehicle (v2v).
        sides = {}
        for name, initiator, producer in (("a", True, initiator_produces), ("b", False, not initiator_produces)):
            party = Party(tmp_path / name, authority, keys=24)
            battery = Battery(80000, 60000 if producer else 20000, 50000, 50000) if (name == "a" or scenario == "v2v") \
                else None
            meter = None if initiator else Meter(sha256(b"meter " + name.encode()), error_ppm=meter_error_ppm)
            board = SimBoard(name, ScaledView(self.clock, scale), POWER_W, battery=battery, meter=meter)
            sides[name] = (party, board, initiator, producer)
        self.consumer_name = "b" if initiator_produces else "a"
        self.producer_name = "a" if initiator_produces else "b"
        if cable:  # the consumer measures what flows in
            sides[self.consumer_name][1].connect(sides[self.producer_name][1])
        b = self.params.energy_wh * self.params.unit_price // 1000
        mint(self.ledger.ledger, sides[self.consumer_name][0], [b + 500], height=1)
        self.sessions = {}
        for name, (party, board, initiator, producer) in sides.items():
            terms = Terms(SESSION, self.params, mode, producer, initiator, window=10, htlc_timeout=10 ** 6)
            cheat_here = cheat if cheat is not None and (cheat[0] == "producer") == producer else None
            self.sessions[name] = Session(party.wallet, board, terms, 0, TIMEOUTS,
                                          cheat_here[1] if cheat_here else None, timestamp=1790000000)
        self.parties = dict((name, s[0]) for name, s in sides.items())
        self.pair = Pair(self.sessions["a"], self.sessions["b"], self.ledger, self.clock, latency)

    @property
    def consumer(self):
        return self.sessions[self.consumer_name]

    @property
    def producer(self):
        return self.sessions[self.producer_name]

    def run(self):
        return self.pair.run(limit_ms=10 ** 7)

    def per_installment(self):
        return self.consumer.terms.budget() // self.params.installments

    def onchain(self):
        return [s for s in self.ledger.submitted if s[2]]

    def check_bounds(self):
        assert self.consumer.max_exposure <= self.per_installment(), self.consumer.exposure_log
        assert self.producer.max_exposure <= 0, self.producer.exposure_log


@pytest.mark.parametrize("scenario", ["g2v", "v2g", "v2v"])
def test_a_whole_channel_session_is_two_ledger_requests_and_pays_everything(tmp_path, authority, scenario):
    w = World(tmp_path, authority, scenario, CHANNEL, n=10)
    w.run()
    c, p = w.consumer, w.producer
    assert c.stop_code == M.OK and p.stop_code == M.OK
    assert c.finished and p.finished
    b = c.terms.budget()
    assert p.payout == b and c.payout == 0
    assert [op for _, op, _, _ in w.onchain()] == [L.TAG_CHANNEL_OPEN, L.TAG_CHANNEL_CLOSE]
    # Energy stops on the millisecond after the meter reached the due Wh: at most 1 Wh more.
    assert w.params.energy_wh <= p.board.measured_wh <= w.params.energy_wh + 1
    assert c.board.measured_wh == p.board.measured_wh
    w.check_bounds()
    assert c.max_exposure == w.per_installment()  # reached: one installment ahead
    assert w.ledger.ledger.supply()["channels"] == 0


def test_the_consumer_writes_an_acceptance_with_its_next_proposal_or_soon_after(tmp_path, authority):
    (tmp_path / "slow").mkdir()
    (tmp_path / "fast").mkdir()
    w = World(tmp_path / "slow", authority, n=10)  # a chunk of energy takes 65 ms
    c, party = w.consumer, w.parties[w.consumer_name]

    def stored():
        ch = Wallet.open(Storage(party.root), party.device_key).channel(c.channel.channel_id)
        return ch.latest().seq, None if ch.pending() is None else ch.pending().seq

    w.pair.run(until=lambda: c.last_installment is not None and c.last_installment[0] == 1)
    assert c.channel.unsaved and stored() == (0, 1)
    accepted = c.last_installment[2]
    assert w.pair.run(until=lambda: not c.channel.unsaved) == accepted + ACCEPT_WRITE_MS
    assert stored() == (1, None)
    # Energy as fast as the link: reading k+1 comes with the acceptance of k, one write for both.
    w = World(tmp_path / "fast", authority, n=10, scale=10 ** 9)
    c = w.consumer
    w.pair.run(until=lambda: c.last_installment is not None and c.last_installment[0] == 1)
    before = c.wallet.storage.writes
    w.pair.run(until=lambda: c.last_installment[0] == 9)
    assert c.wallet.storage.writes - before == 8
    w.run()
    assert c.stop_code == M.OK and w.producer.payout == c.terms.budget()


@pytest.mark.parametrize("scenario", ["g2v", "v2g", "v2v"])
def test_a_consumer_on_a_board_of_its_own_measures_what_it_paid_for(tmp_path, authority, scenario):
    """Each side in a process of its own (``plugpay session``): no shared cable, each board
    trades with the grid in the peer's place. The consumer's board takes each chunk it paid
    for, to the tolerance, however long the session waits between chunks (a vehicle once
    measured 4799 Wh of a 2000 Wh session: its end flowed from the deposit to the end)."""
    w = World(tmp_path, authority, scenario, CHANNEL, n=10, cable=False)
    w.run()
    c, p = w.consumer, w.producer
    assert c.stop_code == p.stop_code == M.OK and p.payout == c.terms.budget()
    energy, tolerance = w.params.energy_wh, w.params.tolerance_wh
    assert energy <= w.sessions["b"].board.measured_wh <= energy + 1  # the responder's meter, as on one cable
    assert energy - tolerance <= c.board.measured_wh <= energy + tolerance
    assert energy - tolerance <= p.board.measured_wh <= energy + tolerance
    assert c.max_exposure <= w.per_installment()
    assert p.max_exposure <= -(-tolerance * w.params.unit_price // 1000)  # a producer that does not meter


@pytest.mark.parametrize("scenario", ["g2v", "v2g"])
@pytest.mark.parametrize("who", ["consumer", "producer"])
def test_either_side_pauses_and_resumes_and_no_energy_flows_meanwhile(tmp_path, authority, scenario, who):
    w = World(tmp_path, authority, scenario, CHANNEL, n=10)
    c, p = w.consumer, w.producer
    side = c if who == "consumer" else p
    now = w.pair.run(until=lambda: c.machine.readings >= 3)
    side.pause(now)
    w.pair.run(limit_ms=now + 50)  # the peer hears of it
    assert c.machine.paused and p.machine.paused and not p.board.contactor.closed
    energy, paid = p.board.measured_wh, c.paid_signed
    now = w.pair.run(limit_ms=now + 5000)  # longer than the payment timeout: nothing is due while paused
    assert (p.board.measured_wh, c.paid_signed, c.stop_code, p.stop_code) == (energy, paid, None, None)
    side.resume(now)
    w.run()
    assert c.stop_code == p.stop_code == M.OK and p.payout == c.terms.budget()
    w.check_bounds()


def test_only_the_side_that_paused_lifts_its_pause(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10)
    c, p = w.consumer, w.producer
    now = w.pair.run(until=lambda: c.machine.readings >= 3)
    p.pause(now)  # the charger's operator
    now = w.pair.run(limit_ms=now + 50)
    c.resume(now)  # the vehicle asks to go on: the charger holds
    now = w.pair.run(limit_ms=now + 2000)
    assert c.machine.paused and p.machine.paused and not p.board.contactor.closed and p.machine.owes_resume
    p.resume(now)  # the operator lets it go on: the vehicle's request is answered
    w.run()
    assert c.stop_code == p.stop_code == M.OK and p.payout == c.terms.budget()


def test_a_resume_from_a_stale_balance_stops_the_session(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10)
    c, p = w.consumer, w.producer
    now = w.pair.run(until=lambda: c.machine.readings >= 4)
    c.pause(now)
    w.pair.run(limit_ms=now + 50)
    c.machine.resume(L.opening_state(c.channel.channel_id, c.terms.paid_after(0)).encode(), now + 50)
    w.run()
    assert p.stop_code == M.FAILED_UnpaidOverLimit
    assert p.finished and p.payout == c.terms.paid_after(c.channel.latest().seq)  # the latest co-signed state
    w.check_bounds()


def test_an_htlc_session_is_n_creates_and_n_claims(tmp_path, authority):
    n = 5
    w = World(tmp_path, authority, "g2v", HTLC, n=n)
    w.run()
    c, p = w.consumer, w.producer
    assert c.stop_code == M.OK and p.stop_code == M.OK and p.finished
    ops = [op for _, op, _, _ in w.onchain()]
    assert ops.count(L.TAG_HTLC_CREATE) == n and ops.count(L.TAG_HTLC_CLAIM) == n  # creates and claims
    assert p.wallet.status()["balance"] == c.terms.budget()
    w.check_bounds()


def test_a_producer_that_stops_delivering_costs_the_consumer_at_most_one_installment(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10, cheat=("producer", Misbehaviour(stop_delivering_after=4)))
    w.run()
    c, p = w.consumer, w.producer
    assert c.stop_code == M.FAILED_Timeout
    assert c.finished and p.finished
    assert p.payout == c.terms.paid_after(4)  # paid for reading 5 in advance, never delivered
    w.check_bounds()
    assert c.max_exposure == w.per_installment()


def test_a_consumer_that_stops_paying_gets_no_more_energy(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10, cheat=("consumer", Misbehaviour(stop_paying_at=6)))
    w.run()
    c, p = w.consumer, w.producer
    assert p.stop_code == M.FAILED_PaymentOverdue
    assert w.params.due_wh(6) <= p.board.measured_wh <= w.params.due_wh(6) + 1
    assert p.payout == c.terms.paid_after(5) and c.finished and p.finished
    w.check_bounds()


def test_a_stale_close_is_overridden_by_the_latest_state(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10, cheat=("consumer", Misbehaviour(stale_close=True)))
    w.run()
    c, p = w.consumer, w.producer
    assert p.payout == c.terms.budget()
    tags = [op for _, op, _, _ in w.onchain()]
    # The open, the stale dispute, the producer's answer with the latest, the settle.
    assert tags == [L.TAG_CHANNEL_OPEN, L.TAG_CHANNEL_DISPUTE, L.TAG_CHANNEL_DISPUTE,
                    L.TAG_CHANNEL_SETTLE]
    w.check_bounds()


def test_v2g_the_charger_meters_and_the_producing_vehicle_counter_signs(tmp_path, authority):
    w = World(tmp_path, authority, "v2g", CHANNEL, n=10)
    c, p = w.consumer, w.producer  # the charger buys, the vehicle sells
    assert c.board.meter is not None and p.board.meter is None
    w.run()
    assert p.machine.peer_meter_key == c.board.meter.pubkey and c.machine.peer_meter_key == b""
    assert c.stop_code == p.stop_code == M.OK and p.payout == c.terms.budget()
    assert c.board.meter.index == w.params.installments  # every reading came from the charger's meter
    assert c.receipt == p.receipt  # both hold the last receipt: the charger got back what the vehicle signed
    w.check_bounds()


def test_v2g_the_vehicle_refuses_a_charger_meter_that_under_counts(tmp_path, authority):
    w = World(tmp_path, authority, "v2g", CHANNEL, n=10, meter_error_ppm=-20000)  # 2 % low: 4 Wh per chunk
    w.run()
    c, p = w.consumer, w.producer
    # The vehicle stops the flow at 405 Wh (chunk 2 and the tolerance) by its own measurement; the
    # meter shows 396 Wh, within the tolerance of 400, and reads: the vehicle refuses to sign it.
    assert p.stop_code == M.FAILED_ReceiptMismatch
    assert c.paid_signed == p.paid_signed == c.terms.paid_after(1)
    # The vehicle gives up to the tolerance it agreed to beyond what the meter credits.
    tolerance = -(-w.params.tolerance_wh * w.params.unit_price // 1000)
    assert p.max_exposure <= tolerance + (p.board.measured_wh - c.board.measured_wh) * w.params.unit_price // 1000
    assert p.board.measured_wh <= w.params.due_wh(2) + 2 * w.params.tolerance_wh
    assert c.max_exposure <= w.per_installment()


def test_v2g_a_charger_that_draws_more_than_was_paid_for_gets_no_more_than_the_tolerance(tmp_path, authority):
    w = World(tmp_path, authority, "v2g", CHANNEL, n=10)
    c, p = w.consumer, w.producer
    honest = c.energy.start_chunk

    def greedy(now):  # the charger's meter would take the next 100 Wh as well
        honest(now)
        c.energy.chunk += 100
        c.board.start_delivery(c.energy.chunk)

    c.energy.start_chunk = greedy
    w.run()
    assert c.stop_code == p.stop_code == M.FAILED_Timeout  # the energy it wanted never came
    assert p.board.measured_wh == w.params.due_wh(1) + w.params.tolerance_wh  # the vehicle's limit held
    assert p.max_exposure <= -(-w.params.tolerance_wh * w.params.unit_price // 1000)
    assert c.max_exposure <= w.per_installment()


class LineOnCable:
    """A hardware board's serial meter reading what really went through a simulated cable
    end: the register counts from 100 kWh."""

    def __init__(self, end):
        self.end = end

    def read_wh(self):
        self.end.update()
        return 100000 + self.end.flowed_mj // 3600000


def test_v2g_a_vehicle_on_hardware_keeps_its_own_limit_against_a_greedy_charger(tmp_path, authority):
    w = World(tmp_path, authority, "v2g", CHANNEL, n=10)
    c = w.consumer  # the charger
    clock = ScaledView(w.clock, SCALE)
    end = SimBoard("vehicle end", clock, POWER_W)  # what the vehicle's relay switches
    c.board.connect(end)
    relay = lambda on: (end.start_delivery if on else end.stop_delivery)()  # noqa: E731
    board = HardwareBoard("vehicle", relay, LineOnCable(end), POWER_W, poll_ms=1000, clock=clock)
    terms = Terms(SESSION, w.params, CHANNEL, True, True, window=10, htlc_timeout=10 ** 6)
    p = w.sessions["a"] = w.pair.sides["a"] = Session(w.parties["a"].wallet, board, terms, 0, TIMEOUTS,
                                                      timestamp=1790000000)
    honest = c.energy.start_chunk

    def greedy(now):  # the charger's meter would take another 1000 Wh
        honest(now)
        if c.energy.chunk is not None:
            c.energy.chunk += 1000
            c.board.start_delivery(c.energy.chunk)

    c.energy.start_chunk = greedy
    w.run()
    assert c.stop_code == p.stop_code == M.FAILED_Timeout
    # The vehicle reads its meter every second of board time: it opens its relay at the
    # chunk's energy and the tolerance, or that second's energy (3 Wh at 11 kW) later.
    limit = w.params.due_wh(1) + w.params.tolerance_wh
    assert limit <= board.measured_wh <= limit + -(-POWER_W // 3600) and not end.contactor.closed
    assert p.max_exposure <= -(-(board.measured_wh - w.params.due_wh(1)) * w.params.unit_price // 1000)


def test_a_flow_slower_than_the_agreed_power_is_waited_for(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10, scale=1)  # real time: a 200 Wh chunk is 65 s at 11 kW
    c, p = w.consumer, w.producer
    c.board.battery = Battery(80000, 20000, 5000, 5000)  # the vehicle's battery takes 5 kW: 144 s a chunk
    w.run()
    assert c.stop_code == p.stop_code == M.OK and p.payout == c.terms.budget()
    assert w.clock.now_ms() > 10 * 144000 > 10 * TIMEOUTS.sequence


def test_a_pause_on_its_way_is_not_taken_for_the_end_of_the_flow(tmp_path, authority):
    w = World(tmp_path, authority, "v2g", CHANNEL, n=10, latency=40)
    c, p = w.consumer, w.producer  # the charger meters; the vehicle will pause just short of the end
    now = w.pair.run(until=lambda: c.energy.chunk is not None and c.machine.readings == w.params.installments - 1)
    while True:
        c.board.update()
        if c.board.measured_wh >= w.params.energy_wh - w.params.tolerance_wh:
            break
        now += 1
        w.pair.run(limit_ms=now)
        w.clock.advance(max(0, now - w.clock.now_ms()))
    p.pause(now)  # the vehicle's contactor opens at once; the charger hears of it 40 ms later
    now = w.pair.run(limit_ms=now + 500)
    assert c.machine.paused and c.machine.readings == w.params.installments - 1  # no short reading meanwhile
    p.resume(now)
    w.run()
    assert c.stop_code == p.stop_code == M.OK and c.board.measured_wh == w.params.energy_wh
    w.check_bounds()


def test_an_over_counting_meter_is_caught_by_the_vehicle(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10, meter_error_ppm=20000)  # 2 %: 4 Wh per 200 Wh chunk
    w.run()
    c = w.consumer
    assert c.stop_code == M.FAILED_ReceiptMismatch
    assert c.paid_signed == c.terms.paid_after(1)  # reading 2 (408 Wh for 400 measured) is never paid for
    # The consumer pays for what the meter shows within the tolerance it agreed to.
    tolerance = -(-w.params.tolerance_wh * w.params.unit_price // 1000)
    assert c.max_exposure <= w.per_installment() + tolerance
    assert w.producer.max_exposure <= 0

