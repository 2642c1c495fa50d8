"""``plugpay provision``: a wallet for a board, its identity and one-time keys registered.

What lands in ``--out DIR``: ``wallet/`` (the sealed keystore and profile: readable on
flash without being spendable), ``device.key`` beside it (the 32 bytes that unseal it,
mode 0600; on an ESP32 it goes to NVS, not to the filesystem) and ``board.json`` (role
and name). Steps, each skipped when already done, so a run that stopped is run again:

1. create the wallet (RA public keys from ``--ra-dir`` or ``--ra-pubkey``);
2. identity: in person with the RA directory and its unlock options (``--name``,
   ``--licence``, ``--vehicle-id``), or ``--identity HEX`` that the RA gave; with
   neither, print the device public key to take to the RA and stop;
3. register ``--keys`` one-time keys in batches of at most ``ra_messages.MAX_BATCH``,
   directly with the RA directory or over MQTT through the gateway (``--broker``: sealed
   end to end to the RA's key, the broker reads nothing), with a progress bar on stderr;
4. ``--board-port PORT``: copy the wallet to a board with ``mpremote`` (without
   ``mpremote`` installed, or with ``--dry-run``, the commands are listed instead).

A refused or unanswered batch stores no key and keeps the ones already registered; the
wallet passes ``plugpay wallet check`` after any failure. Errors: one line, exit 2 for
bad input, 1 for a refusal or an unreachable gateway.
"""
import json
import os
import shutil
import subprocess
import sys

from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.devicekey import DeviceKeyError, KeyFile
from plugpay.firmware.keystore import KeystoreError
from plugpay.firmware.records import RecordCorrupt
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ra_messages as ra

WALLET = "wallet"
DEVICE_KEY = "device.key"
BOARD_FILE = "board.json"
BOARD_WALLET = "/wallet"  # where boards keep it (boards/*/ open it there)


class UsageError(ValueError):
    """An option value this command cannot use (exit 2)."""


class ProvisionFailure(Exception):
    """The RA or the gateway refused or did not answer (exit 1)."""


class ProgressBar:
    """``[#####.....] 450/500 keys`` on ``stream``: redrawn in place on a terminal, a line
    per update elsewhere (logs, CI)."""

    def __init__(self, total, stream=None, width=30, what="keys"):
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.what = what
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def show(self, done):
        filled = self.width * done // self.total if self.total else self.width
        line = "[%s%s] %d/%d %s" % ("#" * filled, "." * (self.width - filled), done, self.total, self.what)
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def create_or_open(out, ra_pubkeys):
    """``(wallet, created)`` for ``out``: the wallet in ``out/wallet`` unsealed by
    ``out/device.key``, created (key file first, mode 0600) when there is none."""
    folder = os.path.join(out, WALLET)
    key_file = KeyFile(os.path.join(out, DEVICE_KEY))
    if os.path.isfile(os.path.join(folder, "seed")):
        return Wallet.open(Storage(folder), key_file.load()), False
    if ra_pubkeys is None:
        raise UsageError("no wallet in %s yet: give the RA's public keys (--ra-dir or --ra-pubkey)" % out)
    os.makedirs(folder, exist_ok=True)
    key = key_file.load() if os.path.exists(key_file.path) else key_file.create()
    return Wallet.create(Storage(folder), key, ra_pubkeys), True


def register_keys(wallet, count, register, batch=ra.MAX_BATCH, progress=None):
    """Register ``count`` keys, ``batch`` at a time; ``register(request bytes) -> reply
    bytes`` is the RA (its ``handle``) or the gateway. Returns the keys added. A request
    left in flight by an earlier run goes first (the same keys, the same nonce)."""
    if not 1 <= batch <= ra.MAX_BATCH:
        raise UsageError("a batch holds 1..%d keys" % ra.MAX_BATCH)
    added = 0
    if progress:
        progress(0)
    while added < count or wallet.keystore.pending is not None:
        size = min(batch, count - added) if wallet.keystore.pending is None else None
        request = wallet.refill_request(size)
        reply = register(request)
        try:
            added += wallet.refill_reply(reply)
        except KeystoreError as e:
            raise ProvisionFailure("the RA refused a batch (%d of %d keys registered): %s" % (added, count, e))
        if progress:
            progress(min(added, count))
    return added


def _direct(authority):
    return authority.handle


def _over_mqtt(args, timeout_ms, ra_pubkeys):
    from plugpay.firmware.gateway_client import GatewayClient, GatewayError
    from plugpay.firmware.mqtt import MqttError
    from plugpay.tools import broker_args

    try:
        mqtt = broker_args.endpoint(args).device()
    except ValueError as e:
        raise UsageError(str(e))
    try:
        mqtt.connect()
    except MqttError as e:
        raise ProvisionFailure(str(e))
    client = GatewayClient(mqtt)

    def register(request):
        try:
            return client.register(request, ra_pubkeys, timeout_ms)
        except GatewayError as e:
            raise ProvisionFailure(str(e))
    return register, mqtt


def _ra_pubkeys(args):
    if args.ra_dir:
        from plugpay.host import ra as host_ra

        return {epoch: pubkey for epoch, pubkey, _ in host_ra.public_epochs(args.ra_dir)}
    if not args.ra_pubkey:
        return None
    from plugpay.tools.wallet_cli import UsageError as WalletUsage
    from plugpay.tools.wallet_cli import _ra_pubkeys as parse

    try:
        return parse(args.ra_pubkey)
    except WalletUsage as e:
        raise UsageError(str(e))


def _check_args(args):
    if args.keys < 0:
        raise UsageError("--keys must be 0 or more, got %d" % args.keys)
    if not 1 <= args.batch <= ra.MAX_BATCH:
        raise UsageError("--batch must be 1..%d, got %d" % (ra.MAX_BATCH, args.batch))
    if args.identity is not None:
        try:
            identity = bytes.fromhex(args.identity)
        except ValueError:
            identity = b""
        if len(identity) != ra.IDENTITY_ID_BYTES:
            raise UsageError("--identity wants %d bytes of hex, got %r" % (ra.IDENTITY_ID_BYTES, args.identity))
        args.identity_id = identity
    in_person = [args.name, args.licence, args.vehicle_id]
    if any(in_person) and not all(in_person):
        raise UsageError("registering in person needs --name, --licence and --vehicle-id together")
    if all(in_person) and not args.ra_dir:
        raise UsageError("registering in person needs the RA directory (--ra-dir and its unlock options)")


def run(args):
    say = _sayer()
    try:
        _check_args(args)
        wallet, created = create_or_open(args.out, _ra_pubkeys(args))
        _write_board_file(args)
        say(("created the wallet in %s (device key %s, mode 0600)" if created else "opened the wallet in %s (%s)")
            % (os.path.join(args.out, WALLET), os.path.join(args.out, DEVICE_KEY)))
        if not _identity(args, wallet, say):
            return 0
        added = _keys(args, wallet, say)
        if added:
            say("registered %d one-time keys (%d available)" % (added, wallet.keystore.available()))
        report = wallet.check()
        if not report["ok"]:
            raise ProvisionFailure("the wallet fails its check: %s" % "; ".join(report["problems"]))
        if args.board_port:
            return _copy_to_board(args, say)
        return 0
    except (UsageError, WalletError, KeystoreError, RecordCorrupt, DeviceKeyError) as e:
        return _fail(e, 2)
    except ProvisionFailure as e:
        return _fail(e, 1)
    except Exception as e:  # the RA's own errors (locked key, bad identity document)
        from plugpay.host import ra as host_ra

        if isinstance(e, (host_ra.KeyStoreError, host_ra.IdentityError)):
            return _fail(e, 2)
        raise


def _identity(args, wallet, say):
    """True once the wallet holds an identity (set now, or before)."""
    if getattr(args, "identity_id", None) is not None:
        if wallet.identity_id not in (None, args.identity_id):
            raise UsageError("the wallet holds identity %s already, not %s" % (wallet.identity_id.hex(), args.identity))
        wallet.set_identity(args.identity_id)
    elif wallet.identity_id is None and args.name:
        from plugpay.host import ra as host_ra
        from plugpay.tools.ra_cli import unlock_from_args

        fields = {"name": args.name, "licence": args.licence, "vehicle_id": args.vehicle_id}
        with host_ra.RegistrationAuthority.open(args.ra_dir, unlock_from_args(args)) as authority:
            wallet.set_identity(authority.register_identity(fields, wallet.device_pubkey()))
        say("identity %s registered in person" % wallet.identity_id.hex())
    if wallet.identity_id is not None:
        return True
    pubkey = wallet.device_pubkey().hex()
    say("device public key: %s" % pubkey)
    say("take it to the RA: plugpay ra register-identity --dir RA_DIR --name ... --licence ... --vehicle-id ... "
        "--device-pubkey %s" % pubkey)
    say("then: plugpay provision --out %s --identity ID --keys N (--ra-dir ... or --broker URL)" % args.out)
    return False


def _keys(args, wallet, say):
    if args.keys == 0 and wallet.keystore.pending is None:
        return 0
    bar = ProgressBar(args.keys)
    if args.broker:
        register, mqtt = _over_mqtt(args, int(args.timeout * 1000), wallet.ra_pubkeys)
        try:
            say("registering %d keys over MQTT through the gateway at %s (sealed to the RA's key)"
                % (args.keys, args.broker))
            return register_keys(wallet, args.keys, register, args.batch, bar.show)
        finally:
            mqtt.close()
    if not args.ra_dir:
        raise UsageError("registering keys needs the RA directory (--ra-dir) or the gateway (--broker URL)")
    from plugpay.host import ra as host_ra
    from plugpay.tools.ra_cli import unlock_from_args

    with host_ra.RegistrationAuthority.open(args.ra_dir, unlock_from_args(args)) as authority:
        say("registering %d keys with the RA in %s" % (args.keys, args.ra_dir))
        return register_keys(wallet, args.keys, _direct(authority), args.batch, bar.show)


def _write_board_file(args):
    path = os.path.join(args.out, BOARD_FILE)
    if not os.path.exists(path):
        with open(path, "w") as f:
            json.dump({"role": args.role, "name": args.board_name or args.role}, f, indent=1)
            f.write("\n")


def board_copy_commands(out, port):
    """The ``mpremote`` commands that put the wallet, ``board.json`` and the device key
    (into NVS, namespace ``plugpay``) on the board on ``port``."""
    folder = os.path.join(out, WALLET)
    with open(os.path.join(out, DEVICE_KEY), "rb") as f:
        key = f.read().hex()
    base = ["mpremote", "connect", port]
    commands = [base + ["fs", "mkdir", ":" + BOARD_WALLET]]
    for name in sorted(os.listdir(folder)):
        commands.append(base + ["fs", "cp", os.path.join(folder, name), ":%s/%s" % (BOARD_WALLET, name)])
    commands.append(base + ["fs", "cp", os.path.join(out, BOARD_FILE), ":/" + BOARD_FILE])
    nvs = ("import esp32; n = esp32.NVS('plugpay'); n.set_blob('device_key', bytes.fromhex('%s')); n.commit()"
           % key)
    commands.append(base + ["exec", nvs])
    return commands


def _copy_to_board(args, say):
    commands = board_copy_commands(args.out, args.board_port)
    have = shutil.which("mpremote") is not None
    if args.dry_run or not have:
        say("%s; the steps would be:" % ("dry run" if args.dry_run else "mpremote is not installed (pip install "
                                         "mpremote)"))
        for command in commands:
            shown = [("'%s'" % c if " " in c else c) for c in command]
            if command[-2] == "exec":
                shown[-1] = "'<writes the device key into NVS>'"
            say("  " + " ".join(shown))
        return 0 if args.dry_run else 1
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 and not (command[4:6] == ["fs", "mkdir"] and "EEXIST" in done.stderr + done.stdout):
            raise ProvisionFailure("mpremote failed (%s): %s" % (" ".join(command[3:6]),
                                                                 (done.stderr or done.stdout).strip()[-200:]))
    say("copied the wallet to the board on %s (device key into NVS)" % args.board_port)
    return 0


def _sayer():
    def say(text):
        print(text, flush=True)
    return say


def _fail(error, code):
    print("plugpay provision: error: %s" % error, file=sys.stderr)
    return code


def add_parser(subparsers):
    """Register ``provision`` on the ``plugpay`` command line."""
    from plugpay.tools import broker_args
    from plugpay.tools.ra_cli import add_unlock_options

    p = subparsers.add_parser("provision", help="create a board's wallet, register its identity and one-time keys "
                              "with the RA, and write it to a folder or a board",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--role", required=True, choices=["vehicle", "charger"])
    p.add_argument("--out", required=True, metavar="DIR", help="the board's folder: wallet/, device.key, board.json")
    p.add_argument("--board-name", help="the board's name in consoles and records (default: the role)")
    p.add_argument("--keys", type=int, default=300, help="one-time keys to register (default 300; 0: none)")
    p.add_argument("--batch", type=int, default=ra.MAX_BATCH,
                   help="keys per registration request (default and most %d)" % ra.MAX_BATCH)
    p.add_argument("--ra-dir", help="the RA directory: its public keys, in-person identity and direct registration")
    add_unlock_options(p)
    p.add_argument("--ra-pubkey", action="append", metavar="EPOCH:HEX",
                   help="without --ra-dir: an RA public key the wallet accepts; repeatable")
    broker_args.add_broker(p, "register the keys over MQTT through the gateway at this broker (mqtt://host:port, "
                           "or mqtts://host:port with --ca)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the gateway per batch (default 60)")
    p.add_argument("--identity", metavar="HEX", help="the identity id the RA registered in person for this board")
    p.add_argument("--name", help="in person: the owner's name")
    p.add_argument("--licence", help="in person: the owner's driving licence number")
    p.add_argument("--vehicle-id", help="in person: the vehicle's 17-character VIN")
    p.add_argument("--board-port", metavar="PORT", help="copy the wallet to the board on this serial port (mpremote)")
    p.add_argument("--dry-run", action="store_true", help="with --board-port: list the mpremote steps only")
    p.set_defaults(func=run)
    return p
