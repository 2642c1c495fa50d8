"""``plugpay hil``: a charging session between a vehicle and a charger, real boards or simulated.

Each side is ``sim`` (a simulated board in this process, provisioned and run as ``plugpay
demo`` runs them) or a serial port: a real board running the plugpay firmware, whose
console (``firmware/console.py``) this command reads with pyserial. The host sends a real
board the session's terms (``START``); the session itself runs on the boards, over the
broker, and the console reports wallet status, meter readings, progress and the end.

Hosts: with simulated boards only, a fresh host stack (RA, 4 replicas, broker or
``--broker``, gateway) starts here. A real board's wallet belongs to the host it was
provisioned with (``plugpay provision``), so with a real board ``--broker`` names that
host's broker, and a simulated board beside it is provisioned in person with that host's
RA (``--ra-dir`` and its unlock options).

A console that fails (garbage, bad checksums: counted; the port lost: an error naming it)
never stops the other side: its session ends by its own timeouts and close or dispute,
which bound what it can lose. ``--record FILE`` writes the session record
(``tools/session_record.py``) for ``plugpay report``, also for a session that failed.
Exit codes: 0 both sides settled; 1 a side did not settle or a console was lost; 2 bad
options.
"""
import sys
import tempfile
import threading
import time

from plugpay.firmware import console as C
from plugpay.firmware.session import CHANNEL, HTLC, Terms
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.tools import broker_args, demo, session_record

HELLO_WAIT_S = 5.0
PROCESS_HELLO_WAIT_S = 60.0
SCENARIOS = {"g2v": False, "v2g": True}  # does the vehicle produce?


class UsageError(ValueError):
    """An option this command cannot use (exit 2)."""


def add_parser(subparsers):
    """Register ``hil`` on the ``plugpay`` command line."""
    from plugpay.tools.ra_cli import add_unlock_options

    p = subparsers.add_parser("hil", help="a charging session between real (serial console) or simulated boards; "
                              "writes a session record", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--vehicle", required=True, metavar="sim|mpy|PORT",
                   help="sim (a simulated board in this process), mpy (a simulated board as a MicroPython "
                   "unix-port process), or the vehicle board's serial port")
    p.add_argument("--charger", required=True, metavar="sim|mpy|PORT", help="sim, mpy, or the charger board's "
                   "serial port")
    p.add_argument("--heap", type=int, default=2 * 1024 * 1024, metavar="BYTES",
                   help="mpy sides: the MicroPython heap (-X heapsize; default 2 MiB)")
    p.add_argument("--baud", type=int, default=115200, help="serial consoles' baud rate (default 115200)")
    p.add_argument("--ra-dir", help="with a real board: the host's RA directory, to provision a simulated board")
    add_unlock_options(p)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="g2v",
                   help="g2v: the charger produces; v2g: the vehicle produces (default g2v)")
    p.add_argument("--mode", choices=["channel", "htlc"], default="channel", help="payment (default channel)")
    p.add_argument("-n", "--installments", type=int, default=None,
                   help="installments N (default 100 for a channel, 10 for HTLCs)")
    p.add_argument("--energy-wh", type=int, default=20000, help="energy to trade, Wh (default 20000)")
    p.add_argument("--price", type=int, default=300, help="unit price per kWh, smallest units (default 300)")
    p.add_argument("--power-w", type=int, default=11000, help="charging power, W (default 11000)")
    p.add_argument("--scale", type=float, default=2000.0,
                   help="simulated boards: simulated seconds per real second (default 2000)")
    broker_args.add_broker(p, "the MQTT broker (mqtt://host:port or mqtts://host:port); needed with a real board")
    broker_args.add_gateway_login(p, own_url=True)
    p.add_argument("--record", metavar="FILE", help="write the session record (JSON) here")
    p.add_argument("--dir", help="keep the run's files here (default: a temporary directory, removed)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (default 120)")
    p.set_defaults(func=run)
    return p


def run(args):
    try:
        plan = _plan(args)
        hosting = _hosting(args)
    except (UsageError, ValueError) as e:
        print("plugpay hil: error: %s" % e, file=sys.stderr)
        return 2
    if args.dir:
        return _run(args, plan, hosting, args.dir)
    with tempfile.TemporaryDirectory(prefix="plugpay-hil-") as directory:
        return _run(args, plan, hosting, directory)


LOCAL = ("sim", "mpy")  # sides this command provisions and runs itself


def _hosting(args):
    """With a real board, the running host's broker (an ``Endpoint``); else the broker
    keywords of the host stack started here."""
    if any(spec not in LOCAL for spec in (args.vehicle, args.charger)):
        if args.gateway_broker or args.gateway_password_file:
            raise UsageError("--gateway-broker and --gateway-password-file are for the host started here; with a "
                             "real board the running host's gateway serves")
        return broker_args.endpoint(args)
    return broker_args.host_stack(args)


def _plan(args):
    n = args.installments or (100 if args.mode == "channel" else 10)
    if args.mode == "htlc" and n > 64:
        raise UsageError("an HTLC series has at most 64 HTLCs; use -n 64 or less")
    for name in ("energy_wh", "price", "power_w"):
        if getattr(args, name) < 1:
            raise UsageError("--%s must be at least 1" % name.replace("_", "-"))
    if n < 1 or not args.scale > 0 or not args.timeout > 0:
        raise UsageError("-n, --scale and --timeout must be positive")
    real = [spec for spec in (args.vehicle, args.charger) if spec not in LOCAL]
    if "mpy" in (args.vehicle, args.charger):
        from plugpay.tools import micropython as mpy

        reason = mpy.unix_unavailable_reason()
        if reason:
            raise UsageError(reason)
        if args.heap < 64 * 1024:
            raise UsageError("--heap must be at least 65536 bytes, got %d" % args.heap)
        if real:
            raise UsageError("an mpy side runs with the host started here: give it a sim or mpy side beside it")
    if real and not args.broker:
        raise UsageError("a real board needs --broker: the broker of the host its wallet was provisioned with")
    if real and len(real) < 2 and not args.ra_dir:
        raise UsageError("a simulated board beside a real one is provisioned with that host's RA: give --ra-dir "
                         "and its unlock options")
    return M.ChargeParameters(args.energy_wh, 1790000000, 1790007200, args.power_w, args.price, n, 5)


def _say(text):
    print(text, flush=True)


class ExternalHost:
    """A running host (``plugpay ledger up``) for simulated boards beside real ones: its
    broker (``devices``, a ``broker.Endpoint``), and its RA directory for identities in
    person."""

    def __init__(self, devices, ra_dir=None, unlock=None):
        self.devices = devices
        self.ra_dir = ra_dir
        self.unlock = unlock
        self.authority = None
        self.ra_pubkeys = None

    def __enter__(self):
        if self.ra_dir:
            from plugpay.host import ra

            self.authority = ra.RegistrationAuthority.open(self.ra_dir, self.unlock)
            self.ra_pubkeys = {epoch: key for epoch, key, _ in ra.public_epochs(self.ra_dir)}
        return self

    def __exit__(self, *exc):
        if self.authority is not None:
            self.authority.close()


class RealSide:
    """A board that runs its session itself, spoken to over its console: a real board on a
    serial port, or a MicroPython process (``proc``) on its standard input and output."""

    def __init__(self, name, port, initiator, producer, baud, proc=None):
        from plugpay.tools.console_host import ConsoleLink

        self.name = name
        self.initiator = initiator
        self.producer = producer
        self.proc = proc
        self.console = ConsoleLink(port, name, baud)
        wait = HELLO_WAIT_S if proc is None else PROCESS_HELLO_WAIT_S  # a process imports everything first
        self.console.send(C.ASK, {"what": "hello"})
        self.console.send(C.ASK, {"what": "status"})
        if not self.console.wait(lambda v: v.status is not None and v.hello is not None, wait):
            why = self.console.lost or "no console frames within %g s: is it running the plugpay firmware?" % wait
            self.console.close()
            raise ConnectionError("%s on %s: %s" % (name, port, why))
        hello = self.console.view.hello
        if hello.get("kind") not in session_record.KINDS or hello.get("role") != name:
            self.console.close()
            raise ConnectionError("%s on %s says it is a %r %r board, not a %s (sim, esp32 or rpi)" % (
                name, port, hello.get("kind"), hello.get("role"), name))

    def start(self, terms, fund):
        self.console.send(C.START, C.terms_payload(terms, int(time.time()), fund))

    def over(self):
        v = self.console.view
        return v.done is not None or self.console.lost is not None or bool(v.errors)

    def status(self):
        v = self.console.view
        row = v.timeline[-1] if v.timeline else [0, 0, 0, 0]
        return "%s (%s, console): %d Wh, %d installments, exposure %d%s" % (
            self.name, "producer" if self.producer else "consumer", row[2], len(v.installments), row[1],
            ", LOST" if self.console.lost else "")

    def close(self):
        self.console.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


def _mpy_side(name, host, directory, initiator, producer, args):
    """A simulated board in a MicroPython unix-port process, provisioned here."""
    from plugpay.tools import mpy_board
    from plugpay.tools.console_host import ProcessPort

    folder = mpy_board.provision(name, host, directory)
    role = "vehicle" if name.startswith("vehicle") else "charger"
    proc = mpy_board.start(mpy_board.config(name, role, folder, host, args.power_w, args.scale), directory, args.heap)
    _say("  %s: a MicroPython unix-port process (pid %d, heap %d bytes)" % (name, proc.pid, args.heap))
    return RealSide(name, ProcessPort(proc), initiator, producer, args.baud, proc)


def _run(args, params, hosting, directory):
    from plugpay.host.stack import HostStack
    from plugpay.tools.ra_cli import unlock_from_args

    vehicle_produces = SCENARIOS[args.scenario]
    specs = (("vehicle", args.vehicle, True, vehicle_produces), ("charger", args.charger, False, not vehicle_produces))
    real = any(spec not in LOCAL for _, spec, _, _ in specs)
    _say("plugpay hil: %s, %s, N = %d, %d Wh at %d per kWh; vehicle %s, charger %s" % (
        args.scenario, args.mode, params.installments, params.energy_wh, params.unit_price, args.vehicle,
        args.charger))
    if real:
        unlock = unlock_from_args(args) if args.ra_dir else None
        host = ExternalHost(hosting, args.ra_dir, unlock)
    else:
        host = HostStack(directory, progress=lambda t: _say("  host: " + t), **hosting)
    sides = []
    try:
        with host:
            for name, spec, initiator, producer in specs:
                if spec == "sim":
                    sides.append(demo.Device(name, initiator, producer, host, directory, params, args))
                elif spec == "mpy":
                    sides.append(_mpy_side(name, host, directory, initiator, producer, args))
                else:
                    sides.append(RealSide(name, spec, initiator, producer, args.baud))
            return _session(args, params, sides)
    except ConnectionError as e:
        print("plugpay hil: error: %s" % e, file=sys.stderr)
        return 1
    finally:
        for side in sides:
            side.close()


def _session(args, params, sides):
    consumer = [s for s in sides if not s.producer][0]
    producer = [s for s in sides if s.producer][0]
    sims = [s for s in sides if isinstance(s, demo.Device)]
    if len(sims) == 2:  # one process simulates both boards: one cable, as in the demo
        consumer.board.connect(producer.board)
        consumer.board.cable.lock = threading.Lock()
        producer.board.clock = consumer.board.clock
        consumer.board.clock.lock = threading.Lock()
    budget = params.energy_wh * params.unit_price // 1000
    fund = budget + 1000
    if isinstance(consumer, demo.Device):
        consumer.fund(fund)
    mode = CHANNEL if args.mode == "channel" else HTLC
    session_id = link.new_session_id()
    started = int(time.time())
    for side in sides:
        terms = Terms(session_id, params, mode, side.producer, side.initiator, window=10, htlc_timeout=10 ** 6)
        if isinstance(side, RealSide):
            side.start(terms, fund if side is consumer else 0)
        else:
            side.start(terms)
    _say("session %s: topics plugpay/link/%s/..." % (session_id.hex()[:8], session_id.hex()))
    _watch(sides, args.timeout, budget // params.installments)
    record = _record(args, Terms(session_id, params, mode, False, True), started, consumer, producer)
    if args.record:
        session_record.write(args.record, record)
        _say("session record: %s" % args.record)
    ok = _summary(sides, record)
    return 0 if ok else 1


def _over(side):
    if isinstance(side, RealSide):
        return side.over()
    return side.session.finished or side.error is not None or not side.thread.is_alive()


def _watch(sides, timeout, per_installment):
    start = time.monotonic()
    last = 0.0
    while True:
        done = all(_over(s) for s in sides)
        if done or time.monotonic() - last >= 0.5:
            last = time.monotonic()
            _say("  t=%5.1fs " % (last - start) + " | ".join(
                s.status() if isinstance(s, RealSide) else demo._status(s, per_installment) for s in sides))
        if done or time.monotonic() - start > timeout:
            break
        time.sleep(0.1)
    for side in sides:
        if not isinstance(side, RealSide):
            side.wait(2)


def _side(side, role):
    if isinstance(side, RealSide):
        return side.console.view.side(side.name, side.initiator)
    return session_record.side_of(side.session, side.name, "sim", side.initiator)


def _record(args, terms, started, consumer, producer):
    onchain, seen = [], set()
    for role, side in (("consumer", consumer), ("producer", producer)):
        if isinstance(side, RealSide):
            entries = [dict(e, side=role) for e in side.console.view.onchain]
        else:
            entries = [session_record.onchain_entry(raw, role) for raw in side.session.onchain]
        for entry in entries:
            if entry["digest"] not in seen:
                seen.add(entry["digest"])
                onchain.append(entry)
    sides = {"consumer": _side(consumer, "consumer"), "producer": _side(producer, "producer")}
    return session_record.build(terms, args.scenario, started, sides, onchain)


def _summary(sides, record):
    ok = True
    _say("summary")
    for side in sides:
        role = "producer" if side.producer else "consumer"
        s = record["sides"][role]
        _say("  %s (%s): link %s, %s; %d Wh, payout %s, max exposure %d" % (
            side.name, role, s["stop_code"] or "not stopped", "settled" if s["finished"] else "NOT settled",
            s["energy_wh"], "-" if s["payout"] is None else s["payout"], s["max_exposure"]))
        ok = ok and s["finished"]
        if isinstance(side, RealSide):
            view = side.console.view
            if view.problems:
                _say("    console problems: %s" % ", ".join("%d %s" % (n, code) for code, n in sorted(
                    view.problems.items())))
                for text in view.problem_texts[:3]:
                    _say("      " + text)
            for text in view.errors:
                print("plugpay hil: %s reported: %s" % (side.name, text), file=sys.stderr)
            if side.console.lost:
                ok = False
                print("plugpay hil: error: %s" % side.console.lost, file=sys.stderr)
        elif side.error is not None:
            print("plugpay hil: %s failed: %s" % (side.name, side.error), file=sys.stderr)
    _say("  on-chain transactions: %d (%s)" % (len(record["onchain"]), ", ".join(e["op"] for e in record["onchain"])))
    _say("  bound b/N for the consumer: %d; result: %s" % (record["per_installment"], "OK" if ok else "FAILED"))
    return ok
