"""The memory benchmark's device half: one side (the vehicle) of a state-channel session as
a device runs it, under MicroPython, its transport replayed from a recording.

What runs is what ``boards/sim/main.py`` runs for a session: its imports, the board
profile, the wallet opened from files with the device key, the MQTT connector and the
MQTT client a first connection loads, the role's ``Device`` (with its side of the market),
then the session and the runner it makes (``Device.session``). Only the transport differs: ``ReplayLink`` stands in for the MQTT connection and gives the
runner, poll by poll, what the charger and the ledger sent in a session recorded on CPython
(``tools/memory_record.py``), and the time; every message the runner publishes must equal
the recorded one, so it is the same session byte for byte (RFC 6979 signatures, the same
wallet files, the same clock). The board is the simulated one on that clock.

Two passes, each in a fresh interpreter. ``order``: the run with ``builtins.__import__``
wrapped, which prints the modules the side loads, each after its own imports (lazy ones
during the session included). ``measure``: those modules imported first, one at a time,
then the same run; ``gc.mem_alloc()`` after a collection at each step gives the heap of
each import and the peak (on the WebAssembly port memory is freed only when control
returns to JavaScript, so the work yields at every import and every runner step).
"""
import gc
import json

OUT = 0  # a message the side publishes: topic, payload
IN = 1  # a message the side receives from its poll: topic, payload
POLL = 2  # one poll: the clock after it and how many IN records follow


def heap():
    """Bytes in use after a collection (real on the WebAssembly port only at a step start)."""
    gc.collect()
    mem_alloc = getattr(gc, "mem_alloc", None)
    return mem_alloc() if mem_alloc is not None else None


def write_record(f, kind, a, b=b""):
    """``kind`` with ``a`` (topic, or the clock of a POLL) and ``b`` (payload, or the count)."""
    if kind == POLL:
        f.write(bytes((POLL,)) + a.to_bytes(4, "big") + b.to_bytes(2, "big"))
        return
    topic = a.encode()
    f.write(bytes((kind, len(topic))) + topic + len(b).to_bytes(3, "big"))
    f.write(b)


def read_record(f):
    """``(kind, a, b)`` as written, or ``(None, None, None)`` at the end."""
    head = f.read(1)
    if not head:
        return None, None, None
    kind = head[0]
    if kind == POLL:
        rest = f.read(6)
        return POLL, int.from_bytes(rest[:4], "big"), int.from_bytes(rest[4:], "big")
    topic = f.read(f.read(1)[0]).decode()
    size = int.from_bytes(f.read(3), "big")
    return kind, topic, f.read(size)


class ReplayClock:
    """The session's time in ms: what the recording says it was at each poll."""

    scale = 1

    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t

    def now_ms(self):
        return self.t


class ReplayLink:
    """A connected ``firmware.mqtt.Mqtt`` as the runner uses it, replaying a transcript."""

    connects = 1
    connected = True

    def __init__(self, path, client_id, clock):
        self.f = open(path, "rb")
        self.client_id = client_id
        self.clock = clock
        self.messages = 0

    def subscribe(self, topic, qos):
        pass

    def publish(self, topic, payload, qos):
        kind, a, b = read_record(self.f)
        if kind != OUT or a != topic or b != payload:
            raise AssertionError("published message %d differs from the recorded session" % self.messages)
        self.messages += 1
        return True

    def poll(self, timeout_ms):
        kind, t, count = read_record(self.f)
        if kind != POLL:
            raise AssertionError("polled after message %d where the recorded session published" % self.messages)
        self.clock.t = t
        out = []
        for _ in range(count):
            kind, topic, payload = read_record(self.f)
            out.append((topic, payload))
            self.messages += 1
        return out

    def finished(self):
        """True when the whole transcript was replayed."""
        done = read_record(self.f)[0] is None
        self.f.close()
        return done


def board_of(config, clock):
    """The vehicle's simulated board of ``boards/sim/sized.py``, on the replay's clock."""
    from plugpay.boards.sim.board import SimBoard
    from plugpay.boards.sim.clock import ScaledView
    from plugpay.boards.sim.power import Battery
    from plugpay.boards.sim.sized import BATTERY_MARGIN_WH

    capacity = config["energy_wh"] + 2 * BATTERY_MARGIN_WH
    rate = max(150000, config["power_w"])
    return SimBoard("vehicle", ScaledView(clock, config["scale"]), config["power_w"],
                    battery=Battery(capacity, BATTERY_MARGIN_WH, rate, rate))


def _quiet(text):
    pass


def run(config, out):
    """The side's life for one session, a step per yield; fills ``out``."""
    from plugpay.boards.common import link
    from plugpay.boards.common import profile as P
    from plugpay.boards.sim import main as device
    from plugpay.firmware.role import Device, Plan, record, reporter
    from plugpay.firmware.session import Terms
    from plugpay.protocol import link_messages as M
    from plugpay.protocol import signing
    from plugpay.protocol.port import ticks_diff, ticks_us

    profile = P.load(config["profile"], "sim")
    wallet = device._wallet(profile)
    connect = link.connector(profile)  # the device's way to the broker (nothing connects here) ...
    from plugpay.firmware import mqtt_socket  # noqa: F401 (... but its first connection loads the client)

    device._boards(profile)  # the device's board factory; the replay's board is the same on its clock
    clock = ReplayClock()
    board = board_of(config, clock)
    role = Device(wallet, Plan.from_profile(profile), connect, lambda terms, name: board,
                  lambda: config["timestamp"], _quiet, reporter(_quiet))
    out["backend"] = signing.BACKEND
    yield "open"
    transport = ReplayLink(config["transcript"], config["client_id"], clock)
    params = M.ChargeParameters(config["energy_wh"], config["start"], config["end"], config["power_w"],
                                config["unit_price"], config["installments"], config["tolerance"])
    plan = role.plan
    terms = Terms(bytes.fromhex(config["session_id"]), params, plan.mode, plan.producer, plan.initiator,
                  window=config["window"], htlc_timeout=config["htlc_timeout"])
    runner = _runner(role, terms, transport, clock)
    session = runner.session
    started = ticks_us()
    runner.flush()
    steps = 0
    while not session.finished:
        runner.step()
        steps += 1
        yield "session"
    out["session_ms"] = ticks_diff(ticks_us(), started) / 1000.0
    out["steps"] = steps
    out["messages"] = transport.messages
    if not transport.finished():
        raise AssertionError("the session finished before the recording did")
    out["record"] = record(plan, terms, session, board)


def _runner(role, terms, transport, clock):
    """The role's session and runner (``Device.session``), or, in a tree from before the
    role had it (a ``--baseline``), what that tree's role built."""
    if hasattr(role, "session"):
        return role.session(terms, transport, clock)
    from plugpay.firmware.runner import SessionRunner
    from plugpay.firmware.session import Session

    session = Session(role.wallet, role.make_board(terms, role.plan.role), terms, clock(), timestamp=role.unix_s())
    return SessionRunner(session, transport, now=clock, on_step=role.on_step)


def _order(config, out):
    """Pass ``order``: the modules the run loads, each after its own imports."""
    import builtins
    import sys

    seen = []
    stack = []  # the imports under way, outermost first
    merged = set()  # modules of an import cycle: loaded by the cycle's first module
    original = builtins.__import__

    def traced(name, globals_=None, locals_=None, fromlist=(), level=0):
        # A module is in sys.modules from the start of its import, so the call that finds
        # it missing is the one that imports it: it is complete, after everything it
        # imported, when that call returns. (The VM imports each name of ``from P import
        # M`` by a call of its own, naming P.M.)
        full = name
        if level:
            full = globals_["__name__"]
            for _ in range(level if "__path__" not in globals_ else level - 1):
                full = full.rsplit(".", 1)[0]
            full = full + "." + name if name else full
        parts = full.split(".")
        chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        fresh = [m for m in chain if m not in sys.modules]
        if full in stack:  # a cycle: what started after it comes with it
            merged.update(stack[stack.index(full) + 1:])
        stack.extend(fresh)
        try:
            module = original(name, globals_, locals_, fromlist, level)
        finally:
            del stack[len(stack) - len(fresh):]
        seen.extend(m for m in fresh if m.startswith("plugpay.") and m not in merged)
        return module

    builtins.__import__ = traced
    try:
        for _ in run(config, out):
            yield
    finally:
        builtins.__import__ = original
    out["modules"] = seen


def _measure(config, out):
    """Pass ``measure``: each module's heap, then the run's peak."""
    import sys

    yield
    start = heap()
    imports = {}
    for name in config["modules"]:
        before = heap()
        __import__(name)
        yield
        imports[name] = heap() - before
    code = heap()
    out["imports"] = imports
    out["code_heap_bytes"] = code - start
    peak = code
    opened = None
    known = set(sys.modules)
    for phase in run(config, out):
        yield
        now = heap()
        if phase == "open":
            opened = now
        peak = max(peak, now)
    out["loaded_during_run"] = [m for m in sys.modules if m not in known]
    out["heap_open_bytes"] = opened - code
    out["heap_peak_bytes"] = peak - start
    out["heap_peak_session_bytes"] = peak - code


def harness(config):
    """The ``__harness_next__`` of a run under MicroPython: one step a call, then the
    figures as one ``@@`` record."""
    figures = {}
    steps = (_order if config["pass"] == "order" else _measure)(config, figures)

    def step():
        for _ in steps:
            gc.collect()  # flags the collection the port runs once control is back in JS
            return True
        print("@@ " + json.dumps(figures))
        return False

    return step
