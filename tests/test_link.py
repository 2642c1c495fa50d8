"""The link state machines: whole sessions for every role assignment and payment mode,
and every refusal, fault, timeout and pause path, on a simulated clock (no sleeping)."""
import copy
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linksim as L
from plugpay.protocol import codec, link, schema, signing
from plugpay.protocol import link_events as E
from plugpay.protocol import link_messages as M
from plugpay.protocol.structures import MeterReading, MeterReceipt

sys.path.insert(0, str(Path(__file__).parent / "device"))
import linkdrive as D  # noqa: E402  (portable stand-ins shared with the MicroPython run)

CH, HTLC = M.MODE_STATE_CHANNEL, M.MODE_HTLC
MODES = [CH, HTLC]
TIMEOUTS = link.Timeouts(response=2000, retransmit=500, sequence=10000, payment=3000, pause=20000)
SID = D.SESSION
OTHER_SID = bytes(16)


# ---- helpers -------------------------------------------------------------------------------


def sim_session(scenario="g2v", mode=CH, n=4, chunk_ms=1000, latency=5):
    initiator, responder = D.session(scenario, mode, n=n, chunk_ms=chunk_ms, timeouts=TIMEOUTS)
    return L.SimLink(initiator, responder, latency=latency)


def roles(sim):
    """(producer app, consumer app, producer side name, consumer side name)."""
    if sim.apps["i"].machine.producer:
        return sim.apps["i"], sim.apps["r"], "i", "r"
    return sim.apps["r"], sim.apps["i"], "r", "i"


def metering(sim):
    """(the responder's app, which meters, the initiator's app, which counter-signs)."""
    return sim.apps["r"], sim.apps["i"]


def names(events):
    return [type(e).__name__ for e in events]


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def timed(sim, side, cls):
    return [(t, e) for t, e in sim.events[side] if isinstance(e, cls)]


def snapshot(machine):
    """Everything a machine holds except its outbox and clock."""
    return {k: repr(v) for k, v in vars(machine).items() if k not in ("_out", "_events", "_now")}


def at_charging(scenario="g2v", mode=CH, n=4):
    """(consumer app, producer app) with power delivery started; nothing delivered yet."""
    initiator, responder = D.session(scenario, mode, n=n, timeouts=TIMEOUTS, chunk_ms=1 << 30)
    D.pump(initiator, responder)
    assert initiator.machine.state == responder.machine.state == "charging"
    if initiator.machine.producer:
        return responder, initiator
    return initiator, responder


def next_frame(sender, payload, session_id=SID):
    """The bytes of ``sender``'s next message, as a forger would write them."""
    return M.encode_message(session_id, sender.tx_seq + 1, payload)


def notices(data_list):
    out = []
    for data in data_list:
        envelope, payload = M.decode_message(data)
        assert envelope.kind == M.TAG_NOTICE and envelope.seq == 0
        out.append((envelope.session_id, payload.code, payload.refused_seq))
    return out


def refused_without_change(machine, data, code, now=0):
    """Feed ``data``: it must be refused with ``code`` and change nothing."""
    before = snapshot(machine)
    events = machine.receive(data, now)
    assert names(events) == ["MessageRefused"] and events[0].code == code, events
    assert [n[1] for n in notices(machine.messages_to_send())] == [code]
    assert snapshot(machine) == before
    return events[0]


def check_risk_invariants(producer, consumer):
    """Unterweger et al.'s bound: the producer never delivers an unpaid e/N, the consumer
    is never more than one installment ahead; the two views differ by one message at most."""
    p, c = producer.machine, consumer.machine
    meter, signer = (p, c) if p.meters else (c, p)
    assert p.readings <= p.installments_paid
    assert c.installments_paid <= c.readings + 1
    assert 0 <= p.installments_paid - c.installments_paid <= 1
    assert 0 <= meter.readings - signer.readings <= 1
    indexes = [e.index for e in of(producer.events, E.InstallmentReceived)]
    assert indexes == sorted(set(indexes)), "an installment was acted on twice"
    initiator = consumer if signer is c else producer
    readings = [e.reading.index for e in of(initiator.events, E.MeterReadingReceived)]
    assert readings == list(range(1, len(readings) + 1))


# ---- whole sessions ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=["channel", "htlc"])
@pytest.mark.parametrize("scenario", D.SCENARIOS)
def test_whole_session(scenario, mode):
    n = 4
    sim = sim_session(scenario, mode, n=n)
    end = sim.run()
    producer, consumer, p_side, c_side = roles(sim)
    assert 4000 <= end < 4200  # N deliveries of 1 s, then a few hops
    for app in (producer, consumer):
        m = app.machine
        assert (m.state, m.stop_code, m.installments_paid, m.readings) == ("stopped", M.OK, n, n)
        assert m.payment_mode == mode
    assert producer.balance == consumer.balance != b""
    meter, signer = metering(sim)
    reading = {id(meter): "ReceiptReceived", id(signer): "MeterReadingReceived"}  # what each side gets
    assert names(producer.events) == (
        ["TermsAgreed", "InstallmentReceived", "PowerDeliveryStarted"]
        + [reading[id(producer)], "InstallmentReceived"] * (n - 1)
        + [reading[id(producer)], "PowerDeliveryStopped", "SessionStopped"]
    )
    assert names(consumer.events) == (
        ["TermsAgreed", "InstallmentAccepted", "PowerDeliveryStarted"]
        + [reading[id(consumer)], "InstallmentAccepted"] * (n - 1)
        + [reading[id(consumer)], "PowerDeliveryStopped", "SessionStopped"]
    )
    assert [e.due_wh for e in of(signer.events, E.MeterReadingReceived)] == [500, 1000, 1500, 2000]
    assert [e.index for e in of(producer.events, E.InstallmentReceived)] == [0, 1, 2, 3]
    assert [e.by_peer for e in of(sim.apps["i"].events, E.SessionStopped)] == [False]
    assert [e.by_peer for e in of(sim.apps["r"].events, E.SessionStopped)] == [True]
    assert len(sim.wire) == 6 + 4 + (4 * n - 2) + 4  # setup, deposit, loop, end: nothing resent
    receipts = of(meter.events, E.ReceiptReceived)
    signer_pub = signer.machine.config.session_key
    assert len(receipts) == n and all(signing.verify(signer_pub, r.receipt, r.receipt.ev_sig) for r in receipts)


def test_message_sequence_is_the_chart():
    sim = sim_session("g2v", CH, n=2)
    sim.run()
    got = [(frm, M.kind_name(kind)) for _, frm, kind, _ in sim.wire]
    assert got == [
        ("i", "session_setup_req"), ("r", "session_setup_res"),
        ("i", "service_payment_selection_req"), ("r", "service_payment_selection_res"),
        ("i", "charge_parameter_discovery_req"), ("r", "charge_parameter_discovery_res"),
        ("i", "installment_req"), ("r", "installment_res"),  # the deposit
        ("i", "power_delivery_req"), ("r", "power_delivery_res"),
        ("r", "charging_status"), ("i", "metering_receipt"), ("i", "installment_req"), ("r", "installment_res"),
        ("r", "charging_status"), ("i", "metering_receipt"),  # the last e/N is prepaid
        ("i", "power_delivery_req"), ("r", "power_delivery_res"),
        ("i", "session_stop_req"), ("r", "session_stop_res"),
    ]
    for side in "ir":
        seqs = [M.decode_message(d)[0].seq for d in sim.sent(side)]
        assert seqs == list(range(1, len(seqs) + 1))


def test_one_installment_is_a_deposit_and_a_prepaid_delivery():
    sim = sim_session("v2g", HTLC, n=1)
    sim.run()
    producer, consumer, _, _ = roles(sim)
    assert [e.index for e in of(producer.events, E.InstallmentReceived)] == [0]
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK


# ---- refused input: never acted on, nothing changes ---------------------------------------


def _valid_next_reading(consumer, producer):
    reading = D.meter_reading(producer, 1)
    return reading, next_frame(producer.machine, M.ChargingStatus(reading))


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"not cbor at all", codec.dumps([7, 1]), codec.dumps([7, 1, SID, 1, 72]),
     bytes.fromhex("fb3ff8000000000000"), b"\x9f\xff"],
    ids=["empty", "break", "text", "short-envelope", "no-payload", "float", "indefinite"],
)
def test_malformed_bytes_are_refused(data):
    consumer, producer = at_charging()
    refused_without_change(consumer.machine, data, M.FAILED)


def test_damaged_messages_are_refused():
    consumer, producer = at_charging()
    _, data = _valid_next_reading(consumer, producer)
    for bad in (data[:-1], data + b"\x00", data[:40], bytes(len(data)), data + bytes(M.MAX_LINK_BYTES)):
        refused_without_change(consumer.machine, bad, M.FAILED)
    assert names(consumer.machine.receive(bytearray(data), 0)) == ["MeterReadingReceived"]


@pytest.mark.parametrize("value", [None, "text", 7, [b"x"], 1.5])
def test_non_bytes_input_is_refused(value):
    consumer, _ = at_charging()
    refused_without_change(consumer.machine, value, M.FAILED)


def test_unknown_session_is_refused_and_told_its_own_id():
    consumer, producer = at_charging()
    reading = D.meter_reading(producer, 1)
    data = next_frame(producer.machine, M.ChargingStatus(reading), session_id=OTHER_SID)
    before = snapshot(consumer.machine)
    events = consumer.machine.receive(data, 0)
    assert names(events) == ["MessageRefused"] and events[0].code == M.FAILED_UnknownSession
    assert notices(consumer.machine.messages_to_send()) == [(OTHER_SID, M.FAILED_UnknownSession, producer.machine.tx_seq + 1)]
    assert snapshot(consumer.machine) == before
    # A notice from another session is not even answered.
    stray = M.encode_message(OTHER_SID, 0, M.Notice(M.FAILED, 1))
    assert consumer.machine.receive(stray, 0) == [] and consumer.machine.messages_to_send() == []


def test_duplicate_request_is_answered_again_and_not_acted_on_twice():
    consumer, producer = at_charging()
    c = consumer.machine
    reading, data = _valid_next_reading(consumer, producer)
    assert names(c.receive(data, 0)) == ["MeterReadingReceived"]
    assert c.receive(data, 0) == [] and c.messages_to_send() == []  # still deciding: ignored
    c.send_receipt(signing.sign(consumer.key, MeterReceipt(reading, b"")), 0)
    receipt = c.messages_to_send()
    c.send_installment(b"proof 1", 0)
    installment = c.messages_to_send()
    before = snapshot(c)
    assert c.receive(data, 0) == []
    assert c.messages_to_send() == receipt + installment  # the answer, then what followed it
    snap = snapshot(c)
    assert {k: v for k, v in snap.items() if k != "_unacked"} == {k: v for k, v in before.items() if k != "_unacked"}


def test_duplicate_response_is_ignored():
    consumer, producer = at_charging()
    p = producer.machine
    p.send_reading(D.meter_reading(producer, 1), 0)
    consumer.handle(consumer.machine.receive(p.messages_to_send()[0], 0), 0)
    receipt, installment = consumer.machine.messages_to_send()
    assert names(p.receive(receipt, 0)) == ["ReceiptReceived"]
    before = snapshot(p)
    assert p.receive(receipt, 0) == [] and p.messages_to_send() == [] and snapshot(p) == before
    assert names(p.receive(installment, 0)) == ["InstallmentReceived"]


def test_forged_message_with_a_used_sequence_number_is_refused():
    consumer, producer = at_charging()
    c = consumer.machine
    _, data = _valid_next_reading(consumer, producer)
    c.receive(data, 0)
    forged = M.encode_message(SID, producer.machine.tx_seq + 1, M.PauseReq())  # the same seq, other content
    event = refused_without_change(c, forged, M.FAILED_SequenceError)
    assert "was used" in event.reason


def test_replay_older_than_the_duplicate_window_is_refused():
    sim = sim_session("g2v", CH, n=6)
    sim.run()
    producer, consumer, p_side, c_side = roles(sim)
    first_status = sim.sent(p_side, M.TAG_CHARGING_STATUS)[0]
    refused_without_change(consumer.machine, first_status, M.FAILED_SequenceError)
    # In a running session: reading 1 again once more messages came than are remembered.
    consumer, producer = at_charging(n=6)
    c, p = consumer.machine, producer.machine
    first = None
    for k in range(1, 6):  # each round: a reading and an installment answer reach the consumer
        p.send_reading(D.meter_reading(producer, k), 0)
        (status,) = p.messages_to_send()
        first = first or status
        consumer.handle(c.receive(status, 0), 0)
        for data in c.messages_to_send():
            producer.handle(p.receive(data, 0), 0)
        for data in p.messages_to_send():
            consumer.handle(c.receive(data, 0), 0)
    assert c.readings == 5 and c.rx_seq - M.decode_message(first)[0].seq >= link.RECEIVED_KEPT
    refused_without_change(c, first, M.FAILED_SequenceError)


def test_a_gap_is_refused_and_the_missing_message_then_heals_it():
    consumer, producer = at_charging()
    p, c = producer.machine, consumer.machine
    p.send_reading(D.meter_reading(producer, 1), 0)
    status = p.messages_to_send()[0]
    p.pause(0)
    pause = p.messages_to_send()[0]
    event = refused_without_change(c, pause, M.FAILED_SequenceError)  # seq n+2 before n+1
    assert "expected sequence number" in event.reason
    assert names(c.receive(status, 0)) == ["MeterReadingReceived"]
    assert names(c.receive(pause, 0)) == ["Paused"]


@pytest.mark.parametrize("case", ["status-before-deposit", "wrong-installment-index", "unasked-response",
                                  "setup-to-initiator", "notice-with-a-seq", "second-resume"])
def test_messages_out_of_order_are_refused(case):
    initiator, responder = D.session("g2v", CH, timeouts=TIMEOUTS)
    vehicle, charger = initiator.machine, responder.machine  # vehicle consumes
    setup = vehicle.messages_to_send()
    if case == "notice-with-a-seq":
        data = next_frame(charger, M.Notice(M.FAILED, 1))
        assert vehicle.receive(data, 0) == [] and vehicle.messages_to_send() == []
        return
    if case == "setup-to-initiator":
        refused_without_change(vehicle, next_frame(charger, M.SessionSetupReq(charger.config.session_key, b"", b"")), M.FAILED_SequenceError)
        return
    for data in setup:  # setup only: up to TermsAgreed
        charger.receive(data, 0)
    for _ in range(3):
        for data in charger.messages_to_send():
            vehicle.receive(data, 0)
        for data in vehicle.messages_to_send():
            charger.receive(data, 0)
    assert vehicle.state == charger.state == "deposit"
    if case == "status-before-deposit":
        reading = D.Meter(SID, 350).read(500, 1)
        refused_without_change(vehicle, next_frame(charger, M.ChargingStatus(reading)), M.FAILED_SequenceError)
    elif case == "wrong-installment-index":
        refused_without_change(charger, next_frame(vehicle, M.InstallmentReq(1, b"x")), M.FAILED_SequenceError)
    elif case == "unasked-response":
        refused_without_change(vehicle, next_frame(charger, M.PauseRes(M.OK)), M.FAILED_SequenceError)
    else:
        charger.receive(next_frame(vehicle, M.ResumeReq(b"")), 0)
        fake = M.encode_message(SID, vehicle.tx_seq + 2, M.ResumeReq(b""))
        refused_without_change(charger, fake, M.FAILED_SequenceError)


def test_peer_notice_is_reported_and_changes_nothing():
    consumer, producer = at_charging()
    c = consumer.machine
    before = snapshot(c)
    events = c.receive(M.encode_message(SID, 0, M.Notice(M.FAILED_SequenceError, 9)), 0)
    assert names(events) == ["PeerRefused"] and (events[0].code, events[0].seq) == (M.FAILED_SequenceError, 9)
    assert c.messages_to_send() == [] and snapshot(c) == before


# ---- network faults heal ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [M.TAG_SESSION_SETUP_REQ, M.TAG_SESSION_SETUP_RES, M.TAG_INSTALLMENT_REQ,
                                  M.TAG_INSTALLMENT_RES, M.TAG_CHARGING_STATUS, M.TAG_METERING_RECEIPT,
                                  M.TAG_POWER_DELIVERY_RES, M.TAG_SESSION_STOP_RES], ids=M.kind_name)
@pytest.mark.parametrize("side", ["i", "r"])
def test_a_lost_message_is_sent_again(side, kind):
    sim = sim_session("g2v", CH)
    sim.rules.append(L.drop(side, kind, nth=1))
    sim.run()
    producer, consumer, _, _ = roles(sim)
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK
    assert producer.machine.installments_paid == consumer.machine.installments_paid == 4
    check_risk_invariants(producer, consumer)


def test_every_message_duplicated():
    sim = sim_session("v2v", HTLC)
    sim.rules += [L.duplicate("i", nth=None, gap=3), L.duplicate("r", nth=None, gap=3)]
    sim.run()
    producer, consumer, _, _ = roles(sim)
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK
    assert names(consumer.events).count("MeterReadingReceived") == 4
    assert names(producer.events).count("InstallmentReceived") == 4
    assert not of(producer.events + consumer.events, E.MessageRefused)  # duplicates are not refusals


def test_reordered_receipt_and_installment():
    sim = sim_session("g2v", CH)
    sim.rules.append(L.delay("i", M.TAG_METERING_RECEIPT, nth=2, ms=50))  # the installment overtakes it
    sim.run()
    producer, consumer, p_side, _ = roles(sim)
    refusals = [e for t, e in sim.events[p_side] if isinstance(e, E.MessageRefused)]
    assert [e.code for e in refusals] == [M.FAILED_SequenceError]
    assert producer.machine.stop_code == M.OK and producer.machine.installments_paid == 4


def test_injected_replays_and_foreign_bytes_are_refused_mid_session():
    sim = sim_session("g2v", CH)
    producer, consumer, p_side, c_side = roles(sim)
    sim.run(until=2100)  # two readings in
    old_status = sim.sent(p_side, M.TAG_CHARGING_STATUS)[0]
    old_installment = sim.sent(c_side, M.TAG_INSTALLMENT_REQ)[0]
    foreign = M.encode_message(OTHER_SID, 1, M.SessionStopReq(M.FAILED))
    for to, data in ((c_side, old_status), (p_side, old_installment), (c_side, foreign), (p_side, b"\x00junk")):
        sim.inject(to, data)
    sim.run()
    refused = sorted(e.code for t, e in sim.events[c_side] + sim.events[p_side] if isinstance(e, E.MessageRefused))
    assert refused == [M.FAILED, M.FAILED_UnknownSession]  # the exact replays count as duplicates:
    assert names(consumer.events).count("MeterReadingReceived") == 4  # answered again, not acted on
    assert names(producer.events).count("InstallmentReceived") == 4
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK
    check_risk_invariants(producer, consumer)


@pytest.mark.parametrize("seed", range(24))
def test_random_loss_duplication_and_reordering(seed):
    scenario = D.SCENARIOS[seed % 3]
    sim = sim_session(scenario, MODES[seed % 2], n=5)
    sim.rules.append(L.chaos(seed, drop_p=0.1, duplicate_p=0.1, delay_p=0.1))
    sim.run()
    producer, consumer, _, _ = roles(sim)
    codes = {producer.machine.stop_code, consumer.machine.stop_code}
    assert codes in ({M.OK}, {M.FAILED_Timeout}, {M.FAILED_PaymentOverdue})
    check_risk_invariants(producer, consumer)
    if codes == {M.OK}:
        assert producer.balance == consumer.balance


def test_random_faults_mostly_heal():
    completed = 0
    for seed in range(30):
        sim = sim_session("g2v", CH, n=5)
        sim.rules.append(L.chaos(1000 + seed, drop_p=0.1, duplicate_p=0.1, delay_p=0.1))
        sim.run()
        completed += sim.apps["i"].machine.stop_code == M.OK
    assert completed >= 27


# ---- metering: the consumer checks every reading ------------------------------------------


def _reading(producer, k, **change):
    """Reading k as the honest meter would sign it, with ``change`` applied (re-signed by
    ``key`` if given, else by the meter)."""
    meter = producer.meter
    fields = dict(session_id=SID, index=k, cumulative_wh=producer.machine.parameters.due_wh(k),
                  unit_price=meter.unit_price, installment=k, prev_digest=meter.prev, timestamp=1790000100, meter_sig=b"")
    key = change.pop("key", meter.key)
    fields.update(change)
    reading = MeterReading(**fields)
    reading.meter_sig = signing.sign(key, reading)
    return reading


@pytest.mark.parametrize(
    "change, code",
    [
        (dict(key=D.secret("rogue meter")), M.FAILED_MeteringSignatureNotValid),
        (dict(prev_digest=bytes([9]) * 32), M.FAILED_MeteringSignatureNotValid),
        (dict(index=2, installment=2), M.FAILED_MeteringSignatureNotValid),
        (dict(installment=2), M.FAILED_MeteringSignatureNotValid),
        (dict(session_id=OTHER_SID), M.FAILED_MeteringSignatureNotValid),
        (dict(unit_price=351), M.FAILED_WrongChargeParameter),
        (dict(cumulative_wh=494), M.FAILED_ReceiptMismatch),  # due 500, tolerance 5
    ],
    ids=["wrong-key", "broken-chain", "skipped-index", "wrong-installment", "other-session", "price", "short"],
)
def test_bad_meter_reading_ends_the_session(change, code):
    consumer, producer = at_charging()
    c, p = consumer.machine, producer.machine
    data = next_frame(p, M.ChargingStatus(_reading(producer, 1, **change)))
    p.send_reading(D.meter_reading(producer, 1), 0)  # what the producer's machine expects back
    p.messages_to_send()
    events = c.receive(data, 0)
    assert names(events) == ["SessionStopped"] and (events[0].code, events[0].by_peer) == (code, False)
    (answer,) = c.messages_to_send()
    envelope, payload = M.decode_message(answer)
    assert type(payload) is M.MeteringReceipt and payload.code == code and payload.ev_sig == b""
    assert c.readings == 0 and c.state == "stopped"
    events = p.receive(answer, 0)
    assert [(type(e).__name__, e.code, e.by_peer) for e in events] == [("SessionStopped", code, True)]


def test_reading_within_tolerance_is_accepted_and_meter_may_not_run_backwards():
    consumer, producer = at_charging()
    c, p = consumer.machine, producer.machine
    first = _reading(producer, 1, cumulative_wh=495)  # due 500, tolerance 5
    p.send_reading(first, 0)
    events = c.receive(p.messages_to_send()[0], 0)
    assert names(events) == ["MeterReadingReceived"]
    consumer.handle(events, 0)  # receipt and installment 1
    for data in c.messages_to_send():
        producer.handle(p.receive(data, 0), 0)
    for data in p.messages_to_send():
        consumer.handle(c.receive(data, 0), 0)
    assert c.state == "charging" and c.installments_paid == 2
    backwards = _reading(producer, 2, cumulative_wh=490, prev_digest=first.digest())
    events = c.receive(next_frame(p, M.ChargingStatus(backwards)), 0)
    assert [e.code for e in of(events, E.SessionStopped)] == [M.FAILED_MeteringSignatureNotValid]


@pytest.mark.parametrize("scenario", ["g2v", "v2g"])  # the charger's meter: the producer's, or the consumer's
def test_wrong_meter_reading_from_a_dishonest_charger_in_flight(scenario):
    sim = sim_session(scenario, CH)
    producer, consumer, p_side, c_side = roles(sim)
    rogue = D.Meter(SID, 350, key=D.secret("rogue meter"))

    def forge(data):
        envelope, payload = M.decode_message(data)
        r = payload.reading
        rogue.index, rogue.prev = r.index - 1, r.prev_digest
        return M.encode_message(SID, envelope.seq, M.ChargingStatus(rogue.read(r.cumulative_wh * 2, r.timestamp)))

    sim.rules.append(L.rewrite("r", M.TAG_CHARGING_STATUS, forge, nth=2))
    sim.run()
    assert consumer.machine.stop_code == producer.machine.stop_code == M.FAILED_MeteringSignatureNotValid
    meter, signer = metering(sim)
    assert consumer.machine.installments_paid == 2 and meter.machine.readings == 2 and signer.machine.readings == 1
    check_risk_invariants(producer, consumer)


@pytest.mark.parametrize("case, code", [("digest", M.FAILED_ReceiptMismatch), ("signature", M.FAILED_SignatureError)])
def test_bad_receipt_ends_the_session(case, code):
    consumer, producer = at_charging()
    p = producer.machine
    reading = D.meter_reading(producer, 1)
    p.send_reading(reading, 0)
    p.messages_to_send()
    if case == "digest":
        bad = M.MeteringReceipt(M.OK, bytes(32), signing.sign(consumer.key, MeterReceipt(reading, b"")))
    else:
        bad = M.MeteringReceipt(M.OK, reading.digest(), signing.sign(D.secret("someone"), MeterReceipt(reading, b"")))
    events = p.receive(next_frame(consumer.machine, bad), 0)
    assert [(type(e).__name__, e.code, e.by_peer) for e in events] == [("SessionStopped", code, False)]
    (stop,) = p.messages_to_send()
    assert M.decode_message(stop)[1] == M.SessionStopReq(code)
    assert p.installments_paid == 1  # only the deposit: nothing more was delivered


# ---- setup refusals ---------------------------------------------------------------------------


def _key(role):
    return signing.public_key(D.secret("session %d" % role))  # as linkdrive.App signs


def _pair(i_role=M.ROLE_CONSUMER, r_role=M.ROLE_PRODUCER, i_params=None, r_params=None,
          i_modes=(CH,), r_modes=(CH, HTLC), i_meter=b"", r_meter=None):
    meter = D.Meter(SID, 350)
    r_meter = meter.pubkey if r_meter is None else r_meter
    i_config = link.LinkConfig(SID, i_role, _key(i_role), i_params or D.parameters(), i_modes, i_meter, TIMEOUTS)
    r_config = link.LinkConfig(SID, r_role, _key(r_role), r_params or D.parameters(), r_modes, r_meter, TIMEOUTS)
    i = link.Initiator(i_config, 0)
    r = link.Responder(r_config, 0)
    return D.App(i, meter), D.App(r, meter)


@pytest.mark.parametrize(
    "kwargs, code",
    [
        (dict(r_params=D.parameters(unit_price=300)), M.FAILED_WrongChargeParameter),
        (dict(r_params=D.parameters(n=5)), M.FAILED_WrongChargeParameter),
        (dict(i_modes=(HTLC,), r_modes=(CH,)), M.FAILED_PaymentSelectionInvalid),
        (dict(i_role=M.ROLE_PRODUCER), M.FAILED_ServiceSelectionInvalid),
    ],
    ids=["price", "installments", "mode", "same-role"],
)
def test_setup_refusals(kwargs, code):
    initiator, responder = _pair(**kwargs)
    D.pump(initiator, responder)
    assert [(e.code, e.by_peer) for e in of(responder.events, E.SessionStopped)] == [(code, False)]
    assert [(e.code, e.by_peer) for e in of(initiator.events, E.SessionStopped)] == [(code, True)]
    assert not of(initiator.events + responder.events, E.TermsAgreed)


def test_the_responder_meters():
    with pytest.raises(ValueError, match="meter key"):
        _pair(r_meter=b"")
    initiator, responder = _pair()
    setup_req = initiator.machine.messages_to_send()[0]
    responder.machine.receive(setup_req, 0)
    (setup_res,) = responder.machine.messages_to_send()
    envelope, res = M.decode_message(setup_res)
    without_meter = M.encode_message(SID, envelope.seq, M.SessionSetupRes(M.OK, res.session_key, b"", res.account))
    events = initiator.machine.receive(without_meter, 0)
    assert [(e.code, e.by_peer) for e in of(events, E.SessionStopped)] == [(M.FAILED_ServiceSelectionInvalid, False)]


def test_setup_accepts_the_other_offered_mode():
    initiator, responder = _pair(i_modes=(HTLC,))
    D.pump(initiator, responder)
    assert initiator.machine.stop_code == responder.machine.stop_code == M.OK
    assert responder.machine.payment_mode == HTLC


# ---- payment decisions and misbehaving sides ----------------------------------------------------


def test_producer_refuses_a_bad_installment_proof():
    sim = sim_session("g2v", HTLC)
    producer, consumer, p_side, c_side = roles(sim)

    def cheat(data):
        envelope, payload = M.decode_message(data)
        return M.encode_message(SID, envelope.seq, M.InstallmentReq(payload.index, b"not a preimage"))

    sim.rules.append(L.rewrite(c_side, M.TAG_INSTALLMENT_REQ, cheat, nth=3))
    sim.run()
    assert [(e.code, e.by_peer) for e in of(consumer.events, E.SessionStopped)] == [(M.FAILED_UnpaidOverLimit, True)]
    assert producer.machine.stop_code == M.FAILED_UnpaidOverLimit
    assert producer.machine.readings == producer.machine.installments_paid == 2
    check_risk_invariants(producer, consumer)


def receipt_time(sim, p_side):
    """When the producer last got a receipt (it meters) or signed one (it does not)."""
    return max(t for t, e in sim.events[p_side] if isinstance(e, (E.ReceiptReceived, E.MeterReadingReceived)))


@pytest.mark.parametrize("scenario", ["g2v", "v2g"])
def test_consumer_that_stops_paying_gets_no_more_energy(scenario):
    sim = sim_session(scenario, CH)
    producer, consumer, p_side, c_side = roles(sim)
    consumer.stop_paying_at = 2
    sim.run()
    t_receipt = receipt_time(sim, p_side)
    (t_out, timeout), = timed(sim, p_side, E.Timeout)
    assert (timeout.code, timeout.waiting_for) == (M.FAILED_PaymentOverdue, "installment_req")
    assert t_out - t_receipt == TIMEOUTS.payment
    assert [(e.code, e.by_peer) for e in of(consumer.events, E.SessionStopped)] == [(M.FAILED_PaymentOverdue, True)]
    assert producer.machine.readings == producer.machine.installments_paid == 2  # exposure 0
    check_risk_invariants(producer, consumer)


def test_pausing_does_not_put_off_a_payment():
    sim = sim_session("v2g", CH)
    producer, consumer, p_side, c_side = roles(sim)
    consumer.stop_paying_at = 2
    sim.run()
    t_receipt = receipt_time(sim, p_side)
    sim = sim_session("v2g", CH)  # the same again, and the consumer pauses for 1 s meanwhile
    producer, consumer, p_side, c_side = roles(sim)
    consumer.stop_paying_at = 2
    sim.at(t_receipt + 1000, consumer.machine.pause)
    sim.at(t_receipt + 2000, lambda now: consumer.machine.resume(consumer.balance, now))
    sim.run()
    (t_out, timeout), = timed(sim, p_side, E.Timeout)
    assert timeout.code == M.FAILED_PaymentOverdue
    assert t_out - t_receipt == TIMEOUTS.payment + 1000  # the time before the pause counts


@pytest.mark.parametrize("scenario", ["g2v", "v2g"])
def test_producer_that_stops_delivering_costs_at_most_one_installment(scenario):
    sim = sim_session(scenario, CH)
    producer, consumer, p_side, c_side = roles(sim)
    meter, signer = metering(sim)
    producer.stop_delivering_at = 3
    sim.run()
    t_paid = timed(sim, p_side, E.InstallmentReceived)[-1][0]
    (t_out, timeout), = [(t, e) for t, e in sim.events["r"] + sim.events["i"] if isinstance(e, E.Timeout)]
    assert (timeout.code, timeout.waiting_for) == (M.FAILED_Timeout, "energy" if producer is meter else "charging_status")
    assert t_out - t_paid == TIMEOUTS.sequence  # no energy came for that long
    assert consumer.machine.stop_code == producer.machine.stop_code == M.FAILED_Timeout
    assert consumer.machine.installments_paid == signer.machine.readings + 1 == 3  # b/N ahead
    check_risk_invariants(producer, consumer)


def test_energy_progress_keeps_a_slow_chunk_alive_and_its_end_times_out():
    consumer, producer = at_charging()
    for m in (consumer.machine, producer.machine):
        for t in range(5000, 40001, 5000):  # energy advances every 5 s: the chunk takes 40 s in all
            m.energy_flowed(t)
            assert m.tick(t) == [] and m.state == "charging"
        assert m.next_deadline() == 40000 + TIMEOUTS.sequence  # then it stops coming
        events = m.tick(40000 + TIMEOUTS.sequence)
        waiting_for = "energy" if m.meters else "charging_status"
        assert [(e.code, e.waiting_for) for e in of(events, E.Timeout)] == [(M.FAILED_Timeout, waiting_for)]


def test_consumer_refuses_a_reading_that_disagrees_with_its_measurement():
    consumer, producer = at_charging()
    p, c = producer.machine, consumer.machine
    p.send_reading(D.meter_reading(producer, 1), 0)
    assert names(c.receive(p.messages_to_send()[0], 0)) == ["MeterReadingReceived"]
    c.stop(M.FAILED_ReceiptMismatch, 0)  # its own meter saw less
    (answer,) = c.messages_to_send()
    assert M.decode_message(answer)[1] == M.MeteringReceipt(M.FAILED_ReceiptMismatch, bytes(32), b"")
    assert [(e.code, e.by_peer) for e in of(p.receive(answer, 0), E.SessionStopped)] == [(M.FAILED_ReceiptMismatch, True)]


def test_normal_stop_while_deciding_does_not_answer_ok():
    consumer, producer = at_charging()
    p, c = producer.machine, consumer.machine
    p.send_reading(D.meter_reading(producer, 1), 0)
    c.receive(p.messages_to_send()[0], 0)
    c.stop(M.OK, 0)  # e.g. the battery is full: a normal end, no receipt
    (stop,) = c.messages_to_send()
    assert M.decode_message(stop)[1] == M.SessionStopReq(M.OK)
    assert [(e.code, e.by_peer) for e in of(p.receive(stop, 0), E.SessionStopped)] == [(M.OK, True)]
    assert p.installments_paid == 1 and p.readings == 1  # the deposit paid for reading 1


# ---- timeouts ---------------------------------------------------------------------------------


def test_silent_responder():
    sim = sim_session("g2v", CH)
    sim.rules.append(L.drop("r", None, nth=None))
    sim.run()
    events = sim.events["i"]
    assert [(t, names([e])[0]) for t, e in events] == [(2000, "Timeout"), (2000, "SessionStopped")]
    assert events[0][1].waiting_for == "session_setup_res" and events[1][1].code == M.FAILED_Timeout
    sent = [M.kind_name(k) for t, f, k, _ in sim.wire if f == "i"]
    assert sent[:4] == ["session_setup_req"] * 4  # at 0, 500, 1000, 1500
    assert sent[4] == "session_stop_req"
    # The responder saw the setup, then nothing it could answer: its sequence timeout.
    assert [e.code for e in of(sim.apps["r"].events, E.SessionStopped)] == [M.FAILED_Timeout]


def test_silent_initiator():
    _, responder = D.session("g2v", CH, timeouts=TIMEOUTS, now=100)
    r = responder.machine
    assert r.next_deadline() == 100 + TIMEOUTS.sequence
    assert r.tick(100 + TIMEOUTS.sequence - 1) == []
    events = r.tick(100 + TIMEOUTS.sequence)
    assert [repr(e) for e in events] == ["Timeout(FAILED_Timeout, waiting_for=the peer's next request)",
                                         "SessionStopped(FAILED_Timeout, by_peer=False)"]


def test_consumer_app_that_never_answers_a_reading():
    consumer, producer = at_charging()
    p = producer.machine
    p.send_reading(D.meter_reading(producer, 1), 1000)
    consumer.machine.receive(p.messages_to_send()[0], 1000)  # no answer from its application
    assert p.next_deadline() == 1000 + TIMEOUTS.retransmit
    assert p.tick(1500) == [] and len(p.messages_to_send()) == 1  # sent again
    events = p.tick(1000 + TIMEOUTS.response)
    assert [(type(e).__name__, e.code) for e in events] == [("Timeout", M.FAILED_Timeout), ("SessionStopped", M.FAILED_Timeout)]
    assert events[0].waiting_for == "metering_receipt"


def test_stopped_machine_gives_up_on_an_unconfirmed_stop():
    consumer, producer = at_charging()
    c = consumer.machine
    c.stop(M.FAILED, 0)
    (stop,) = c.messages_to_send()
    assert M.decode_message(stop)[1] == M.SessionStopReq(M.FAILED)
    assert c.tick(TIMEOUTS.retransmit) == [] and c.messages_to_send() == [stop]
    c.tick(TIMEOUTS.response)
    assert c.next_deadline() is None


# ---- pause and resume -------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["producer", "consumer"])
@pytest.mark.parametrize("scenario", ["g2v", "v2g"])
def test_pause_and_resume_by_either_side(scenario, who):
    sim = sim_session(scenario, CH)
    producer, consumer, p_side, c_side = roles(sim)
    pauser, peer_side = (producer, c_side) if who == "producer" else (consumer, p_side)
    sim.at(1500, pauser.machine.pause)
    sim.at(6000, lambda now: pauser.machine.resume(pauser.balance, now))
    sim.run()
    assert [e.by_peer for t, e in timed(sim, peer_side, E.Paused)] == [True]
    (requested,) = of(sim.apps[peer_side].events, E.ResumeRequested)
    (resumed,) = of(pauser.events, E.Resumed)
    assert requested.balance == resumed.balance != b""  # both named the same co-signed state
    loop = (M.TAG_CHARGING_STATUS, M.TAG_INSTALLMENT_REQ)
    assert not [t for t, f, k, _ in sim.wire if k in loop and 1505 < t < 6000]  # nothing moved while paused
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK
    assert producer.machine.installments_paid == 4 and producer.balance == consumer.balance
    check_risk_invariants(producer, consumer)


def test_nothing_moves_forward_while_paused():
    consumer, producer = at_charging()
    c, p = consumer.machine, producer.machine
    reading = D.meter_reading(producer, 1)
    p.send_reading(reading, 0)
    c.receive(p.messages_to_send()[0], 0)
    c.pause(0)
    c.send_receipt(signing.sign(consumer.key, MeterReceipt(reading, b"")), 0)  # for energy already had
    assert c.state == "installment"
    with pytest.raises(link.LocalProtocolError, match="paused"):
        c.send_installment(b"x", 0)
    consumer, producer = at_charging()
    producer.machine.pause(0)
    assert producer.machine.state == "charging"
    with pytest.raises(link.LocalProtocolError, match="paused"):
        producer.machine.send_reading(D.meter_reading(producer, 1), 0)


@pytest.mark.parametrize("mode", MODES, ids=["channel", "htlc"])
@pytest.mark.parametrize("start", [30, 1500, 2200, 3004])
def test_resume_after_the_connection_dropped_on_both_sides(start, mode):
    sim = sim_session("g2v", mode)
    sim.outage(start, start + 5000)  # a broker restart: both transports notice
    sim.run()
    producer, consumer, _, _ = roles(sim)
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK
    assert producer.machine.installments_paid == consumer.machine.installments_paid == 4
    assert producer.balance == consumer.balance
    assert of(producer.events + consumer.events, E.ResumeRequested)
    check_risk_invariants(producer, consumer)


def test_resume_after_a_drop_only_one_side_noticed():
    sim = sim_session("g2v", CH)
    producer, consumer, p_side, c_side = roles(sim)
    sim.outage(1500, 4500, notify=(p_side,))  # the consumer merely waits for the next reading
    sim.run()
    assert producer.machine.stop_code == consumer.machine.stop_code == M.OK
    assert of(consumer.events, E.ResumeRequested) and of(producer.events, E.Resumed)


def test_a_resume_is_asked_for_once_while_it_waits_for_its_answer():
    sim = sim_session("g2v", CH)
    _, consumer, _, _ = roles(sim)
    sim.run(until=1500)  # charging
    m = consumer.machine
    m.connection_lost(sim.now)
    assert not m.resuming
    m.resume(consumer.balance, sim.now)
    assert m.resuming and m.paused  # a second reconnect meanwhile re-sends it (the runner checks this)
    with pytest.raises(link.LocalProtocolError):
        m.resume(consumer.balance, sim.now)
    sim.run()
    assert not m.resuming and consumer.machine.stop_code == M.OK


def test_a_side_that_missed_the_stop_learns_it_when_it_resumes():
    sim = sim_session("g2v", HTLC)
    producer, consumer, p_side, c_side = roles(sim)
    sim.outage(1500, 5500, notify=(c_side,))  # the producer waits for a receipt and times out
    sim.run()
    assert producer.machine.stop_code == M.FAILED_Timeout
    (t_stop, stopped), = timed(sim, c_side, E.SessionStopped)
    assert (stopped.code, stopped.by_peer) == (M.FAILED_Timeout, True)
    assert t_stop < 5600  # at the reconnection, not at the end of its pause timeout
    check_risk_invariants(producer, consumer)


def test_resume_with_a_stale_balance_is_refused_by_the_wallet():
    sim = sim_session("g2v", CH)
    producer, consumer, p_side, c_side = roles(sim)
    sim.at(2500, consumer.machine.pause)
    sim.at(3000, lambda now: consumer.machine.resume(D.proof(CH, 0), now))  # an older state
    sim.run()
    assert [(e.code, e.by_peer) for e in of(consumer.events, E.SessionStopped)] == [(M.FAILED_UnpaidOverLimit, True)]
    assert producer.machine.stop_code == M.FAILED_UnpaidOverLimit


def test_pause_timeout():
    sim = sim_session("g2v", CH)
    producer, consumer, p_side, c_side = roles(sim)
    sim.at(1500, producer.machine.pause)
    sim.run()
    ((t, timeout),) = timed(sim, p_side, E.Timeout)
    assert (t, timeout.code, timeout.waiting_for) == (1500 + TIMEOUTS.pause, M.FAILED_Timeout, "resume")
    assert [(e.code, e.by_peer) for e in of(consumer.events, E.SessionStopped)] == [(M.FAILED_Timeout, True)]


# ---- local misuse ------------------------------------------------------------------------------


def test_application_misuse_raises_local_protocol_error():
    consumer, producer = at_charging()
    c, p = consumer.machine, producer.machine
    reading = D.meter_reading(producer, 1)
    for call in (
        lambda: c.send_reading(reading, 0),  # the consumer has no readings to send
        lambda: c.send_receipt(bytes(64), 0),  # no reading to receipt
        lambda: c.send_installment(b"x", 0),  # nothing due yet
        lambda: p.accept_installment(b"", 0),  # nothing to accept
        lambda: p.accept_resume(b"", 0),
        lambda: p.resume(b"", 0),  # not paused
        lambda: p.send_reading(_reading(producer, 2), 0),  # skips reading 1
    ):
        with pytest.raises(link.LocalProtocolError):
            call()
    with pytest.raises(link.LocalProtocolError):
        c.stop(True, 0)  # not a code
    assert c.state == "charging"
    c.stop(M.OK, 0)
    with pytest.raises(link.LocalProtocolError):
        c.stop(M.OK, 0)
    with pytest.raises(ValueError):
        link.LinkConfig(b"short", M.ROLE_PRODUCER, c.config.session_key, D.parameters(), (CH,))


# ---- untrusted input: no exception, no change ------------------------------------------------


def _machines_in_every_phase():
    consumer, producer = at_charging()
    p = producer.machine
    p.send_reading(D.meter_reading(producer, 1), 0)
    consumer.machine.receive(p.messages_to_send()[0], 0)
    initiator, responder = D.session("v2g", HTLC, timeouts=TIMEOUTS)
    return [initiator.machine, responder.machine, consumer.machine, p]


MACHINES = _machines_in_every_phase()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(range(len(MACHINES))))
def test_random_bytes_never_raise_and_change_nothing(data, which):
    machine = MACHINES[which]
    machine.messages_to_send()
    before = snapshot(machine)
    events = machine.receive(data, 0)
    assert snapshot(machine) == before
    assert names(events) in (["MessageRefused"], [])
    assert len(machine.messages_to_send()) == len(events)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=9),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 12), st.integers(60, 85), cbor_values, st.sampled_from(range(len(MACHINES))), st.booleans())
def test_random_envelopes_never_raise_and_refusals_change_nothing(seq, kind, payload, which, tagged):
    machine = MACHINES[which]
    machine.messages_to_send()
    if tagged and isinstance(payload, list):
        payload = [kind, 1] + payload  # a plausible payload head reaches the field checks
    data = codec.dumps([7, 1, SID, seq, kind, payload])
    before = snapshot(machine)
    events = machine.receive(data, 0)
    if any(isinstance(e, E.MessageRefused) for e in events):
        assert snapshot(machine) == before


KEYS = [b"", signing.public_key(D.secret("session 1")), signing.public_key(D.secret("meter"))]


def _field_values(ftype):
    """Values for one schema field, mostly near the ones the machines check against."""
    if isinstance(ftype, schema.Signature):
        return st.just(b"") | st.binary(min_size=64, max_size=64)
    if isinstance(ftype, schema.Bytes):
        if ftype.max == 33:
            return st.sampled_from(KEYS)
        if ftype.max == 16:
            return st.sampled_from([SID, OTHER_SID])
        if ftype.max == 32:
            return st.just(bytes(32)) | st.binary(min_size=32, max_size=32)
        return st.binary(max_size=40)
    if isinstance(ftype, schema.UInt):
        return st.integers(0, min(ftype.max, 4)) | st.sampled_from([350, 500, 2000, 1790000000]) | st.integers(0, ftype.max)
    if isinstance(ftype, schema.Bool):
        return st.booleans()
    return _record_values(ftype.cls)


def _record_values(cls):
    head = [] if cls.TAG is None else [cls.TAG, cls.VERSION]
    return st.tuples(*[_field_values(f) for _, f in cls.FIELDS]).map(lambda values: head + list(values))


typed_messages = st.sampled_from(M.PAYLOADS).flatmap(lambda cls: _record_values(cls).map(lambda v: (cls.TAG, v)))


@settings(max_examples=600, deadline=None)
@given(typed_messages, st.integers(-1, 2), st.sampled_from(range(len(MACHINES))))
def test_well_typed_messages_never_raise_and_refusals_change_nothing(message, offset, which):
    kind, payload = message
    machine = copy.deepcopy(MACHINES[which])
    machine.messages_to_send()
    data = codec.dumps([7, 1, SID, max(0, machine.rx_seq + 1 + offset), kind, payload])
    before = snapshot(machine)
    events = machine.receive(data, 0)
    if any(isinstance(e, E.MessageRefused) for e in events):
        assert snapshot(machine) == before
    assert all(isinstance(e, E.Event) for e in events)
