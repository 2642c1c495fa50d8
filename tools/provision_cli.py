"""``plugpay provision``: a wallet for a board, its identity and one-time keys registered.

What lands in ``--out DIR``: ``wallet/`` (the sealed keystore and profile: readable on
flash without being spendable), ``device.key`` beside it (the 32 bytes that unseal it,
mode 0600; on an ESP32 it goes to NVS, not to the filesystem) and ``board.json`` (role
and name). Every input is checked before anything is written (the board's ``--config``
as ``plugpay config check`` does, the identity document, the RA's unlock, the broker),
so a refusal leaves no half-built folder. Then the steps, each skipped when already
done, so a run that stopped is run again.

1. create the wallet (RA public keys from ``--ra-dir`` or ``--ra-pubkey``);
2. identity: in person with the RA directory and its unlock options (``--name``,
   ``--licence`` and, for a vehicle, ``--vehicle-id``; a charger has no VIN), or
   ``--identity HEX`` that the RA gave; with neither, print the device public key to
   take to the RA and stop;
3. register ``--keys`` one-time keys in batches of at most ``ra_messages.MAX_BATCH``,
   directly with the RA directory or over MQTT through the gateway (``--broker``: sealed
   end to end to the RA's key, the broker reads nothing), with a progress bar on stderr;
4. ``--board-port PORT``: copy the wallet to a board with ``mpremote`` (without
   ``mpremote`` installed, or with ``--dry-run``, the commands are listed instead).

A refused or unanswered batch stores no key and keeps the ones already registered; the
wallet passes ``plugpay wallet check`` after any failure. Errors: one line, exit 2 for
bad input, 3 for a broker that cannot be reached, 1 for a refusal or a gateway that
stops answering.
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
from plugpay.tools import arg_types, errors

WALLET = "wallet"
DEVICE_KEY = "device.key"
BOARD_FILE = "board.json"
BOARD_WALLET = "/wallet"  # where boards keep it (boards/*/ open it there)


class UsageError(errors.UsageError):
    """An option value this command cannot use (exit 2)."""


class ProvisionFailure(errors.Failure):
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


def create_wallet(out, ra_pubkeys):
    """A new wallet in ``out/wallet``, sealed under ``out/device.key`` (created first, mode
    0600, unless a run that stopped left one)."""
    folder = os.path.join(out, WALLET)
    key_file = KeyFile(os.path.join(out, DEVICE_KEY))
    os.makedirs(folder, exist_ok=True)
    key = key_file.load() if os.path.exists(key_file.path) else key_file.create()
    return Wallet.create(Storage(folder), key, ra_pubkeys)


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
    from plugpay.tools import broker_args

    try:
        mqtt = broker_args.endpoint(args).device()
    except ValueError as e:
        raise UsageError(str(e))
    mqtt.connect()  # a broker that cannot be reached: BrokerUnreachable, exit 3
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

        try:
            return {epoch: pubkey for epoch, pubkey, _ in host_ra.public_epochs(args.ra_dir)}
        except host_ra.KeyStoreError as e:
            raise UsageError("--ra-dir: %s" % e)
    if not args.ra_pubkey:
        return None
    from plugpay.tools.wallet_cli import UsageError as WalletUsage
    from plugpay.tools.wallet_cli import _ra_pubkeys as parse

    try:
        return parse(args.ra_pubkey)
    except WalletUsage as e:
        raise UsageError(str(e))


IDENTITY_OPTIONS = {"name": "--name", "licence": "--licence", "vehicle_id": "--vehicle-id"}


def _check_args(args):
    """The options alone: role (from ``--config`` too), identity, in-person fields."""
    if args.config:
        from plugpay.tools import config_check

        profile = config_check.load(args.config)
        if args.role not in (None, profile["role"]):
            raise UsageError("--role %s, but the config %s is for a %s" % (args.role, args.config, profile["role"]))
        args.role = profile["role"]
        args.board_name = args.board_name or profile["name"]
    if args.role is None:
        raise UsageError("give --role vehicle|charger, or the board's --config")
    if args.identity is not None:
        try:
            identity = bytes.fromhex(args.identity)
        except ValueError:
            identity = b""
        if len(identity) != ra.IDENTITY_ID_BYTES:
            raise UsageError("--identity wants %d bytes of hex, got %r" % (ra.IDENTITY_ID_BYTES, args.identity))
        args.identity_id = identity
    if args.role == "charger" and args.vehicle_id:
        raise UsageError("--vehicle-id: a charger has no VIN; register it in person with --name and --licence")
    wanted = ["name", "licence"] + (["vehicle_id"] if args.role == "vehicle" else [])
    given = [field for field in wanted if getattr(args, field)]
    if given and len(given) < len(wanted):
        raise UsageError("registering a %s in person needs %s together" % (
            args.role, ", ".join(IDENTITY_OPTIONS[f] for f in wanted[:-1]) + " and " + IDENTITY_OPTIONS[wanted[-1]]))
    args.in_person = None
    if given:
        from plugpay.host import ra as host_ra

        args.in_person = {"name": args.name, "licence": args.licence, "vehicle_id": args.vehicle_id or ""}
        try:
            host_ra.check_identity_document(args.in_person)
        except host_ra.IdentityError as e:
            field, _, why = str(e).partition(": ")
            raise UsageError("%s: %s" % (IDENTITY_OPTIONS.get(field, field), why))
        if not args.ra_dir:
            raise UsageError("registering in person needs the RA directory (--ra-dir and its unlock options)")


class Inputs:
    """Everything ``provision`` reads, checked and opened before it writes anything: the
    RA's public keys, the wallet already in ``--out`` (if any), the RA unlocked when it
    is asked in person or for keys, and the broker connected when keys go through it."""

    def __init__(self, args):
        _check_args(args)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UsageError("--out %s: exists and is not a folder" % args.out)
        self.ra_pubkeys = _ra_pubkeys(args)
        self.wallet = _existing_wallet(args.out)
        if self.wallet is None and self.ra_pubkeys is None:
            raise UsageError("no wallet in %s yet: give the RA's public keys (--ra-dir or --ra-pubkey)" % args.out)
        held = None if self.wallet is None else self.wallet.identity_id
        if held is not None and getattr(args, "identity_id", None) not in (None, held):
            raise UsageError("--identity %s: the wallet in %s holds identity %s already" % (args.identity, args.out,
                                                                                           held.hex()))
        identified = args.in_person or getattr(args, "identity_id", None) or (
            self.wallet is not None and self.wallet.identity_id is not None)
        keys = identified and (args.keys > 0 or (self.wallet is not None and self.wallet.keystore.pending))
        if keys and not args.broker and not args.ra_dir:
            raise UsageError("registering keys needs the RA directory (--ra-dir) or the gateway (--broker URL)")
        self.authority = None
        self.register = self.mqtt = None
        try:
            if args.in_person or (keys and not args.broker):
                from plugpay.host import ra as host_ra
                from plugpay.tools.ra_cli import unlock_from_args

                self.authority = host_ra.RegistrationAuthority.open(args.ra_dir, unlock_from_args(args))
                if args.in_person and held is None:
                    _not_registered_yet(self.authority, args)
            if keys and args.broker:
                pubkeys = self.ra_pubkeys if self.wallet is None else self.wallet.ra_pubkeys
                self.register, self.mqtt = _over_mqtt(args, int(args.timeout * 1000), pubkeys)
            elif keys:
                self.register = _direct(self.authority)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.mqtt is not None:
            self.mqtt.close()
        if self.authority is not None:
            self.authority.close()


def _not_registered_yet(authority, args):
    """A vehicle's licence and VIN name one identity: refuse a second one before anything
    is written (a charger's identity is its operator's with its own device key)."""
    from plugpay.host import ra as host_ra

    name, licence, vehicle_id = host_ra.check_identity_document(args.in_person)
    found = authority.repo.find_identity(licence, vehicle_id) if vehicle_id else None
    if found is not None:
        raise UsageError("--licence %s --vehicle-id %s: the RA registered this vehicle already, as identity %s; "
                         "give --identity %s" % (licence, vehicle_id, found.identity_id.hex(),
                                                 found.identity_id.hex()))


def _existing_wallet(out):
    """The wallet already in ``out``, opened (which writes nothing), or None."""
    if not os.path.isfile(os.path.join(out, WALLET, "seed")):
        return None
    return Wallet.open(Storage(os.path.join(out, WALLET)), KeyFile(os.path.join(out, DEVICE_KEY)).load())


def run(args):
    say = _sayer()
    try:
        inputs = Inputs(args)
    except (WalletError, KeystoreError, RecordCorrupt, DeviceKeyError) as e:
        raise UsageError(str(e))
    except Exception as e:  # the RA's own errors (locked key, unreadable repository)
        from plugpay.host import certs
        from plugpay.host import ra as host_ra

        if isinstance(e, (host_ra.KeyStoreError, certs.RepositoryError)):
            raise UsageError(str(e))  # names the RA's key file
        raise
    try:
        return _provision(args, inputs, say)
    except (WalletError, KeystoreError, RecordCorrupt, DeviceKeyError) as e:
        raise UsageError(str(e))
    finally:
        inputs.close()


def _provision(args, inputs, say):
    wallet = inputs.wallet or create_wallet(args.out, inputs.ra_pubkeys)
    _write_board_file(args)
    say(("opened the wallet in %s (%s)" if inputs.wallet else "created the wallet in %s (device key %s, mode 0600)")
        % (os.path.join(args.out, WALLET), os.path.join(args.out, DEVICE_KEY)))
    if not _identity(args, wallet, inputs.authority, say):
        return 0
    added = _keys(args, wallet, inputs, say)
    if added:
        say("registered %d one-time keys (%d available)" % (added, wallet.keystore.available()))
    report = wallet.check()
    if not report["ok"]:
        raise ProvisionFailure("the wallet fails its check: %s" % "; ".join(report["problems"]))
    if args.board_port:
        return _copy_to_board(args, say)
    return 0


def _identity(args, wallet, authority, say):
    """True once the wallet holds an identity (set now, or before)."""
    if getattr(args, "identity_id", None) is not None:
        wallet.set_identity(args.identity_id)  # the same, or none yet (Inputs checked)
    elif wallet.identity_id is None and args.in_person:
        wallet.set_identity(authority.register_identity(args.in_person, wallet.device_pubkey()))
        say("identity %s registered in person" % wallet.identity_id.hex())
    if wallet.identity_id is not None:
        return True
    pubkey = wallet.device_pubkey().hex()
    say("device public key: %s" % pubkey)
    say("take it to the RA: plugpay ra register-identity --dir RA_DIR --name ... --licence ...%s "
        "--device-pubkey %s" % (" --vehicle-id ..." if args.role == "vehicle" else "", pubkey))
    say("then: plugpay provision --out %s --identity ID --keys N (--ra-dir ... or --broker URL)" % args.out)
    return False


def _keys(args, wallet, inputs, say):
    if inputs.register is None or (args.keys == 0 and wallet.keystore.pending is None):
        return 0
    bar = ProgressBar(args.keys)
    if args.broker:
        say("registering %d keys over MQTT through the gateway at %s (sealed to the RA's key)"
            % (args.keys, args.broker))
    else:
        say("registering %d keys with the RA in %s" % (args.keys, args.ra_dir))
    return register_keys(wallet, args.keys, inputs.register, args.batch, bar.show)


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


def add_parser(subparsers):
    """Register ``provision`` on the ``plugpay`` command line."""
    from plugpay.tools import broker_args
    from plugpay.tools.ra_cli import add_unlock_options

    p = subparsers.add_parser("provision", help="create a board's wallet, register its identity and one-time keys "
                              "with the RA, and write it to a folder or a board",
                              description=" ".join(__doc__.split("\n\n")[1].split()))
    p.add_argument("--role", choices=["vehicle", "charger"], help="the board's role (default: the one --config names)")
    p.add_argument("--config", metavar="FILE", help="the board's config file: checked first as `plugpay config check` "
                   "does, and its role and name are the board's")
    p.add_argument("--out", required=True, metavar="DIR", help="the board's folder: wallet/, device.key, board.json")
    p.add_argument("--board-name", help="the board's name in consoles and records (default: the role)")
    p.add_argument("--keys", type=arg_types.integer(0, 10 ** 6), default=300,
                   help="one-time keys to register (default 300; 0: none)")
    p.add_argument("--batch", type=arg_types.integer(1, ra.MAX_BATCH), default=ra.MAX_BATCH,
                   help="keys per registration request (default and most %d)" % ra.MAX_BATCH)
    p.add_argument("--ra-dir", help="the RA directory: its public keys, in-person identity and direct registration")
    add_unlock_options(p)
    p.add_argument("--ra-pubkey", action="append", metavar="EPOCH:HEX",
                   help="without --ra-dir: an RA public key the wallet accepts; repeatable")
    broker_args.add_broker(p, "register the keys over MQTT through the gateway at this broker (mqtt://host:port, "
                           "or mqtts://host:port with --ca)")
    p.add_argument("--timeout", type=arg_types.SECONDS, default=60.0,
                   help="seconds to wait for the gateway per batch (default 60)")
    p.add_argument("--identity", metavar="HEX", help="the identity id the RA registered in person for this board")
    p.add_argument("--name", help="in person: the owner's name")
    p.add_argument("--licence", help="in person: the owner's driving licence number")
    p.add_argument("--vehicle-id", help="in person, a vehicle: its 17-character VIN (a charger has none)")
    p.add_argument("--board-port", metavar="PORT", help="copy the wallet to the board on this serial port (mpremote)")
    p.add_argument("--dry-run", action="store_true", help="with --board-port: list the mpremote steps only")
    p.set_defaults(func=run)
    return p
