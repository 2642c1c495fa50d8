"""``plugpay session``: one side of a charging session against a running host.

The host is what ``plugpay ledger up`` starts (replicas, MQTT broker, gateway, faucet, RA
registration). This process is one device: a vehicle or a charger with a wallet from
``plugpay wallet init`` and a simulated board. The two sides find each other through the
market on the ledger (Unterweger et al.): the consumer posts a request for its region,
window and energy under a one-time key, producers quote and bid from their public site
(and may undercut once after seeing the others), the consumer picks argmin g(distance,
price) with its private position after a bid window and commits. Both derive the link's
session id (with an ECDH secret of their two one-time keys, so no one else reading the
board finds the session's topics) and the terms from the request and the chosen bid, then
run the session (``firmware.session`` over ``firmware.runner``) on a fresh MQTT connection
whose user name is the session's id: a deployment broker opens the session's link topics
to that connection alone (``host.deployment``). The market, key refill and funding use a
connection of their own, closed before the session starts.

The consumer sets the bid deadline ``--bid-blocks`` past the ledger's height (asked of
the gateway with the same bytes every device sends, so the question names nothing of its
own), and closes bidding itself by committing after the wall-clock ``--bid-window``.

The steps are the portable role's (``firmware.role``), which the Raspberry Pi's service, an
ESP32 and a MicroPython unix-port process run too; this command is its CPython adapter: it
checks the options, opens the wallet, connects to the broker and sizes a simulated board.

Exit codes: 0 a session settled with the link's OK; 1 it failed at run time (a gateway
that stops answering, no bids, not enough money, a refused or unfinished session); 2 bad
input (options, a missing or locked wallet); 3 the broker cannot be reached.
"""
import json
import os
import sys
import time

from plugpay.firmware import market
from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.devicekey import DeviceKeyError
from plugpay.firmware.gateway_client import GatewayError
from plugpay.firmware.keystore import KeystoreError
from plugpay.firmware.mqtt import MqttError
from plugpay.firmware.records import RecordCorrupt
from plugpay.firmware.role import Device, Plan, PlanError, RoleFailure, reporter
from plugpay.tools import arg_types, broker_args, errors


class UsageError(errors.UsageError):
    """An option value this command cannot use (exit 2)."""


def add_parser(subparsers):
    """Register ``session`` on the ``plugpay`` command line."""
    p = subparsers.add_parser("session", help="one side (vehicle or charger) of a charging session against a "
                              "running host (`plugpay ledger up`)", description=__doc__.split("\n\n")[1])
    p.add_argument("--role", required=True, choices=["vehicle", "charger"])
    broker_args.add_broker(p, "the host's MQTT broker: mqtt://host:port, or mqtts://host:port with --ca (default "
                           "mqtt://127.0.0.1:1883, what `ledger up` starts)", default="mqtt://127.0.0.1:1883")
    p.add_argument("--wallet", required=True, metavar="DIR", help="the wallet's folder (`plugpay wallet init`)")
    p.add_argument("--device-key", required=True, metavar="FILE", help="the wallet's 32-byte device key file")
    p.add_argument("--pin-env", metavar="NAME", help="environment variable holding the wallet's PIN, if it has one")
    p.add_argument("--scenario", choices=["g2v", "v2g", "v2v"], default="g2v",
                   help="g2v: the charger produces; v2g: the vehicle produces; v2v: the vehicle with --produce "
                   "produces (default g2v)")
    p.add_argument("--produce", action="store_true", help="v2v: this vehicle sells energy")
    p.add_argument("--mode", choices=["channel", "htlc"], default="channel",
                   help="payment: one state channel or N HTLCs; both sides must give the same (default channel)")
    p.add_argument("-n", "--installments", type=arg_types.INSTALLMENTS, default=None,
                   help="installments N, the same on both sides (default 100 for a channel, 10 for HTLCs)")
    p.add_argument("--energy-wh", type=arg_types.ENERGY_WH, default=20000,
                   help="consumer: energy to buy, Wh (default 20000)")
    p.add_argument("--window-min", type=arg_types.integer(1, 100000), default=120,
                   help="consumer: minutes from now to charge in; the power is energy / window (default 120)")
    p.add_argument("--price", type=arg_types.AMOUNT, default=300,
                   help="producer: base price per kWh in the smallest unit, also its lowest bid (default 300)")
    p.add_argument("--power-w", type=arg_types.POWER_W, default=11000,
                   help="producer: most power it delivers; bids only on requests that fit (default 11000)")
    p.add_argument("--region", required=True, help="the coarse region of the market, e.g. AT-5020")
    p.add_argument("--position", required=True, metavar="LAT,LON",
                   help="consumer: its own position, used to weigh bids and never published; producer: its "
                   "public site, sent with its bids")
    p.add_argument("--bid-window", type=arg_types.SECONDS, default=3.0,
                   help="consumer: seconds to take bids (default 3)")
    p.add_argument("--bid-blocks", type=arg_types.COUNT, default=10000,
                   help="consumer: the bid deadline this many blocks past the newest height it knows (default "
                   "10000; the commit closes bidding earlier)")
    p.add_argument("--fund", type=arg_types.AMOUNT, metavar="AMOUNT",
                   help="ask the host's faucet for AMOUNT first (test networks)")
    p.add_argument("--keys", type=arg_types.COUNT, default=64,
                   help="one-time keys to register with the RA when low (default 64)")
    p.add_argument("--refill-below", type=arg_types.COUNT, default=16,
                   help="register --keys more when fewer than this are left (default 16)")
    p.add_argument("--sessions", type=arg_types.COUNT, default=1,
                   help="serve this many sessions, one after another (default 1)")
    p.add_argument("--scale", type=arg_types.number(), default=2000.0,
                   help="simulated seconds per real second for the board's energy flow (default 2000)")
    p.add_argument("--timeout", type=arg_types.SECONDS, default=120.0,
                   help="give up finding a deal on the market after this many seconds, and on the "
                   "session itself after as many again from the deal (default 120)")
    p.add_argument("--json", action="store_true", help="print one JSON record per session on stdout "
                   "(progress goes to stderr)")
    p.set_defaults(func=run)
    return p


def run(args, board=None):
    """``plugpay session``; ``board`` is real hardware (a ``firmware.board.Board``: a
    Raspberry Pi's relay and meter, ``boards/rpi``) instead of a simulated board."""
    say = _sayer(sys.stderr if args.json else sys.stdout)
    try:
        plan = plan_from(args)
        endpoint = _endpoint(args)
        wallet = _open_wallet(args)
    except (UsageError, PlanError, WalletError, KeystoreError, RecordCorrupt, DeviceKeyError) as e:
        return _fail(e, errors.USAGE)
    device = Device(wallet, plan, _connector(endpoint), _boards(board, args.scale), lambda: int(time.time()), say,
                    reporter(say, time.time))
    ok = True
    try:
        for record in device.serve(args.sessions):
            if args.json:
                print(json.dumps(record, sort_keys=True), flush=True)
            else:
                _summary(record, say)
            if not (record["finished"] and record["stop_code"] == "OK"):
                ok = False
                _fail("session %s ended with the link %s and %s" % (
                    record["session_id"][:8], record["stop_code"] or "not stopped",
                    "its money settled" if record["finished"] else "its money NOT settled"), 1)
    except (MqttError, GatewayError, RoleFailure, market.MarketError, WalletError, KeystoreError) as e:
        return _fail(e, errors.exit_code(e))  # BrokerUnreachable: 3, the rest 1
    return 0 if ok else 1


def plan_from(args):
    """The role's ``Plan`` from the command line (each value in its range already, by
    its ``arg_types``); ``UsageError`` names what the plan refuses."""
    try:
        return Plan(args.role, args.region, args.position, scenario=args.scenario, mode=args.mode,
                    installments=args.installments, energy_wh=args.energy_wh, window_min=args.window_min,
                    price=args.price, power_w=args.power_w, produce=args.produce, keys=args.keys,
                    refill_below=args.refill_below, bid_window_ms=int(args.bid_window * 1000),
                    bid_blocks=args.bid_blocks, timeout_ms=int(args.timeout * 1000), fund=args.fund)
    except PlanError as e:
        raise UsageError(str(e))


def _endpoint(args):
    try:
        return broker_args.endpoint(args)
    except ValueError as e:
        raise UsageError(str(e))


def _connector(endpoint):
    """``connect(username)`` for the role: a fresh connection, named by a session id or
    by a random user name (None)."""
    def connect(username):
        mqtt = endpoint.device(username=username)
        mqtt.connect()
        return mqtt
    return connect


def _boards(hardware, scale):
    """``make_board(terms, role)`` for the role: the real board, or a simulated one."""
    if hardware is not None:
        return lambda terms, role: hardware
    from plugpay.boards.sim.sized import sized_board

    return lambda terms, role: sized_board(terms, role, scale)


def _fail(error, code):
    print("plugpay session: error: %s" % error, file=sys.stderr)
    return code


def _sayer(stream):
    def say(text):
        print(text, file=stream, flush=True)
    return say


def _open_wallet(args):
    from plugpay.firmware.devicekey import KeyFile
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet

    if not os.path.isfile(os.path.join(args.wallet, "seed")):
        raise WalletError("no wallet in %s (run plugpay wallet init)" % args.wallet)
    pin = None
    if args.pin_env:
        pin = os.environ.get(args.pin_env)
        if not pin:
            raise UsageError("environment variable %s is not set" % args.pin_env)
    wallet = Wallet.open(Storage(args.wallet), KeyFile(args.device_key).load(), pin)
    if wallet.broken:
        raise WalletError("the wallet cannot be used: %s (see plugpay wallet check)"
                          % "; ".join("%s: %s" % b for b in wallet.broken))
    if wallet.identity_id is None:
        raise WalletError("the wallet has no identity: register its device key with the RA "
                          "(plugpay ra register-identity), then plugpay wallet identity")
    return wallet


def _summary(record, say):
    say("summary: %s (%s), link %s, %s" % (record["role"], "producer" if record["producer"] else "consumer",
                                         record["stop_code"] or "not stopped",
                                         "settled" if record["finished"] else "NOT settled"))
    say("  %d Wh agreed at %d per kWh, %d Wh %s by %s; %d of %d installments" % (
        record["energy_wh"], record["unit_price"], record["measured_wh"],
        "delivered" if record["producer"] else "received", "my board" if record["initiator"] else "my meter",
        record["installments_paid"], record["installments"]))
    say("  budget %d, payout to me %s, max exposure %d (bound %d)" % (
        record["budget"], "-" if record["payout"] is None else record["payout"], record["max_exposure"],
        record["exposure_bound"]))
    say("  on-chain requests I got applied: %d" % len(record["onchain"]))
