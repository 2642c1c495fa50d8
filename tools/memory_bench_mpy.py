"""The memory benchmark's device half: one side of a state-channel charging session, run
under MicroPython by ``plugpay bench memory`` and on CPython to record the session.

Why one side alone: a board holds one wallet, so its heap is what one side needs. On
CPython (``record``) both sides run, the charger's wallet and meter against the vehicle's,
and every message the vehicle receives or sends goes to a transcript file. Under
MicroPython (``phases``) only the vehicle runs: its wallet on files, the link state
machine, the pure ECDSA backend; the charger's messages come from the transcript, one at a
time, and each message the vehicle sends must equal the recorded one, so it is the same
session byte for byte (RFC 6979 signatures and fixed keys make it deterministic). At the
end the vehicle signs its cooperative close and seals a key refill request to the RA, as
a device does after a session.

Measured (``gc.mem_alloc()`` after a collection; on the WebAssembly port memory is freed
only when control returns to JavaScript, so the work yields at every message and every
figure is taken at a phase start): the heap of each import, of the opened wallet and its
peak over the session. Runs from a .mpy file too (``harness``): compiling a
source this size needs more heap than the smallest runs have.
"""
import gc
import json

IN = 0  # a transcript record: a message the vehicle receives
OUT = 1  # a message the vehicle sends
SESSION = bytes(range(16))
# What one side imports for a channel session, in import order (deepest first, so each
# figure is the module's own cost; the code heap is their sum).
MODULES = (
    "plugpay.protocol.port",
    "plugpay.protocol.cbor",
    "plugpay.protocol.codec",
    "plugpay.protocol.schema",
    "plugpay.protocol.structures",
    "plugpay.protocol.secp256k1",
    "plugpay.protocol.signing",
    "plugpay.protocol.aead",
    "plugpay.protocol.ledger_ops",
    "plugpay.protocol.link_messages",
    "plugpay.protocol.link_events",
    "plugpay.protocol.link",
    "plugpay.protocol.sealed",
    "plugpay.firmware.storage",
    "plugpay.firmware.records",
    "plugpay.firmware.keystore",
    "plugpay.firmware.books",
    "plugpay.firmware.channels",
    "plugpay.firmware.wallet",
)


def heap():
    """Bytes in use after a collection (real on the WebAssembly port only at a phase start)."""
    gc.collect()
    mem_alloc = getattr(gc, "mem_alloc", None)
    return mem_alloc() if mem_alloc is not None else None


def parameters(n, energy_wh, unit_price):
    from plugpay.protocol import link_messages as M

    return M.ChargeParameters(energy_wh, 1790000000, 1790007200, 11000, unit_price, n, 5)


def secret(name):
    from plugpay.protocol.port import sha256

    return sha256(("plugpay memory bench " + name).encode())


class Side:
    """One side's application: pays or counter-signs with its wallet's channel, meters
    (the charger) or counter-signs the readings (the vehicle), as the link's events ask."""

    def __init__(self, wallet, channel_id, initiator, params):
        from plugpay.protocol import link, signing
        from plugpay.protocol import link_messages as M

        self.channel = wallet.channel(channel_id)
        self.params = params
        self.key = secret("session %d" % initiator)
        meter_key = b""
        if not initiator:
            self.meter_key = secret("meter")
            meter_key = signing.public_key(self.meter_key)
            self.index = 0
            self.prev = bytes(32)
        role = M.ROLE_CONSUMER if initiator else M.ROLE_PRODUCER
        config = link.LinkConfig(SESSION, role, signing.public_key(self.key), params, (M.MODE_STATE_CHANNEL,),
                                 meter_key)
        self.machine = (link.Initiator if initiator else link.Responder)(config, 0)
        self.receipt = bytes(32)
        self.deliver = False
        self.budget = params.energy_wh * params.unit_price // 1000

    def paid_after(self, k):
        return self.budget * (k + 1) // self.params.installments

    def handle(self, events):
        from plugpay.protocol import link_events as E
        from plugpay.protocol import signing
        from plugpay.protocol.structures import MeterReceipt

        m = self.machine
        for ev in events:
            if isinstance(ev, E.TermsAgreed) and not m.producer:
                m.send_installment(self.channel.channel_id, 0)
            elif isinstance(ev, E.InstallmentReceived):
                full = self.channel.countersign(ev.proof) if ev.index else ev.proof
                m.accept_installment(full, 0)
                self.deliver = ev.index > 0
            elif isinstance(ev, E.PowerDeliveryStarted) and m.meters:
                self.deliver = True
            elif isinstance(ev, E.MeterReadingReceived):
                receipt = MeterReceipt(ev.reading, b"")
                m.send_receipt(signing.sign(self.key, receipt), 0)
                self.receipt = receipt.digest()
                if m.installments_paid < self.params.installments:
                    k = m.installments_paid
                    proof = self.channel.propose(self.paid_after(k), self.params.due_wh(k), self.receipt)
                    m.send_installment(proof, 0)
            elif isinstance(ev, E.InstallmentAccepted) and ev.index:
                self.channel.accept(ev.proof)

    def poll(self):
        """The charger's meter: the next signed reading once its chunk was paid for."""
        from plugpay.protocol import link, signing
        from plugpay.protocol.structures import MeterReading

        m = self.machine
        if not self.deliver or m.phase != link.CHARGING or m.readings >= self.params.installments:
            return
        self.deliver = False
        self.index += 1
        r = MeterReading(SESSION, self.index, self.params.due_wh(self.index), self.params.unit_price, self.index,
                         self.prev, 1790000000 + self.index, b"")
        r.meter_sig = signing.sign(self.meter_key, r)
        self.prev = r.digest()
        m.send_reading(r, 0)


def _write(f, kind, data):
    f.write(bytes((kind, len(data) >> 8, len(data) & 255)))
    f.write(data)


def _read(f):
    head = f.read(3)
    if len(head) < 3:
        return None, None
    return head[0], f.read((head[1] << 8) | head[2])


def record(vehicle_wallet, charger_wallet, channel_id, params, path):
    """Run both sides (CPython) and write the vehicle's transcript to ``path``."""
    vehicle = Side(vehicle_wallet, channel_id, True, params)
    charger = Side(charger_wallet, channel_id, False, params)
    with open(path, "wb") as f:
        moved = True
        while moved:
            moved = False
            charger.poll()
            for data in vehicle.machine.messages_to_send():
                _write(f, OUT, data)
                charger.handle(charger.machine.receive(data, 0))
                moved = True
            charger.poll()
            for data in charger.machine.messages_to_send():
                _write(f, IN, data)
                vehicle.handle(vehicle.machine.receive(data, 0))
                moved = True
    return vehicle


def phases(config, out):
    """Yield once per phase (the harness collects in between); fill ``out``.

    ``config``: ``wallet`` (the vehicle's folder), ``key`` (its device key, hex),
    ``channel`` (hex id), ``transcript`` (path), ``installments``, ``energy_wh``,
    ``unit_price``, ``ra_epoch`` and ``ra_pubkey`` (hex), ``modules`` (imports to measure,
    or None for ``MODULES``)."""
    yield True
    start = heap()
    out["heap_start_bytes"] = start
    imports = {}
    for name in config.get("modules") or MODULES:
        before = heap()
        __import__(name)
        yield True
        imports[name] = None if before is None else heap() - before
    out["imports"] = imports
    code = heap()
    out["code_heap_bytes"] = None if start is None else code - start
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet
    from plugpay.protocol import sealed, signing
    from plugpay.protocol.port import ticks_diff, ticks_us

    out["backend"] = signing.BACKEND
    wallet = Wallet.open(Storage(config["wallet"]), bytes.fromhex(config["key"]))
    params = parameters(config["installments"], config["energy_wh"], config["unit_price"])
    side = Side(wallet, bytes.fromhex(config["channel"]), True, params)
    yield True
    opened = heap()
    out["heap_open_bytes"] = None if opened is None else opened - code
    peak = opened
    messages = 0
    queue = []
    started = ticks_us()
    f = open(config["transcript"], "rb")
    while True:
        kind, data = _read(f)
        if kind is None:
            break
        if kind == OUT:
            if not queue:
                queue.extend(side.machine.messages_to_send())
            if not queue or queue.pop(0) != data:
                raise AssertionError("message %d differs from the recorded session" % messages)
        else:
            side.handle(side.machine.receive(data, 0))
        messages += 1
        kind = data = None
        yield True
        now = heap()
        if now is not None and now > peak:
            peak = now
    f.close()
    out["session_ms"] = ticks_diff(ticks_us(), started) / 1000.0
    latest = side.channel.latest()
    if latest.seq != config["installments"] - 1:
        raise AssertionError("the session ended at seq %d, not %d" % (latest.seq, config["installments"] - 1))
    close = side.channel.sign_close()
    request = wallet.refill_request(4)
    ra_key = bytes.fromhex(config["ra_pubkey"])
    sealed_request = sealed.seal_request(request, config["ra_epoch"], ra_key)[0]
    out["close_bytes"] = len(close)
    out["sealed_bytes"] = len(sealed_request)
    close = request = sealed_request = None
    yield True
    end = heap()
    if end is not None and end > peak:
        peak = end
    out["messages"] = messages
    out["seq"] = latest.seq
    out["heap_peak_bytes"] = None if peak is None else peak - start
    out["heap_peak_session_bytes"] = None if peak is None else peak - code


def harness(config):
    """The ``__harness_next__`` of a run under MicroPython: one phase a call, then the
    figures as one ``@@`` record."""
    figures = {}
    run = phases(config, figures)

    def step():
        if next(run, False):
            gc.collect()  # flags the collection the port runs once control is back in JS
            return True
        print("@@ " + json.dumps(figures))
        return False

    return step
