"""``plugpay wallet ...``: provision a device wallet in a folder and look inside it.

The wallet's files are sealed under a device key kept in a separate 32-byte file
(``--device-key``; ``init`` creates it, mode 0600, when it is missing). A PIN, if the
wallet has one, comes from an environment variable (``--pin-env NAME``), never from the
command line. Errors are one line on stderr and exit code 2: a wrong key, a tampered or
truncated file, a missing wallet.
"""
import json
import os
import sys

from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.devicekey import DeviceKeyError, KeyFile
from plugpay.firmware.keystore import KeystoreError
from plugpay.firmware.records import RecordCorrupt
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet

_REFUSALS = (WalletError, KeystoreError, RecordCorrupt, DeviceKeyError)


class UsageError(ValueError):
    """A command-line value that is not what the option wants."""


def _fail(text):
    print("plugpay wallet: error: %s" % text, file=sys.stderr)
    return 2


def _pin(args):
    if not args.pin_env:
        return None
    value = os.environ.get(args.pin_env)
    if not value:
        raise UsageError("environment variable %s is not set" % args.pin_env)
    return value


def _ra_pubkeys(values):
    keys = {}
    for value in values:
        epoch, _, key = value.partition(":")
        try:
            epoch, key = int(epoch), bytes.fromhex(key)
        except ValueError:
            key = b""
        if len(key) != 33:
            raise UsageError("--ra-pubkey wants EPOCH:HEX (a 33-byte compressed key), got %r" % value)
        keys[epoch] = key
    return keys


def _identity(value):
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageError("--identity wants hex, got %r" % value)


def _open(args):
    if not os.path.isfile(os.path.join(args.dir, "seed")):
        raise WalletError("no wallet in %s (no seed file)" % args.dir)
    return Wallet.open(Storage(args.dir), KeyFile(args.device_key).load(), _pin(args))


def _init(args):
    ra_pubkeys = _ra_pubkeys(args.ra_pubkey)
    identity = _identity(args.identity)
    pin = _pin(args)
    os.makedirs(args.dir, exist_ok=True)
    key_file = KeyFile(args.device_key)
    if os.path.exists(args.device_key):
        key = key_file.load()
    else:
        key = key_file.create()
        print("created device key file %s (32 random bytes, mode 0600): keep it apart from the wallet"
              % args.device_key)
    wallet = Wallet.create(Storage(args.dir), key, ra_pubkeys, identity, pin)
    print("wallet created in %s" % args.dir)
    print("device public key: %s" % wallet.device_pubkey().hex())
    if identity is None:
        print("register it with the RA in person, then: plugpay wallet identity --identity ID")
    return 0


def _set_identity(args):
    wallet = _open(args)
    wallet.set_identity(_identity(args.identity))
    print("identity %s stored" % args.identity)
    return 0


def table(status):
    """The status dict as lines of text."""
    keys = status["keys"]
    money = "-" if status["balance"] is None else "%d" % status["balance"]
    lines = [
        "identity     %s" % (status["identity"] or "(not set)"),
        "balance      %s in %s coins; %s locked, %s incoming, %s requests pending" % (
            money, status["coins"], status["locked"], status["incoming"], status["pending_requests"]),
        "             %s may fund a session; %s session(s) gave back coins to redeem first" % (
            "-" if status["clean_balance"] is None else status["clean_balance"],
            "-" if status["to_redeem"] is None else status["to_redeem"]),
        "keys         %d available, %d reserved, %d registered%s" % (
            keys["available"], keys["reserved"], keys["capacity"],
            ", a registration in flight" if keys["registration_pending"] else ""),
        "channels     %d" % len(status["channels"]),
    ]
    for c in status["channels"]:
        lines.append("  %s  %-8s  %-7s  seq %d  paid %d of %d  %d Wh%s" % (
            c["id"][:16], c["role"], c["status"], c["seq"], c["paid"], c["collateral"], c["energy_wh"],
            "" if c["next_seq"] is None else "  (seq %d awaits the producer)" % c["next_seq"]))
    lines.append("htlc series  %d" % len(status["htlc_series"]))
    for s in status["htlc_series"]:
        lines.append("  %s  %-5s  %d x %d, timeout %d, revealed %d; open %d, claimed %d, refunded %d" % (
            s["id"], s["role"], s["count"], s["amount"], s["timeout"], s["revealed"], s["open"], s["claimed"],
            s["refunded"]))
    lines.append("problems     %d" % len(status["problems"]))
    lines.extend("  " + p for p in status["problems"])
    return lines


def _unusable(wallet):
    """The one-line error for records the wallet cannot use, or None."""
    if not wallet.broken:
        return None
    return "; ".join("%s: %s" % b for b in wallet.broken)


def _status(args):
    wallet = _open(args)
    status = wallet.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print("\n".join(table(status)))
    broken = _unusable(wallet)
    if broken:
        return _fail(broken)
    return 1 if wallet.damage() else 0  # as check: what may be behind waits for a recovery


def _check(args):
    wallet = _open(args)
    report = wallet.check()
    keys = report["keys"]
    print("keys: %d records, %d valid, %d gaps, %d failing their MAC, %d reserved" % (
        keys["records"], keys["valid"], keys["gaps"], keys["bad_mac"], keys["reserved"]))
    for p in report["problems"]:
        print("problem: " + p)
    for w in report["warnings"]:
        print("warning: " + w)
    broken = _unusable(wallet)
    if broken:
        return _fail(broken)
    print("ok" if report["ok"] else "%d problems" % len(report["problems"]))
    return 0 if report["ok"] else 1


def _settle(args):
    from plugpay.firmware import issuing
    from plugpay.firmware.gateway_client import GatewayClient, GatewayError
    from plugpay.firmware.mqtt import MqttError
    from plugpay.firmware.settle import settle
    from plugpay.tools import broker_args

    try:
        mqtt = broker_args.endpoint(args).device()
    except ValueError as e:
        raise UsageError(str(e))
    wallet = _open(args)
    try:
        mqtt.connect()
        gateway = GatewayClient(mqtt)
        for line in settle(wallet, gateway) or ["nothing open: no channel, HTLC or request waits"]:
            print(line)
        redeemed = issuing.refresh(wallet, gateway)  # what the settled sessions gave back
        if redeemed.redeemed:
            print("redeemed %d for fresh coins" % redeemed.redeemed)
        if redeemed.detail:
            print(redeemed.detail)
    except (MqttError, GatewayError) as e:
        return _fail("%s (nothing was lost: run it again)" % e)
    finally:
        mqtt.close()
    return 0


def _recover(args):
    from plugpay.tools import ledger_inspect, wallet_recover

    wallet = _open(args)
    before = wallet.damage()
    try:
        lines = wallet_recover.recover(wallet, args.config, args.timeout)
    except (ledger_inspect.InspectError, wallet_recover.RecoverError) as e:
        return _fail("%s (the wallet was not changed)" % e)
    for name in sorted(before):
        print("damage found: %s: %s" % (name, before[name]))
    for line in lines:
        print(line)
    left = wallet.damage()
    for name in sorted(left):
        print("still damaged: %s: %s" % (name, left[name]))
    if any(c.rec.status for c in wallet.channels.values()):
        print("closing channels wait for `plugpay wallet settle`")
    return 1 if left else 0


def _guarded(func):
    def run(args):
        try:
            return func(args)
        except _REFUSALS + (UsageError,) as e:
            return _fail(str(e))
    return run


def add_parser(subparsers):
    """Register ``wallet`` and its commands on the ``plugpay`` command line."""
    from plugpay.tools import broker_args

    p = subparsers.add_parser("wallet", help="a device wallet: provision it, show its status, check its files")
    sub = p.add_subparsers(dest="wallet_command", metavar="WALLET_COMMAND")
    sub.required = True

    def command(name, func, help):
        c = sub.add_parser(name, help=help)
        c.add_argument("--dir", required=True, help="the wallet's folder")
        c.add_argument("--device-key", required=True, help="the 32-byte device key file (kept apart from --dir)")
        c.add_argument("--pin-env", metavar="NAME", help="environment variable holding the wallet's PIN, if it has one")
        c.set_defaults(func=_guarded(func))
        return c

    c = command("init", _init, "create a wallet (and the device key file if missing); prints the device public key")
    c.add_argument("--ra-pubkey", required=True, action="append", metavar="EPOCH:HEX",
                   help="an RA public key the wallet accepts, with its epoch; repeatable")
    c.add_argument("--identity", metavar="HEX", help="the identity id the RA registered in person, if known yet")
    c = command("identity", _set_identity, "store the identity id the RA gave for this device's public key")
    c.add_argument("--identity", required=True, metavar="HEX")
    c = command("status", _status, "balance, coins, keys, channels, HTLC series and problems "
                "(exit 0 ok, 1 damage to recover from, 2 unusable)")
    c.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    command("check", _check, "integrity: every key record, every wallet record, every invariant "
            "(exit 0 ok, 1 problems, 2 unusable)")
    c = command("settle", _settle, "finish what sessions left open (after a crash or a timeout): re-send "
                "unanswered requests, close and settle channels, claim or refund HTLCs; run it again "
                "once a dispute window or HTLC timeout has passed")
    broker_args.add_broker(c, "the MQTT broker of the ledger's gateway, mqtt://host:port or mqtts://host:port",
                           required=True)
    c = command("recover", _recover, "rebuild the key counters, the book and open channels from the seed and "
                "the chain (after `check` named damage, or a restore from a backup); the chain is replayed "
                "here, so no one learns which keys are this wallet's (exit 0 repaired, 1 damage left)")
    c.add_argument("--config", required=True, metavar="CLUSTER.json", help="the ledger cluster's config "
                   "(`plugpay ledger up` prints where it is)")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each read (default 10)")
    return p
