"""Stand-ins for what drives the link in a real device: a signing meter and an honest
application per side, plus a lossless in-order pump and the link step benchmark.

Why here: the same code runs on CPython (tests/test_link.py and tests/bench_link.py import
it; tests/linksim.py drives these apps) and under the real MicroPython (tests/device/ files
are shipped to the port), so both runtimes run and time the same session. Payment proofs are
stand-in bytes: the wallet that makes and checks real ones is not part of the link.
"""
from plugpay.protocol import codec, link, signing
from plugpay.protocol import link_events as E
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256, ticks_diff, ticks_us
from plugpay.protocol.structures import MeterReading, MeterReceipt

SESSION = bytes(range(16))
SCENARIOS = ("g2v", "v2g", "v2v")
# The initiator's role per scenario (the initiator is the vehicle; the responder meters).
_ROLES = {
    "g2v": M.ROLE_CONSUMER,  # the charger produces
    "v2g": M.ROLE_PRODUCER,  # the vehicle produces, the grid side pays
    "v2v": M.ROLE_CONSUMER,  # the responding vehicle produces
}


def secret(name):
    return sha256(("plugpay link test " + name).encode())


def parameters(n=4, energy_wh=2000, unit_price=350, tolerance_wh=5):
    return M.ChargeParameters(energy_wh, 1790000000, 1790007200, 11000, unit_price, n, tolerance_wh)


class Meter:
    """The responder's meter: signed readings, each chained to the previous one."""

    def __init__(self, session_id, unit_price, key=None):
        self.key = key or secret("meter")
        self.pubkey = signing.public_key(self.key)
        self.session_id = session_id
        self.unit_price = unit_price
        self.index = 0
        self.prev = bytes(32)

    def read(self, cumulative_wh, timestamp):
        self.index += 1
        r = MeterReading(self.session_id, self.index, cumulative_wh, self.unit_price, self.index, self.prev, timestamp, b"")
        r.meter_sig = signing.sign(self.key, r)
        self.prev = r.digest()
        return r


def proof(mode, index):
    """The consumer's stand-in proof for installment ``index``: a 'channel state' or an
    HTLC preimage, as opaque bytes."""
    if mode == M.MODE_HTLC:
        return sha256(("preimage %d" % index).encode())
    return ("channel state %d signed by consumer" % index).encode()


def countersign(mode, consumer_proof):
    """The producer's stand-in answer: the co-signed state, nothing for an HTLC."""
    return b"" if mode == M.MODE_HTLC else consumer_proof + b" and producer"


class App:
    """An honest side: pays, counter-signs, meters and resumes as the events ask.

    ``chunk_ms`` is how long e/N takes to flow, which the responder's ``meter`` sees.
    ``balance`` is the latest co-signed balance (a channel's co-signed state, an HTLC's
    last preimage). To misbehave, a consumer stops paying from installment
    ``stop_paying_at`` on and a producer stops delivering from reading
    ``stop_delivering_at`` on (``supplier``: the producer's app, whose energy the meter
    sees).
    """

    def __init__(self, machine, meter=None, chunk_ms=0, timestamp=1790000000):
        self.machine = machine
        self.meter = meter
        self.supplier = self
        self.chunk_ms = chunk_ms
        self.timestamp = timestamp
        self.stop_paying_at = None
        self.stop_delivering_at = None
        self.key = secret("session %d" % machine.role)
        self.balance = b""
        self.events = []
        self.deliver_at = None  # responder: when its meter shows the next e/N
        self.owe_installment = False  # consumer: an installment waits for a resume

    def handle(self, events, now):
        for ev in events:
            self.events.append(ev)
            self.on_event(ev, now)

    def on_event(self, ev, now):
        m = self.machine
        if isinstance(ev, E.TermsAgreed) and not m.producer:
            self.pay(now)
        elif isinstance(ev, E.InstallmentReceived):
            expected = proof(m.payment_mode, ev.index)
            if ev.proof != expected:
                m.stop(M.FAILED_UnpaidOverLimit, now)
                return
            self.balance = countersign(m.payment_mode, ev.proof) or ev.proof
            m.accept_installment(countersign(m.payment_mode, ev.proof), now)
            if ev.index > 0 and m.meters:
                self.deliver_at = now + self.chunk_ms
        elif isinstance(ev, E.PowerDeliveryStarted) and m.meters:
            self.deliver_at = now + self.chunk_ms
        elif isinstance(ev, E.MeterReadingReceived):
            receipt = MeterReceipt(ev.reading, b"")
            m.send_receipt(signing.sign(self.key, receipt), now)
            if m.phase == link.INSTALLMENT and not m.producer:
                self.pay(now)
        elif isinstance(ev, E.ReceiptReceived):
            if m.phase == link.INSTALLMENT and not m.producer:
                self.pay(now)
        elif isinstance(ev, E.InstallmentAccepted):
            self.balance = ev.proof or proof(m.payment_mode, ev.index)
            if ev.index > 0 and m.meters:
                self.deliver_at = now + self.chunk_ms
        elif isinstance(ev, E.ResumeRequested):
            if ev.balance != self.balance:
                m.stop(M.FAILED_UnpaidOverLimit, now)
                return
            m.accept_resume(self.balance, now)
            if self.owe_installment:
                self.pay(now)
        elif isinstance(ev, E.Resumed) and self.owe_installment:
            self.pay(now)

    def pay(self, now):
        m = self.machine
        if m.paused:
            self.owe_installment = True
            return
        self.owe_installment = False
        if self.stop_paying_at is None or m.installments_paid < self.stop_paying_at:
            m.send_installment(proof(m.payment_mode, m.installments_paid), now)

    def poll(self, now):
        """Send the meter's reading once the next e/N flowed."""
        m = self.machine
        if self.deliver_at is None or now < self.deliver_at or m.paused or m.phase != link.CHARGING:
            return
        self.deliver_at = None
        k = m.readings + 1
        stop = self.supplier.stop_delivering_at
        if stop is not None and k >= stop:
            return
        self.timestamp += 1
        m.send_reading(self.meter.read(m.parameters.due_wh(k), self.timestamp), now)

    def next_time(self):
        """When ``poll`` will send a reading, or None while it cannot (paused, not charging)."""
        m = self.machine
        return None if m.paused or m.phase != link.CHARGING else self.deliver_at

    def reconnected(self, now):
        """The transport is back: resume with the latest co-signed balance."""
        if self.machine.paused:
            self.machine.resume(self.balance, now)


def session(scenario="g2v", mode=M.MODE_STATE_CHANNEL, n=4, energy_wh=2000, chunk_ms=0, timeouts=None, now=0):
    """An initiator and a responder with their apps, not yet connected; e/N flows in
    ``chunk_ms``."""
    initiator_role = _ROLES[scenario]
    responder_role = M.ROLE_CONSUMER if initiator_role == M.ROLE_PRODUCER else M.ROLE_PRODUCER
    params = parameters(n, energy_wh)
    meter = Meter(SESSION, params.unit_price)
    sides = []
    for role, cls in ((initiator_role, link.Initiator), (responder_role, link.Responder)):
        key = signing.public_key(secret("session %d" % role))
        meter_key = b"" if cls is link.Initiator else meter.pubkey
        config = link.LinkConfig(SESSION, role, key, params, (mode,), meter_key, timeouts)
        sides.append(App(cls(config, now), None if cls is link.Initiator else meter, chunk_ms))
    initiator, responder = sides
    responder.supplier = initiator if initiator.machine.producer else responder
    return initiator, responder


def pump(a, b, now=0, limit=10000):
    """Carry messages between two apps' machines, in order and without loss, until
    nothing moves; return how many messages were carried."""
    carried = 0
    while carried < limit:
        moved = False
        for src, dst in ((a, b), (b, a)):
            src.poll(now)
            for data in src.machine.messages_to_send():
                dst.handle(dst.machine.receive(data, now), now)
                carried += 1
                moved = True
        if not moved:
            return carried
    raise AssertionError("the pump did not settle")


def step_times(n=20, rounds=3):
    """Time the installment loop of a G2V session, one link message at a time: the
    sender's machine encoding it plus the receiver's decoding, checking and state change.
    Signature verification is timed apart, inline (``signing.verify`` is wrapped for the
    run), and left out of the step. Readings and receipts are signed beforehand: signing
    is the meter's and the wallet's work. Returns the best round's (microseconds per
    message without signatures, microseconds per verification, messages per round)."""
    best = None
    verify = signing.verify
    in_verify = [0, 0]  # microseconds, calls

    def timed_verify(pubkey, struct, sig):
        t = ticks_us()
        ok = verify(pubkey, struct, sig)
        in_verify[0] += ticks_diff(ticks_us(), t)
        in_verify[1] += 1
        return ok

    signing.verify = timed_verify
    try:
        for _ in range(rounds):
            # The charger's app never gets to deliver (chunk_ms): this loop drives the machines.
            vehicle, charger = session("g2v", M.MODE_STATE_CHANNEL, n=n, energy_wh=100 * n, chunk_ms=1 << 30)
            consumer, producer = vehicle.machine, charger.machine
            pump(vehicle, charger)  # setup, deposit and power delivery start, untimed
            in_verify[0] = in_verify[1] = 0
            spent = 0
            messages = 0
            for k in range(1, n + 1):
                reading = meter_reading(charger, k)
                receipt_sig = signing.sign(vehicle.key, MeterReceipt(reading, b""))
                t = ticks_us()
                producer.send_reading(reading, 0)
                consumer.receive(producer.messages_to_send()[0], 0)
                consumer.send_receipt(receipt_sig, 0)
                producer.receive(consumer.messages_to_send()[0], 0)
                if k < n:
                    consumer.send_installment(b"p" * 32, 0)
                    producer.receive(consumer.messages_to_send()[0], 0)
                    producer.accept_installment(b"q" * 200, 0)
                    consumer.receive(producer.messages_to_send()[0], 0)
                    messages += 2
                spent += ticks_diff(ticks_us(), t)
                messages += 2
            assert consumer.phase == link.POWER_STOP and producer.phase == link.POWER_STOP, consumer.state
            assert in_verify[1] == 2 * n  # the meter's signature and the receipt's, per reading
            row = ((spent - in_verify[0]) / messages, in_verify[0] / in_verify[1], messages)
            if best is None or row[0] < best[0]:
                best = row
    finally:
        signing.verify = verify
    return best


def meter_reading(app, k):
    app.timestamp += 1
    return app.meter.read(app.machine.parameters.due_wh(k), app.timestamp)


def codec_baseline_us(repeat=200):
    """Microseconds to decode and re-encode one ChargingStatus message with the bare
    codec: the floor a link step stands on, measured in the same run as the step."""
    meter = Meter(SESSION, 350)
    data = M.encode_message(SESSION, 7, M.ChargingStatus(meter.read(500, 1)))
    t = ticks_us()
    for _ in range(repeat):
        codec.dumps(codec.loads(data))
    return ticks_diff(ticks_us(), t) / repeat
