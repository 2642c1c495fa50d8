"""``plugpay ra ...``: run the Registration Authority from a shell.

Secrets never appear on a command line (where ``ps`` shows them) or in any output: the RA
key is unlocked by a key file (``--key-file``), a passphrase in an environment variable
(``--passphrase-env NAME``), or a passphrase typed at a prompt.
"""
import datetime
import getpass
import os
import string
import sys

from plugpay.host import ra
from plugpay.protocol import ra_messages as msg
from plugpay.tools.errors import Failure


def unlock_from_args(args, confirm=False):
    """The ``Unlock`` that ``--key-file`` or ``--passphrase-env`` name, else a prompt."""
    if args.key_file and args.passphrase_env:
        raise ra.KeyStoreError("give either --key-file or --passphrase-env, not both")
    if args.key_file:
        return ra.Unlock(key_file=args.key_file)
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise ra.KeyStoreError("environment variable %s is not set" % args.passphrase_env)
        return ra.Unlock(passphrase=value)
    if not sys.stdin.isatty():
        raise ra.KeyStoreError("no terminal to ask for the passphrase: give --key-file or --passphrase-env")
    passphrase = getpass.getpass("RA passphrase: ")
    if confirm and getpass.getpass("again: ") != passphrase:
        raise ra.KeyStoreError("the passphrases differ")
    return ra.Unlock(passphrase=passphrase)


def _read_input(path):
    """A file's bytes; a file of hex text (as copied from a log) is decoded first."""
    with open(path, "rb") as f:
        data = f.read()
    text = b"".join(data.split())
    if text and all(c in string.hexdigits.encode() for c in text) and len(text) % 2 == 0:
        return bytes.fromhex(text.decode())
    return data


def _hex_arg(value, what):
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ra.IdentityError("%s: not hex" % what)


def _init(args):
    if args.key_file and not args.passphrase_env and not os.path.exists(args.key_file):
        ra.create_key_file(args.key_file)
        print("created key file %s (32 random bytes, mode 0600): keep it off this machine" % args.key_file)
    vault = ra.init(args.dir, unlock_from_args(args, confirm=True))
    print("RA initialised in %s" % args.dir)
    print("epoch 0 public key: %s" % vault.public_key.hex())
    return 0


def _register_identity(args):
    fields = {"name": args.name, "licence": args.licence, "vehicle_id": args.vehicle_id or ""}
    with ra.RegistrationAuthority.open(args.dir, unlock_from_args(args)) as authority:
        identity_id = authority.register_identity(fields, _hex_arg(args.device_pubkey, "device_pubkey"))
    print(identity_id.hex())
    return 0


def _disable_identity(args):
    with ra.RegistrationAuthority.open(args.dir, unlock_from_args(args)) as authority:
        authority.set_identity_enabled(_hex_arg(args.identity_id, "identity id"), args.enable)
    print("identity %s %s" % (args.identity_id, "enabled" if args.enable else "disabled"))
    return 0


def _sign(args):
    request = _read_input(args.request)
    with ra.RegistrationAuthority.open(args.dir, unlock_from_args(args)) as authority:
        response = authority.handle(request)
    with open(args.out, "wb") as f:
        f.write(response)
    reply = msg.decode_reply(response)
    if isinstance(reply, msg.RegistrationError):
        raise Failure("refused: %s: %s (error response written to %s)" % (reply.reason(), reply.text, args.out))
    print("signed %d keys under epoch %d; response written to %s" % (len(reply.ra_sigs), reply.epoch, args.out))
    return 0


def _audit(args):
    items = [_read_input(path) for path in args.tx]
    with ra.RegistrationAuthority.open(args.dir, unlock_from_args(args)) as authority:
        found = authority.audit(items)
    if not found:
        print("no accounts found in %s" % ", ".join(args.tx))
        return 1
    print_audit(found)
    return 0


def print_audit(found):
    """The table of ``RegistrationAuthority.audit``: one row per account address."""
    rows = [("address", "identity", "name", "licence", "vehicle id", "status")]
    for address, identity in found.items():
        if identity is None:
            rows.append((address.hex(), "-", "(not registered with this RA)", "", "", ""))
        else:
            status = "enabled" if identity.enabled else "disabled"
            rows.append((address.hex(), identity.identity_id.hex(), identity.name, identity.licence, identity.vehicle_id, status))
    _table(rows)


def _rotate(args):
    vault = ra.rotate(args.dir, unlock_from_args(args))
    print("epoch %d is now signing, public key %s" % (vault.epoch, vault.public_key.hex()))
    print("epoch %d's signing key is destroyed; its public key is kept to verify its accounts" % (vault.epoch - 1))
    return 0


def _status(args):
    epochs = ra.public_epochs(args.dir)
    with ra.repository(args.dir) as repo:
        counts = repo.counts()
    newest = epochs[-1][0]
    rows = [("epoch", "public key", "created (UTC)", "accounts", "")]
    for epoch, pubkey, created in epochs:
        when = datetime.datetime.fromtimestamp(created, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        role = "signing" if epoch == newest else "verify only"
        rows.append((str(epoch), pubkey.hex(), when, str(counts["accounts_by_epoch"].get(epoch, 0)), role))
    print("RA in %s" % args.dir)
    _table(rows)
    print("identities: %d (%d disabled)" % (counts["identities"], counts["disabled"]))
    print("registration batches: %d" % counts["batches"])
    return 0


def _table(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def add_unlock_options(parser):
    """The RA key's unlock options, read by ``unlock_from_args``."""
    parser.add_argument("--key-file", help="unlock with this 32-byte key file")
    parser.add_argument("--passphrase-env", metavar="NAME", help="unlock with the passphrase in environment variable NAME")


def add_parser(subparsers):
    """Register ``ra`` and its commands on the ``plugpay`` command line."""
    p = subparsers.add_parser("ra", help="the Registration Authority: keys, identities, batch signing, audit")
    sub = p.add_subparsers(dest="ra_command", metavar="RA_COMMAND")
    sub.required = True

    def command(name, func, help, unlock=True):
        c = sub.add_parser(name, help=help)
        c.add_argument("--dir", required=True, help="the RA directory (key file and certificate repository)")
        if unlock:
            add_unlock_options(c)
        c.set_defaults(func=func)
        return c

    command("init", _init, "create the RA key (epoch 0, sealed) and an empty repository; --key-file creates the file if missing")
    c = command("register-identity", _register_identity, "register a checked identity with its device's long-term key; prints its id")
    c.add_argument("--name", required=True)
    c.add_argument("--licence", required=True, help="driving licence number")
    c.add_argument("--vehicle-id", help="the vehicle's 17-character VIN (none for a charger's operator)")
    c.add_argument("--device-pubkey", required=True, help="the onboard unit's long-term public key (33 bytes, hex)")
    c = command("disable-identity", _disable_identity, "stop an identity registering more keys (--enable undoes it)")
    c.add_argument("identity_id", help="identity id (hex)")
    c.add_argument("--enable", action="store_true", help="re-enable instead")
    c = command("sign", _sign, "answer a registration request file (binary or hex) with a response file")
    c.add_argument("--request", required=True, help="a RegistrationRequest, as a device wrote it")
    c.add_argument("--out", required=True, help="where to write the RegistrationResponse or RegistrationError")
    c = command("audit", _audit, "name the identities behind the accounts in transactions, ledger requests or blocks")
    c.add_argument("--tx", required=True, action="append", help="a transaction, ledger request or block file (binary or hex); repeatable")
    command("rotate", _rotate, "start a new key epoch; old epochs only verify")
    command("status", _status, "epochs, public keys and counts (needs no key)", unlock=False)
    return p
