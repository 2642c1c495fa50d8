"""One link step, timed on CPython and shipped as is to the real MicroPython.

A step is one message of the installment loop: the sender's machine encoding it plus the
receiver's decoding, checking and state change (``protocol/link.py``), over a G2V state
channel whose readings come from the simulated board's signing meter
(``boards/sim/power.py``). Signatures are apart: the readings and receipts are signed
before the clock starts, every ``signing.verify`` the machines make during the timed loop
is answered from a table the real verify filled beforehand, and the real verifications
are timed as a block of their own. So the step is the protocol's own cost, and the whole
loop is timed at once: the WebAssembly port's ``ticks_us`` counts whole milliseconds, and
one round of 4N - 2 messages keeps that rounding small.

Portable (MicroPython 1.27 and CPython): ``bench_session`` imports it on CPython and runs
this file under MicroPython with ``CONFIG`` set, which prints one ``@@`` JSON record.
"""
from plugpay.boards.sim.power import MJ_PER_WH, Meter
from plugpay.protocol import codec, link, signing
from plugpay.protocol import link_events as E
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256, ticks_diff, ticks_us
from plugpay.protocol.structures import ChannelState, MeterReceipt

SESSION = sha256(b"plugpay bench link step")[:16]
PRICE = 300


def _secret(name):
    return sha256(b"plugpay bench link step " + name)


def _proof(k, signatures):
    """A channel state of the real size (the link carries it as opaque bytes)."""
    return ChannelState(SESSION + SESSION, k, k * 10, k * 100, bytes(32), bytes(64), bytes(64) if signatures == 2
                        else b"").encode()


def _pump(a, b):
    """Carry messages both ways until nothing moves, answering the deposit on the way."""
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for data in src.messages_to_send():
                moved = True
                for ev in dst.receive(data, 0):
                    if isinstance(ev, E.TermsAgreed) and not dst.producer:
                        dst.send_installment(_proof(0, 1), 0)
                    elif isinstance(ev, E.InstallmentReceived):
                        dst.accept_installment(b"", 0)


def _round(n):
    """Machines at the first reading, the signed readings and receipts, the verify table."""
    params = M.ChargeParameters(100 * n, 1790000000, 1790007200, 11000, PRICE, n, 5)
    meter = Meter(_secret(b"meter"))
    meter.start(SESSION, PRICE)
    consumer_secret = _secret(b"consumer")
    consumer = link.Initiator(link.LinkConfig(SESSION, M.ROLE_CONSUMER, signing.public_key(consumer_secret), params,
                                              (M.MODE_STATE_CHANNEL,)), 0)
    producer = link.Responder(link.LinkConfig(SESSION, M.ROLE_PRODUCER, signing.public_key(_secret(b"producer")),
                                              params, (M.MODE_STATE_CHANNEL,), meter.pubkey), 0)
    _pump(consumer, producer)
    if consumer.phase != link.CHARGING:
        raise AssertionError("the link did not reach charging: %s" % consumer.state)
    steps = []
    checks = []  # (public key, struct, signature): what the machines will verify
    for k in range(1, n + 1):
        meter.count((params.due_wh(k) - params.due_wh(k - 1)) * MJ_PER_WH)
        reading = meter.read(k, 1790000000 + k)
        receipt_sig = signing.sign(consumer_secret, MeterReceipt(reading, b""))
        steps.append((reading, receipt_sig, _proof(k, 1), _proof(k, 2)))
        checks.append((meter.pubkey, reading, reading.meter_sig))
        checks.append((signing.public_key(consumer_secret), MeterReceipt(reading, b""), receipt_sig))
    return consumer, producer, steps, checks


def _loop(consumer, producer, steps):
    n = len(steps)
    for k in range(1, n + 1):
        reading, receipt_sig, proof, countersigned = steps[k - 1]
        producer.send_reading(reading, 0)
        consumer.receive(producer.messages_to_send()[0], 0)
        consumer.send_receipt(receipt_sig, 0)
        producer.receive(consumer.messages_to_send()[0], 0)
        if k < n:
            consumer.send_installment(proof, 0)
            producer.receive(consumer.messages_to_send()[0], 0)
            producer.accept_installment(countersigned, 0)
            consumer.receive(producer.messages_to_send()[0], 0)
    if consumer.phase != link.POWER_STOP or producer.phase != link.POWER_STOP:
        raise AssertionError("the loop did not end at power stop: %s / %s" % (consumer.state, producer.state))
    return 4 * n - 2


def step_times(n=20, rounds=3):
    """The best round's (microseconds per link message without signatures, microseconds
    per signature verification, messages per round)."""
    verify = signing.verify
    best = None
    try:
        for _ in range(rounds):
            consumer, producer, steps, checks = _round(n)
            t = ticks_us()
            for pubkey, struct, sig in checks:
                if not verify(pubkey, struct, sig):
                    raise AssertionError("a signature of the round does not verify")
            verify_us = ticks_diff(ticks_us(), t) / len(checks)
            known = {}
            for _, struct, sig in checks:
                known[bytes(sig)] = True
            signing.verify = lambda pubkey, struct, sig: known.get(bytes(sig), False)
            t = ticks_us()
            messages = _loop(consumer, producer, steps)
            spent = ticks_diff(ticks_us(), t)
            signing.verify = verify
            row = (spent / messages, verify_us, messages)
            if best is None or row[0] < best[0]:
                best = row
    finally:
        signing.verify = verify
    return best


def codec_baseline_us(repeat=200):
    """Microseconds to decode and re-encode one ChargingStatus message with the bare codec:
    the floor under a step, measured in the same run."""
    meter = Meter(_secret(b"meter"))
    meter.start(SESSION, PRICE)
    data = M.encode_message(SESSION, 7, M.ChargingStatus(meter.read(1, 1790000000)))
    t = ticks_us()
    for _ in range(repeat):
        codec.dumps(codec.loads(data))
    return ticks_diff(ticks_us(), t) / repeat


try:
    CONFIG
except NameError:  # imported on CPython
    CONFIG = None

if CONFIG is not None:
    _step, _verify, _messages = step_times(CONFIG["installments"], CONFIG["rounds"])
    print("@@ {\"step_us\": %.2f, \"verify_us\": %.1f, \"messages\": %d, \"baseline_us\": %.2f}" % (
        _step, _verify, _messages, codec_baseline_us(CONFIG["baseline_repeat"])))
