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
Exit codes: 0 both sides settled; 1 a side did not settle or a console was lost during
the session; 2 bad options; 3 a board's console or the broker cannot be reached.
"""
import sys
import tempfile
import threading
import time

from plugpay.firmware import console as C
from plugpay.firmware.progress import progress_text
from plugpay.firmware.session import CHANNEL, HTLC, Terms
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.tools import arg_types, broker_args, dashboard, demo, errors, progress_line, session_progress, \
    session_record

HELLO_WAIT_S = 5.0
PROCESS_HELLO_WAIT_S = 60.0
SCENARIOS = {"g2v": False, "v2g": True}  # does the vehicle produce?


class UsageError(errors.UsageError):
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
    p.add_argument("--heap", type=arg_types.HEAP, default=2 * 1024 * 1024, metavar="BYTES",
                   help="mpy sides: the MicroPython heap (-X heapsize; default 2 MiB)")
    p.add_argument("--baud", type=arg_types.integer(300, 4000000), default=115200,
                   help="serial consoles' baud rate (default 115200)")
    p.add_argument("--ra-dir", help="with a real board: the host's RA directory, to provision a simulated board")
    add_unlock_options(p)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="g2v",
                   help="g2v: the charger produces; v2g: the vehicle produces (default g2v)")
    p.add_argument("--mode", choices=["channel", "htlc"], default="channel", help="payment (default channel)")
    p.add_argument("-n", "--installments", type=arg_types.INSTALLMENTS, default=None,
                   help="installments N (default 100 for a channel, 10 for HTLCs)")
    p.add_argument("--energy-wh", type=arg_types.ENERGY_WH, default=20000, help="energy to trade, Wh (default 20000)")
    p.add_argument("--price", type=arg_types.AMOUNT, default=300,
                   help="unit price per kWh, smallest units (default 300)")
    p.add_argument("--power-w", type=arg_types.POWER_W, default=11000, help="charging power, W (default 11000)")
    p.add_argument("--scale", type=arg_types.number(), default=2000.0,
                   help="simulated boards: simulated seconds per real second (default 2000)")
    broker_args.add_broker(p, "the MQTT broker (mqtt://host:port or mqtts://host:port); needed with a real board")
    broker_args.add_gateway_login(p, own_url=True)
    p.add_argument("--record", metavar="FILE", help="write the session record (JSON) here")
    p.add_argument("--dir", help="keep the run's files here (default: a temporary directory, removed)")
    p.add_argument("--timeout", type=arg_types.SECONDS, default=120.0,
                   help="give up after this many seconds (default 120)")
    dashboard.add_options(p)
    p.set_defaults(func=run)
    return p


def run(args):
    try:
        plan = _plan(args)
        hosting = _hosting(args)
    except ValueError as e:  # UsageError, and broker_args' refusals
        print("plugpay hil: error: %s" % e, file=sys.stderr)
        return errors.USAGE
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
    real = [spec for spec in (args.vehicle, args.charger) if spec not in LOCAL]
    if "mpy" in (args.vehicle, args.charger):
        from plugpay.tools import micropython as mpy

        reason = mpy.unix_unavailable_reason()
        if reason:
            raise UsageError(reason)
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
        self.waits_shown = 0
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
        """The board's steady report (``STEP``), with the energy and exposure of its newest
        progress row, which come more often."""
        view = self.console.view
        step = view.step
        if step is None:
            text = "starting"
        else:
            _, exposure, energy, _ = view.timeline[-1] if view.timeline else (0, step[4], step[3], 0)
            text = progress_text(step[1], step[2], energy, exposure, step[5])
        return "%s (%s, console): %s%s" % (self.name, "producer" if self.producer else "consumer", text,
                                           ", LOST" if self.console.lost else "")

    def waits(self):
        """The waits the board announced since the last call."""
        view = self.console.view
        new = view.waits[self.waits_shown:]
        self.waits_shown += len(new)
        return new

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
            if real:  # the sessions only: the running host's `ledger up` shows its ledger
                serving = dashboard.serving(args, "plugpay hil", say=_say)
            else:
                serving = dashboard.serving(args, "plugpay hil", host.loop, host.lc.config, host.lc.secrets, _say)
            with serving as live:
                return _session(args, params, sides, live, host)
    except ConnectionError as e:  # a board's console that does not answer
        print("plugpay hil: error: %s" % e, file=sys.stderr)
        return errors.UNREACHABLE
    finally:
        for side in sides:
            side.close()


def _session(args, params, sides, live, host):
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
    title = "%s %s: vehicle %s and charger %s" % (args.scenario, args.mode, args.vehicle, args.charger)
    progress_line.watch(sides, args.timeout, lambda status: live.set_session(
        "session", _progress(title, params, sides, budget // params.installments, status)))
    for side in sides:
        if not isinstance(side, RealSide):
            side.wait(2)
    record = _record(args, Terms(session_id, params, mode, False, True), started, consumer, producer)
    _heights(record, host)
    if args.record:
        session_record.write(args.record, record)
        _say("session record: %s" % args.record)
    ok = _summary(sides, record)
    return 0 if ok else 1


def _progress(title, params, sides, per_installment, status):
    """The session as the dashboard shows it (``session_progress``)."""
    progress, onchain = [], []
    for s in sides:
        if isinstance(s, RealSide):
            progress.append(session_progress.console_side(s, per_installment))
            onchain.extend(session_progress.console_onchain(s))
        else:
            progress.append(session_progress.device_side(s, per_installment))
            onchain.extend(session_progress.device_onchain(s))
    return session_progress.progress(title, params, progress, onchain, status)


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
            entries = [session_record.onchain_entry(raw, role, at)
                       for raw, at in zip(side.session.onchain, side.session.onchain_at)]
        for entry in entries:
            if entry["id"] not in seen:
                seen.add(entry["id"])
                onchain.append(entry)
    sides = {"consumer": _side(consumer, "consumer"), "producer": _side(producer, "producer")}
    return session_record.build(terms, args.scenario, started, sides, onchain)


def _heights(record, host):
    """The block height of each of the record's transactions, asked of the host's gateway
    on a connection of this run's own."""
    from plugpay.firmware.gateway_client import GatewayClient

    mqtt = host.devices.device()
    mqtt.connect()
    try:
        session_record.locate(record, GatewayClient(mqtt).query)
    finally:
        mqtt.close()


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
