"""``plugpay demo``: a whole charging session on this machine, shown live.

What runs: a fresh RA, a ledger of 4 replica processes (``--engine cometbft``: 4 CometBFT
validators, each with its ABCI application), the embedded MQTT broker (or the one
``--broker`` names) and the gateway (``host.stack``); two device wallets provisioned
the way boards are (identity registered with the RA in person, one-time keys registered
and the consumer funded over MQTT through the gateway); then a vehicle and a charger (or
two vehicles), each in its own thread with its own MQTT connection (its user name the
session's id), simulated board and wallet, run one session (``firmware.session`` over
``firmware.runner``). A line per moment shows energy, installments and each side's
exposure; the summary gives the on-chain transactions, the maximum exposure of each side
against the b/N bound and the RA's audit of the session's accounts.
"""
import argparse
import collections
import os
import tempfile
import threading
import time

from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ScaledClock
from plugpay.boards.sim.power import Battery, Meter
from plugpay.firmware import issuing
from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.progress import WAIT, Progress, wait_text
from plugpay.firmware.refill import REFILLED, refill
from plugpay.firmware.runner import SessionRunner
from plugpay.firmware.session import CHANNEL, HTLC, Misbehaviour, Session, Terms
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import link
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import urandom
from plugpay.tools import arg_types, broker_args, dashboard, progress_line, session_progress
from plugpay.tools.errors import UsageError

MISBEHAVIOURS = {
    "none": (None, None),
    "producer-stops": ("producer", lambda n: Misbehaviour(stop_delivering_after=max(1, n // 2))),
    "consumer-stops": ("consumer", lambda n: Misbehaviour(stop_paying_at=max(1, n // 2))),
    "stale-close": ("consumer", lambda n: Misbehaviour(stale_close=True)),
}
SCENARIOS = {  # (initiator's name, responder's name, does the initiator produce?)
    "g2v": ("vehicle", "charger", False),
    "v2g": ("vehicle", "charger", True),
    "v2v": ("vehicle", "vehicle-2", False),
}
KEYS = 64
PAUSE_MS = 1000  # how long --pause holds the session


def add_arguments(p):
    p.add_argument("--mode", choices=["channel", "htlc"], default="channel",
                   help="payment: one state channel (default) or a series of N HTLCs")
    p.add_argument("-n", "--installments", type=arg_types.INSTALLMENTS, default=None,
                   help="installments N (default 100 for a channel, 10 for HTLCs: each HTLC is on-chain)")
    p.add_argument("--energy-wh", type=arg_types.ENERGY_WH, default=20000, help="energy to trade, Wh (default 20000)")
    p.add_argument("--price", type=arg_types.AMOUNT, default=300,
                   help="unit price per kWh, smallest units (default 300)")
    p.add_argument("--power-w", type=arg_types.POWER_W, default=11000, help="charging power, W (default 11000)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="g2v",
                   help="g2v: the charger produces; v2g: the vehicle produces, the grid side pays; "
                   "v2v: a second vehicle produces (default g2v)")
    p.add_argument("--misbehave", choices=sorted(MISBEHAVIOURS), default="none",
                   help="a cheating side: the producer stops delivering half-way, the consumer stops paying "
                   "half-way, or the consumer closes the channel with a stale state (default none)")
    p.add_argument("--pause", choices=["vehicle", "charger", "vehicle-2"], metavar="SIDE",
                   help="that side's owner (vehicle, charger or vehicle-2) pauses half-way for %g s, then "
                   "resumes; energy and payments stop meanwhile" % (PAUSE_MS / 1000))
    p.add_argument("--scale", type=arg_types.number(), default=2000.0,
                   help="simulated seconds per real second for the boards' energy flow (default 2000: "
                   "20 kWh at 11 kW in about a second)")
    broker_args.add_broker(p, "use this MQTT broker (mqtt://host:port, or mqtts:// with --ca) instead of the "
                           "embedded one")
    broker_args.add_gateway_login(p, own_url=True)
    p.add_argument("--engine", choices=["pbft", "cometbft"], default="pbft",
                   help="the ledger's consensus: our PBFT replicas (default) or CometBFT validators")
    p.add_argument("--dir", help="keep the run's files here (default: a temporary directory, removed)")
    p.add_argument("--timeout", type=arg_types.SECONDS, default=120.0,
                   help="give up after this many seconds (default 120)")
    p.add_argument("--record", metavar="FILE", help="write the session record (JSON, for plugpay report) here")
    p.add_argument("--micropython", action="store_true",
                   help="run the vehicle and the charger each as a MicroPython unix-port process (a whole device: "
                   "wallet, link, crypto, MQTT client, simulated board), driven over its console as plugpay hil "
                   "drives a board (g2v or v2g, no misbehaviour or pause)")
    p.add_argument("--heap", type=arg_types.HEAP, default=2 * 1024 * 1024, metavar="BYTES",
                   help="with --micropython: each process's MicroPython heap (-X heapsize; default 2 MiB)")
    dashboard.add_options(p)


def run(args):
    if args.micropython:
        return _micropython(args)
    n = args.installments or (100 if args.mode == "channel" else 10)
    if args.pause is not None and args.pause not in SCENARIOS[args.scenario][:2]:
        raise UsageError("--pause %s: the %s scenario has a %s and a %s" % ((args.pause, args.scenario)
                                                                           + SCENARIOS[args.scenario][:2]))
    if args.mode == "htlc" and n > 64:
        raise UsageError("an HTLC series has at most 64 HTLCs (each is two ledger transactions); use -n 64 or less")
    params = M.ChargeParameters(args.energy_wh, 1790000000, 1790007200, args.power_w, args.price, n, 5)
    if args.dir:
        return _run(args, params, args.dir)
    with tempfile.TemporaryDirectory(prefix="plugpay-demo-") as directory:
        return _run(args, params, directory)


def _micropython(args):
    """The demo with both devices as MicroPython processes: ``plugpay hil --vehicle mpy
    --charger mpy`` with the demo's options."""
    from plugpay.tools import hil_cli

    if args.scenario == "v2v" or args.misbehave != "none" or args.pause is not None:
        raise UsageError("--micropython runs g2v or v2g sessions without --misbehave or --pause")
    hil_args = argparse.Namespace(**vars(args))
    hil_args.vehicle = hil_args.charger = "mpy"
    hil_args.baud, hil_args.ra_dir = 115200, None
    return hil_cli.run(hil_args)


def _say(text):
    print(text, flush=True)


def _run(args, params, directory):
    from plugpay.host.stack import HostStack

    hosting = broker_args.host_stack(args)  # bad broker options are refused before anything starts
    _say("plugpay demo: %s, %s, N = %d, %d Wh at %d per kWh, misbehaviour: %s, ledger: %s" % (
        args.scenario, args.mode, params.installments, params.energy_wh, params.unit_price, args.misbehave,
        args.engine))
    with HostStack(directory, progress=lambda t: _say("  host: " + t), engine=args.engine, **hosting) as host, \
            dashboard.serving(args, "plugpay demo", host.loop, host.lc.config, host.secrets, _say) as live:
        first, second, first_produces = SCENARIOS[args.scenario]
        sides = []
        for name, initiator, producer in ((first, True, first_produces), (second, False, not first_produces)):
            sides.append(Device(name, initiator, producer, host, directory, params, args))
        consumer = [s for s in sides if not s.producer][0]
        producer = [s for s in sides if s.producer][0]
        # One process simulates both boards: one cable, so the consumer measures what flows.
        consumer.board.connect(producer.board)
        consumer.board.cable.lock = threading.Lock()
        producer.board.clock = consumer.board.clock
        consumer.board.clock.lock = threading.Lock()
        budget = params.energy_wh * params.unit_price // 1000
        consumer.fund(budget + 1000)
        _say("  %s funded with %d by the faucet" % (consumer.name, budget + 1000))
        mode = CHANNEL if args.mode == "channel" else HTLC
        session_id = link.new_session_id()
        who, make = MISBEHAVIOURS[args.misbehave]
        for side in sides:
            cheat = make(params.installments) if who == ("producer" if side.producer else "consumer") else None
            terms = Terms(session_id, params, mode, side.producer, side.initiator, window=10,
                          htlc_timeout=10 ** 6)
            side.start(terms, cheat, pause=args.pause == side.name)
        _say("session %s: topics plugpay/link/%s/..." % (session_id.hex()[:8], session_id.hex()))
        started = int(time.time())
        title = "%s %s: %s" % (args.scenario, args.mode, " and ".join(s.name for s in sides))

        def show(status):
            live.set_session("session", _progress(title, params, sides, budget // params.installments, status))

        progress_line.watch(sides, args.timeout, show)
        ok = all([side.wait(2) for side in sides])
        show("settled" if ok else "FAILED")
        _summary(host, consumer, producer, params, budget, ok)
        if args.record:
            _write_record(args, consumer, producer, started, who)
        for side in sides:
            side.close()
    return 0 if ok else 1


class Device:
    """One simulated board with its wallet on files: provisioned over one MQTT connection,
    and each session on a connection of its own (a fresh client id, so the broker cannot
    link two sessions of one device; the session's id as user name, which a deployment
    broker's ACL opens the session's link topics to)."""

    def __init__(self, name, initiator, producer, host, directory, params, args, keys=KEYS):
        self.host = host
        self.name = name
        self.initiator = initiator
        self.producer = producer
        self.clock = ScaledClock(args.scale)
        vehicle = name.startswith("vehicle")
        battery = Battery(80000, 70000 if producer else 10000, 150000, 150000) if vehicle else None
        meter = None if initiator else Meter(urandom(32))  # the responder (the charger) meters
        self.board = SimBoard(name, self.clock, args.power_w, battery=battery, meter=meter)
        self.mqtt = host.devices.device()
        self.mqtt.connect()
        self.gateway = GatewayClient(self.mqtt)
        folder = os.path.join(directory, "wallet-" + name)
        os.makedirs(folder)
        self.wallet = Wallet.create(Storage(folder), urandom(32), host.ra_pubkeys)
        fields = {"name": "Demo " + name, "licence": "DEMO-" + name.upper(),
                  "vehicle_id": "1PLUGPAY0%08d" % (int.from_bytes(urandom(4), "big") % 10 ** 8)}
        self.wallet.set_identity(host.authority.register_identity(fields, self.wallet.device_pubkey()))
        report = refill(self.wallet, self.gateway, keys, keys)
        if report.status != REFILLED:
            raise RuntimeError("%s: key registration over MQTT failed: %r" % (name, report))
        _say("  %s: wallet with %d RA-signed one-time keys (registered over MQTT)" % (name, report.added))
        self.session = None
        self.thread = None
        self.error = None
        self.progress = Progress(min_ms=500)
        self.announced = collections.deque()  # waits announced on the runner's thread, for ``waits``

    def fund(self, amount):
        result = issuing.fund(self.wallet, self.gateway, amount)
        if not result.ok:
            raise RuntimeError("the faucet refused: %s %s" % (L.reason_name(result.reason), result.detail))

    def start(self, terms, cheat=None, pause=False):
        """Run a session with ``terms`` in a thread of its own; ``pause``: this side's owner
        pauses half-way for ``PAUSE_MS``."""
        self.session_mqtt = self.host.devices.device(username=terms.session_id.hex())
        self.session_mqtt.connect()
        self.runner_clock = _Millis()
        self.session = Session(self.wallet, self.board, terms, self.runner_clock(), misbehaviour=cheat,
                               timestamp=int(time.time()))
        self.paused_at = None if pause else False  # False: never; None: not yet; else when
        self.runner = SessionRunner(self.session, self.session_mqtt, now=self.runner_clock, on_step=self._owner)
        self.thread = threading.Thread(target=self._run, name="plugpay-" + self.name, daemon=True)
        self.thread.start()

    def _owner(self, session, now):
        """The owner at the controls, on the runner's own thread: the ``--pause`` plan; and
        the waits that hold the session up, announced (``firmware.progress``)."""
        if self.progress.step(session, now) & WAIT:
            self.announced.append(self.progress.announcement(now, time.time()))
        if self.paused_at is None and session.installments_paid * 2 >= session.params.installments \
                and session.charging:
            session.pause(now)
            self.paused_at = now
            _say("  %s: the owner pauses the session" % self.name)
        elif self.paused_at and session.held and now - self.paused_at >= PAUSE_MS and session.stop_code is None:
            session.resume(now)
            _say("  %s: the owner resumes after %.1f s" % (self.name, (now - self.paused_at) / 1000))

    def _run(self):
        try:
            self.runner.run()
        except Exception as e:  # shown in the summary; the other side times out on its own
            self.error = e

    def over(self):
        return self.session.finished or self.error is not None or not self.thread.is_alive()

    def waits(self):
        """The waits announced since the last call."""
        return [self.announced.popleft() for _ in range(len(self.announced))]

    def status(self):
        """This side's part of the live line (what it waits for, not how long: the line is
        printed again when it changes)."""
        s = self.session
        wait = self.progress.wait
        return "%s (%s): %s%s, %d Wh, %d/%d paid, exposure %d (bound %d)%s" % (
            self.name, "producer" if self.producer else "consumer", s.state, " (paused)" if s.paused else "",
            self.board.measured_wh, s.installments_paid, s.params.installments, s.exposure(), s.exposure_bound(),
            "" if wait is None else ", waiting for " + wait_text(*wait[1:]))

    def wait(self, timeout=None):
        self.thread.join(timeout)
        self.session_mqtt.close()
        return self.session.finished and self.error is None

    def close(self):
        self.mqtt.close()


class _Millis:
    def __init__(self):
        self.start = time.monotonic()

    def __call__(self):
        return int((time.monotonic() - self.start) * 1000)


def _progress(title, params, sides, per_installment, status):
    """The session as the dashboard shows it (``session_progress``)."""
    onchain = [entry for side in sides for entry in session_progress.device_onchain(side)]
    return session_progress.progress(title, params, [session_progress.device_side(s, per_installment) for s in sides],
                                     onchain, status)


def _summary(host, consumer, producer, params, budget, ok):
    per = budget // params.installments
    c, p = consumer.session, producer.session
    _say("")
    _say("summary")
    for side in (consumer, producer):
        s = side.session
        _say("  %s: link %s, %s" % (side.name, M.code_name(s.stop_code) if s.stop_code is not None else "not stopped",
                                      "settled" if s.finished else "NOT settled"))
        if side.error is not None:
            _say("    error: %s" % side.error)
    for side in (producer, consumer):
        _say("  energy, %s's %s: %d Wh %s" % (side.name, "meter" if side.board.meter is not None else "measurement",
                                             side.board.measured_wh, "delivered" if side.producer else "received"))
    onchain = list(dict.fromkeys(c.onchain + p.onchain))  # a close both sides sent is one transaction
    _say("  on-chain transactions of the session: %d (%s)" % (len(onchain), ", ".join(
        "%d %s" % (count, name) for name, count in _count(L.decode_request(raw).NAME for raw in onchain))))
    _say("  payout to the producer: %s of %d" % (p.payout if p.payout is not None else "-", budget))
    _say("  max consumer exposure: %d (bound b/N = %d; ratio %.2f)" % (c.max_exposure, per, c.max_exposure / per))
    _say("  max producer exposure: %d (bound %d)" % (p.max_exposure, p.exposure_bound()))
    found = host.authority.audit(onchain)
    _say("  RA audit of the session's accounts:")
    for address, identity in found.items():
        who = "unknown" if identity is None else identity.name
        _say("    %s -> %s" % (address.hex()[:16], who))
    _say("  result: %s" % ("OK" if ok else "FAILED"))


def _write_record(args, consumer, producer, started, who):
    """The session record, with the misbehaviour that ran and each transaction's height."""
    from plugpay.tools import session_record

    meta = {"scenario": args.scenario, "started": started,
            "misbehaviour": None if who is None else {"side": who, "name": args.misbehave},
            "consumer": {"board": consumer.name, "kind": "sim"}, "producer": {"board": producer.name, "kind": "sim"}}
    record = session_record.from_sessions(consumer.session, producer.session, meta)
    session_record.locate(record, consumer.gateway.query)
    session_record.write(args.record, record)
    _say("  session record: %s" % args.record)


def _count(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items())
