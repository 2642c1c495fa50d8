"""The Registration Authority: its sealed keys, identity registration, batch signing, audit.

Gao et al.'s RA checks a user's identity, signs each of the user's public keys and keeps
pubkey -> identity in its certificate repository (``certs``); on a dispute it names the
identity behind the accounts of a transaction. Here the identity is registered once, in
person, with the vehicle's long-term device key; afterwards the device registers batches of
one-time keys itself, each batch signed by that device key (``ra_messages``).

Keys. ``DIR/ra.key`` holds, sealed with ``aead`` under a key derived from a passphrase
(scrypt) or from a key file kept elsewhere, a master secret and the newest epoch's signing
key. The master secret derives the repository's keys (``certs.RepositoryKeys``), so auditing
needs the unsealed RA key: the database file alone names nobody. ``rotate`` starts epoch
k+1 and destroys epoch k's signing key; every epoch's public key stays in the file (bound to
the sealed part as associated data), so accounts of old epochs still verify. A key file that
fails to parse or to authenticate is reported and never used, and it is never overwritten:
``init`` refuses an existing file and ``rotate`` writes a new file only after the old one
unsealed, atomically (temp file, fsync, rename).
"""
import hashlib
import logging
import os
import re
import sqlite3
import time

from plugpay.host import certs
from plugpay.protocol import aead, codec, signing
from plugpay.protocol import ra_messages as msg
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import hmac_sha256
from plugpay.protocol.schema import ArrayOf, Bytes, Nested, Record, Text, UInt
from plugpay.protocol.structures import TAG_ACCOUNT, Account

log = logging.getLogger("plugpay.ra")

KEY_FILE = "ra.key"
REPOSITORY_FILE = "certs.sqlite"
MAGIC = "plugpay-ra-key"
KEY_FILE_VERSION = 1
SCRYPT_LOG2N = 15  # 32 MiB and ~0.1 s per unlock: cheap for the RA, costly for a guesser
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 12
MAX_EPOCHS = 1000


class KeyStoreError(Exception):
    """The RA key file is missing, malformed, tampered with, or the unlock is wrong."""


class IdentityError(ValueError):
    """An identity document field that fails its format check, or an unknown identity."""


class Refusal(Exception):
    """A registration batch refused with a ``ra_messages`` reason code."""

    def __init__(self, code, text):
        super().__init__("%s: %s" % (msg.REASONS[code], text))
        self.code = code
        self.text = text


# The key file, strictly decoded with the same schema machinery as the wire structures.


class _Kdf(Record):
    NAME = "ra_key.kdf"
    # Upper bounds keep a tampered header from making an unlock allocate more than 256 MiB
    # (scrypt needs 128 * r * 2**log2n bytes) before authentication fails.
    FIELDS = (("kind", Text(16)), ("salt", Bytes(16)), ("log2n", UInt(18)), ("r", UInt(8)), ("p", UInt(4)))

    def validate(self, path):
        if self.kind == "scrypt":
            if self.log2n < 14 or self.r < 1 or self.p < 1:
                raise DecodeError(path, "scrypt parameters below the minimum")
        elif self.kind != "keyfile":
            raise DecodeError(path + ".kind", "unknown key derivation %r" % self.kind)


class _EpochKey(Record):
    NAME = "epoch"
    FIELDS = (("epoch", UInt(0xFFFFFFFF)), ("pubkey", Bytes(33)), ("created", UInt()))


class _KeyFile(Record):
    """magic, version, kdf, every epoch's public key, then the sealed secrets; the sealed
    part's associated data is the encoding of everything before it."""

    NAME = "ra_key"
    FIELDS = (
        ("magic", Text(32)),
        ("version", UInt(255)),
        ("kdf", Nested(_Kdf)),
        ("epochs", ArrayOf(Nested(_EpochKey), MAX_EPOCHS, 1)),
        ("sealed", Bytes(min=aead.OVERHEAD, max=aead.OVERHEAD + 128)),
    )
    UNSIGNED = 1

    def validate(self, path):
        if self.magic != MAGIC:
            raise DecodeError(path + ".magic", "not a plugpay RA key file")
        if self.version != KEY_FILE_VERSION:
            raise DecodeError(path + ".version", "unknown version %d" % self.version)
        for i, e in enumerate(self.epochs):
            if e.epoch != i:
                raise DecodeError(path + ".epochs[%d]" % i, "epochs are not 0, 1, 2, ...")

    def aad(self):
        return codec.dumps(self.to_value(signed=False))


class _Secrets(Record):
    NAME = "ra_key.secrets"
    FIELDS = (("master", Bytes(32)), ("epoch", UInt(0xFFFFFFFF)), ("secret", Bytes(32)))


class Unlock:
    """How the operator proves they hold the RA key: a passphrase, or a 32-byte key file
    kept off the RA's disk (removable medium, secrets mount)."""

    def __init__(self, passphrase=None, key_file=None):
        if (passphrase is None) == (key_file is None):
            raise ValueError("unlock with exactly one of a passphrase or a key file")
        self.passphrase = passphrase.encode() if isinstance(passphrase, str) else passphrase
        self.key_file = key_file

    def __repr__(self):
        return "Unlock(passphrase)" if self.passphrase is not None else "Unlock(key_file=%s)" % self.key_file

    def new_kdf(self):
        salt = os.urandom(16)
        if self.passphrase is None:
            return _Kdf("keyfile", salt, 0, 0, 0)
        if len(self.passphrase) < MIN_PASSPHRASE:
            raise KeyStoreError("a passphrase needs at least %d characters" % MIN_PASSPHRASE)
        return _Kdf("scrypt", salt, SCRYPT_LOG2N, SCRYPT_R, SCRYPT_P)

    def sealing_key(self, kdf):
        if kdf.kind == "scrypt":
            if self.passphrase is None:
                raise KeyStoreError("this RA key is sealed under a passphrase, not a key file")
            n = 1 << kdf.log2n
            return hashlib.scrypt(self.passphrase, salt=kdf.salt, n=n, r=kdf.r, p=kdf.p, maxmem=256 * kdf.r * n * kdf.p, dklen=32)
        if self.key_file is None:
            raise KeyStoreError("this RA key is sealed under a key file, not a passphrase")
        try:
            with open(self.key_file, "rb") as f:
                material = f.read(33)
        except OSError as e:
            raise KeyStoreError("cannot read key file %s: %s" % (self.key_file, e.strerror))
        if len(material) != 32:
            raise KeyStoreError("key file %s must hold exactly 32 bytes" % self.key_file)
        return hmac_sha256(material, b"plugpay/ra/keyfile" + kdf.salt)


def create_key_file(path):
    """A new 32-byte random key file, 0600; refuses to replace an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))


class Vault:
    """The unsealed RA secrets, in memory only; ``repr`` never shows them."""

    def __init__(self, master, epoch, secret, epoch_keys):
        self._master = master
        self._secret = secret
        self.epoch = epoch
        self.epoch_keys = dict(epoch_keys)  # epoch -> compressed public key

    def __repr__(self):
        return "Vault(epoch=%d, epochs=%d)" % (self.epoch, len(self.epoch_keys))

    @property
    def public_key(self):
        return self.epoch_keys[self.epoch]

    def repository_keys(self):
        return certs.RepositoryKeys.derive(self._master)

    def epoch_secret(self, epoch):
        """The secret of ``epoch`` that opens requests sealed to its public key
        (``protocol.sealed``), or None: only the newest epoch's secret is kept. One key for
        signatures and for ECDH, as the wallets know the RA by that one public key."""
        return self._secret if epoch == self.epoch else None

    def sign_account(self, pubkey):
        """``Account.ra_sig`` of ``Account(pubkey, epoch, b"")`` under the newest epoch."""
        return signing.sign_digest(self._secret, Account(pubkey, self.epoch, b"").signing_digest())

    def verify_account(self, account):
        """True if ``account`` carries a valid RA signature of its epoch (old epochs too)."""
        pubkey = self.epoch_keys.get(account.epoch)
        return pubkey is not None and signing.verify(pubkey, account, account.ra_sig)


def _write_atomically(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_key_file(directory):
    path = os.path.join(directory, KEY_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read(codec.MAX_BYTES + 1)
    except FileNotFoundError:
        raise KeyStoreError("no RA key at %s (run `plugpay ra init`)" % path)
    try:
        return _KeyFile.decode(data)
    except DecodeError as e:
        raise KeyStoreError("%s is not a valid RA key file (truncated or corrupted): %s" % (path, e))


def _seal(directory, key, kdf, epochs, secrets, create):
    header = _KeyFile(MAGIC, KEY_FILE_VERSION, kdf, epochs, bytes(aead.OVERHEAD))
    header.sealed = aead.seal(key, secrets.encode(), header.aad())
    path = os.path.join(directory, KEY_FILE)
    if create:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode())
            f.flush()
            os.fsync(f.fileno())
    else:
        _write_atomically(path, header.encode())


def _open(directory, unlock):
    """Parse, authenticate and cross-check the key file: (file, sealing key, vault)."""
    keyfile = _read_key_file(directory)
    key = unlock.sealing_key(keyfile.kdf)
    try:
        secrets = _Secrets.decode(aead.unseal(key, keyfile.sealed, keyfile.aad()))
    except aead.AuthError:
        raise KeyStoreError(
            "%s failed authentication: wrong passphrase or key file, or the file was tampered with"
            % os.path.join(directory, KEY_FILE)
        )
    except DecodeError as e:
        raise KeyStoreError("%s: sealed secrets malformed: %s" % (os.path.join(directory, KEY_FILE), e))
    newest = keyfile.epochs[-1]
    if secrets.epoch != newest.epoch or signing.public_key(secrets.secret) != newest.pubkey:
        raise KeyStoreError("%s: the signing key does not match the newest epoch" % os.path.join(directory, KEY_FILE))
    vault = Vault(secrets.master, secrets.epoch, secrets.secret, ((e.epoch, e.pubkey) for e in keyfile.epochs))
    return keyfile, key, vault


def init(directory, unlock, now=None):
    """Create ``directory`` with a sealed RA key at epoch 0 and an empty repository."""
    directory = os.fspath(directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.exists(os.path.join(directory, KEY_FILE)) or os.path.exists(os.path.join(directory, REPOSITORY_FILE)):
        raise KeyStoreError("%s already holds an RA; refusing to overwrite it" % directory)
    kdf = unlock.new_kdf()
    key = unlock.sealing_key(kdf)
    master, secret = os.urandom(32), signing.new_secret()
    epochs = [_EpochKey(0, signing.public_key(secret), int(now if now is not None else time.time()))]
    _seal(directory, key, kdf, epochs, _Secrets(master, 0, secret), create=True)
    vault = Vault(master, 0, secret, [(0, epochs[0].pubkey)])
    certs.CertificateRepository(os.path.join(directory, REPOSITORY_FILE), vault.repository_keys(), create=True).close()
    return vault


def unseal(directory, unlock):
    """The RA's vault, or ``KeyStoreError`` naming what is wrong with the key file."""
    return _open(os.fspath(directory), unlock)[2]


def rotate(directory, unlock, now=None):
    """Start epoch k+1: a new signing key; epoch k's is destroyed, its public key kept."""
    directory = os.fspath(directory)
    keyfile, key, vault = _open(directory, unlock)
    if len(keyfile.epochs) >= MAX_EPOCHS:
        raise KeyStoreError("this RA has used all %d epochs" % MAX_EPOCHS)
    secret = signing.new_secret()
    epoch = vault.epoch + 1
    epochs = list(keyfile.epochs) + [_EpochKey(epoch, signing.public_key(secret), int(now if now is not None else time.time()))]
    _seal(directory, key, keyfile.kdf, epochs, _Secrets(vault._master, epoch, secret), create=False)
    return Vault(vault._master, epoch, secret, ((e.epoch, e.pubkey) for e in epochs))


def public_epochs(directory):
    """Every epoch as (epoch, public key, created) from the key file, without unsealing it.

    Unauthenticated until the file is unsealed (the list is the sealed part's associated
    data): fine for ``ra status``; a ledger takes its RA keys from an unsealed vault or a
    trusted copy."""
    return [(e.epoch, e.pubkey, e.created) for e in _read_key_file(os.fspath(directory)).epochs]


def repository(directory, vault=None):
    """The certificate repository of an RA directory; without a vault, for counts only."""
    keys = None if vault is None else vault.repository_keys()
    return certs.CertificateRepository(os.path.join(os.fspath(directory), REPOSITORY_FILE), keys)


# Identity documents.

_LICENCE = re.compile(r"[A-Z0-9][A-Z0-9-]{3,23}")
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")  # ISO 3779: 17 characters, no I, O or Q
IDENTITY_FIELDS = ("name", "licence", "vehicle_id")


def check_identity_document(fields):
    """Canonical (name, licence, vehicle_id) or ``IdentityError`` naming the bad field. A
    charger's document has an empty vehicle id: its operator has a licence, no vehicle.

    Licence and vehicle id are upper-cased and stripped before the check, so the keyed
    lookup hash finds the same person however the clerk typed them."""
    if not isinstance(fields, dict):
        raise IdentityError("an identity document is a mapping of %s" % ", ".join(IDENTITY_FIELDS))
    extra = set(fields) - set(IDENTITY_FIELDS)
    if extra:
        raise IdentityError("unknown identity field(s): %s" % ", ".join(sorted(map(str, extra))))
    for field in IDENTITY_FIELDS:
        if not isinstance(fields.get(field), str):
            raise IdentityError("%s: required text" % field)
    name = " ".join(fields["name"].split())
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise IdentityError("name: 1 to 100 printable characters")
    licence = fields["licence"].strip().upper()
    if not _LICENCE.fullmatch(licence):
        raise IdentityError("licence: 4 to 24 letters, digits or '-', starting with a letter or digit")
    vin = fields["vehicle_id"].strip().upper()
    if vin and not _VIN.fullmatch(vin):  # empty: a charger's operator, who registers no vehicle
        raise IdentityError("vehicle_id: a 17-character VIN (letters except I, O, Q, and digits)")
    return name, licence, vin


# Audit input: transactions, ledger requests, or blocks of any layout that nest them.


def accounts_in(items):
    """Every RA-signed ``Account`` in ``items``, in order of appearance.

    An item is a structure object (a ``Transaction`` or any ledger request) or encoded
    bytes of one, or of a block. Accounts travel inside many structures (transaction and
    change outputs, channel parties, HTLC payer and payee), and the block layout is the
    ledger's business, so rather than depend on either, the RA searches the decoded value
    for nested arrays that strictly decode as an ``Account``, looking inside byte strings
    that hold an encoded array too. A transaction's inputs name no account: they are
    outputs of the transactions they spend, so pass those as well to name the payers."""
    found = []
    for item in items:
        if isinstance(item, Record):
            _collect(item.to_value(), found)
        else:
            _collect(codec.loads(item, "audit input"), found)
    return found


def _collect(value, found):
    if isinstance(value, list):
        if len(value) == len(Account.FIELDS) + 2 and value[0] == TAG_ACCOUNT and type(value[0]) is int:
            try:
                found.append(Account.from_value(value))
                return
            except DecodeError:
                pass
        for item in value:
            _collect(item, found)
    elif isinstance(value, bytes) and value and 0x80 <= value[0] <= 0x9B:  # a CBOR array head
        try:
            _collect(codec.loads(value), found)
        except DecodeError:
            pass


class RegistrationAuthority:
    """The RA service over one directory: sans-IO, so any transport (the MQTT gateway, a
    file carried by hand for ``ra sign``) passes request bytes to ``handle``. One instance
    serves one thread (it holds one SQLite connection); several processes may share a
    directory, since every batch is one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, directory, vault, clock=time.time):
        self.vault = vault
        self.repo = repository(directory, vault)
        self.clock = clock

    @classmethod
    def open(cls, directory, unlock):
        return cls(directory, unseal(directory, unlock))

    def close(self):
        self.repo.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def register_identity(self, fields, device_pubkey):
        """Register a checked identity with its long-term device key; returns its new id.

        The id is random, not derived from the document, so it links to nobody by itself."""
        name, licence, vehicle_id = check_identity_document(fields)
        if not signing.valid_public_key(device_pubkey):
            raise IdentityError("device_pubkey: not a compressed secp256k1 public key")
        identity_id = os.urandom(msg.IDENTITY_ID_BYTES)
        with self.repo.transaction():
            self.repo.add_identity(identity_id, name, licence, vehicle_id, device_pubkey)
        return identity_id

    def set_identity_enabled(self, identity_id, enabled):
        """Disable (or re-enable) an identity: a disabled identity registers no more keys;
        its accounts already registered stay valid and auditable."""
        with self.repo.transaction():
            if not self.repo.set_enabled(identity_id, enabled):
                raise IdentityError("no identity %s" % identity_id.hex())

    def sign_batch(self, request):
        """Check a decoded request and sign every key, or raise ``Refusal``.

        Everything runs in one write transaction: a refused batch stores nothing, and the
        signatures are returned only after the batch is durably recorded, so every account
        the ledger will ever accept can be audited."""
        repo = self.repo
        with repo.transaction():
            identity = repo.identity(request.identity_id)
            if identity is None:
                raise Refusal(msg.UNKNOWN_IDENTITY, "identity %s is not registered" % request.identity_id.hex())
            if not identity.enabled:
                raise Refusal(msg.IDENTITY_DISABLED, "identity %s is disabled" % request.identity_id.hex())
            if not signing.verify(identity.device_pubkey, request, request.device_sig):
                raise Refusal(msg.BAD_SIGNATURE, "the request is not signed by the identity's device key")
            if repo.nonce_used(request.identity_id, request.nonce):
                return self._answer_again(request)
            seen = set()
            for i, pubkey in enumerate(request.pubkeys):
                if not signing.valid_public_key(pubkey):
                    raise Refusal(msg.INVALID_PUBKEY, "pubkeys[%d] is not a compressed secp256k1 public key" % i)
                if pubkey in seen:
                    raise Refusal(msg.DUPLICATE_PUBKEY, "pubkeys[%d] repeats an earlier key of the batch" % i)
                seen.add(pubkey)
            taken = repo.registered_among(request.pubkeys)
            if taken:
                first = next(i for i, pk in enumerate(request.pubkeys) if pk in taken)
                raise Refusal(
                    msg.ALREADY_REGISTERED,
                    "%d key(s) already registered, first pubkeys[%d]: one-time accounts are one-time" % (len(taken), first),
                )
            sigs = [self.vault.sign_account(pk) for pk in request.pubkeys]
            repo.store_batch(request.identity_id, request.nonce, self.vault.epoch, request.pubkeys, int(self.clock()))
        return msg.RegistrationResponse(request.nonce, self.vault.epoch, sigs)

    def _answer_again(self, request):
        """A nonce already used: the device asks again because our answer was lost (a
        broker restart, a reboot), so the same batch is signed again; any other batch under
        that nonce is a replay. Keys registered under an earlier epoch are not re-signed."""
        for pubkey in request.pubkeys:
            record = self.repo.account(pubkey) if signing.valid_public_key(pubkey) else None
            if record is None or record.identity_id != request.identity_id or record.epoch != self.vault.epoch:
                raise Refusal(msg.REPLAYED_NONCE, "nonce %s was already used by this identity for another batch"
                              % request.nonce.hex())
        return msg.RegistrationResponse(request.nonce, self.vault.epoch,
                                        [self.vault.sign_account(pk) for pk in request.pubkeys])

    def handle(self, data):
        """Request bytes in, response bytes out; never raises on bad input."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return _error(b"", msg.MALFORMED, "expected bytes, got %s" % type(data).__name__)
        if len(data) > codec.MAX_BYTES:
            return _error(b"", msg.MESSAGE_TOO_LARGE, "%d bytes exceed the %d-byte limit" % (len(data), codec.MAX_BYTES))
        try:
            request = msg.RegistrationRequest.decode(data)
        except msg.BatchTooLarge as e:
            return _error(b"", msg.BATCH_TOO_LARGE, str(e))
        except DecodeError as e:
            return _error(b"", msg.MALFORMED, str(e))
        try:
            return self.sign_batch(request).encode()
        except Refusal as r:
            return _error(request.nonce, r.code, r.text)
        except (sqlite3.Error, certs.RepositoryError) as e:
            log.error("registration batch not stored: %s", e)
            return _error(request.nonce, msg.UNAVAILABLE, "the RA could not store the batch; retry later")

    def account(self, pubkey_or_address):
        """The repository record of an account (identity id, epoch, registration time)."""
        return self.repo.account(pubkey_or_address)

    def audit(self, items):
        """{address: Identity or None} for every account in ``items``: transactions, other
        ledger requests or blocks, as objects or bytes (see ``accounts_in``). None means the
        account is not registered with this RA."""
        result, identities = {}, {}
        for account in accounts_in(items):
            address = account.address()
            if address in result:
                continue
            record = self.repo.account(account.pubkey)
            if record is None:
                result[address] = None
                continue
            if record.identity_id not in identities:
                identities[record.identity_id] = self.repo.identity(record.identity_id)
            result[address] = identities[record.identity_id]
        return result


def _error(nonce, code, text):
    raw = text.encode("utf-8")[: msg.MAX_REASON_TEXT]
    return msg.RegistrationError(nonce, code, raw.decode("utf-8", "ignore")).encode()
