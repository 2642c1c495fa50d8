"""The RA's certificate repository: which identity registered which one-time account.

Gao et al.'s RA "stores Pk_user and the corresponding identity in the certificate
repository" and later names the identity behind any account in a transaction. This is that
repository, in one SQLite file (WAL, ``synchronous=FULL``: a batch is durable before its
signatures leave the RA, so no account the ledger accepts can be missing here).

What a stolen database file reveals, and why:

* Identity documents (name, licence, vehicle id) are sealed with ``aead`` under a key
  derived from the RA master secret, so auditing needs the unsealed RA key: the file alone
  names nobody. The associated data binds each sealed document to its row's id, device key
  and enabled flag, so a row forged or altered by someone who can write the file but does
  not hold the key is detected before it is trusted.
* Each account's owner (identity id, registration time) is sealed the same way, bound to the
  account's public key. A plaintext owner column would let a thief link all the one-time
  accounts of one person, which is exactly what one-time accounts exist to prevent; the
  tables are ``WITHOUT ROWID`` (kept in key order, not insertion order) for the same reason.
* Lookups that must not scan and unseal every row use keyed hashes (HMAC-SHA256 under a
  secret "salt" derived from the master secret): licence and vehicle id of an identity,
  and each used request nonce. A per-row random salt would force that scan; an unkeyed
  hash of a licence number could be reversed by trying every plausible number.
* In the clear: account public keys, addresses and epochs (all three are public on the
  ledger anyway), device public keys (random keys naming no one), flags and counts.
"""
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass

from plugpay.protocol import aead, codec
from plugpay.protocol.port import hmac_sha256, sha256

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE identities (id BLOB PRIMARY KEY, lookup BLOB NOT NULL UNIQUE,"
    " device_pubkey BLOB NOT NULL UNIQUE, enabled INTEGER NOT NULL, document BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE accounts (pubkey BLOB PRIMARY KEY, address BLOB NOT NULL UNIQUE,"
    " epoch INTEGER NOT NULL, owner BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE nonces (tag BLOB PRIMARY KEY) WITHOUT ROWID",
)


class RepositoryError(Exception):
    """The repository cannot do what was asked (missing, wrong key, altered rows)."""


class Locked(RepositoryError):
    """An operation that reads identities, attempted without the RA key."""


class DuplicateIdentity(RepositoryError):
    def __init__(self, field, existing_id):
        super().__init__("an identity with this %s is already registered (%s)" % (field, existing_id.hex()))
        self.existing_id = existing_id


@dataclass(frozen=True)
class RepositoryKeys:
    """The repository's keys, all derived from the RA master secret (never stored)."""

    seal: bytes
    lookup: bytes
    check: bytes

    @classmethod
    def derive(cls, master):
        return cls(
            hmac_sha256(master, b"plugpay/ra/repository/seal"),
            hmac_sha256(master, b"plugpay/ra/repository/lookup"),
            hmac_sha256(master, b"plugpay/ra/repository/check"),
        )

    def __repr__(self):
        return "RepositoryKeys(...)"


@dataclass(frozen=True)
class Identity:
    identity_id: bytes
    name: str
    licence: str
    vehicle_id: str
    device_pubkey: bytes
    enabled: bool


@dataclass(frozen=True)
class AccountRecord:
    pubkey: bytes
    address: bytes
    epoch: int
    identity_id: bytes
    registered: int


def _identity_aad(identity_id, device_pubkey, enabled):
    return b"plugpay/ra/identity" + identity_id + device_pubkey + bytes((1 if enabled else 0,))


def _owner_aad(pubkey, epoch):
    return b"plugpay/ra/account" + pubkey + epoch.to_bytes(4, "big")


class CertificateRepository:
    """Identities and registered accounts. ``keys=None`` opens it for counts only."""

    def __init__(self, path, keys=None, create=False):
        self.path = os.fspath(path)
        self.keys = keys
        if create:
            if keys is None:
                raise Locked("creating a certificate repository needs the RA key")
            # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the
            # database file's permissions.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        elif not os.path.exists(self.path):
            raise RepositoryError("no certificate repository at %s (run `plugpay ra init`)" % self.path)
        self.db = sqlite3.connect("file:%s?mode=rw" % self.path, uri=True, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if create:
            with self.transaction():
                for statement in _SCHEMA:
                    self.db.execute(statement)
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                self.db.execute("INSERT INTO meta VALUES ('key_check', ?)", (keys.check,))
        self._check_open()

    def _check_open(self):
        try:
            meta = dict(self.db.execute("SELECT name, value FROM meta"))
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise RepositoryError("%s is not a certificate repository: %s" % (self.path, e))
        if meta.get("schema_version") != SCHEMA_VERSION:
            self.db.close()
            raise RepositoryError("%s has schema version %r, expected %d" % (self.path, meta.get("schema_version"), SCHEMA_VERSION))
        if self.keys is not None and meta.get("key_check") != self.keys.check:
            self.db.close()
            raise RepositoryError("%s belongs to a different RA key" % self.path)

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def transaction(self):
        """One write transaction, taken at once (``BEGIN IMMEDIATE``) so a check and the
        insert it guards cannot interleave with another writer; rolled back on any error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _keys(self):
        if self.keys is None:
            raise Locked("the certificate repository is sealed: this needs the unsealed RA key")
        return self.keys

    def _lookup(self, *fields):
        return hmac_sha256(self._keys().lookup, b"plugpay/ra/identity-lookup" + codec.dumps(list(fields)))

    # Identities

    def add_identity(self, identity_id, name, licence, vehicle_id, device_pubkey):
        keys = self._keys()
        # One identity per licence and vehicle; a charger (no vehicle id) is one per device
        # key, as an operator runs many chargers under one licence.
        lookup = self._lookup(licence, vehicle_id) if vehicle_id else self._lookup(licence, vehicle_id, device_pubkey)
        row = self.db.execute("SELECT id FROM identities WHERE lookup = ?", (lookup,)).fetchone()
        if row is not None:
            raise DuplicateIdentity("licence and vehicle id", row[0])
        row = self.db.execute("SELECT id FROM identities WHERE device_pubkey = ?", (device_pubkey,)).fetchone()
        if row is not None:
            raise DuplicateIdentity("device key", row[0])
        document = aead.seal(keys.seal, codec.dumps([name, licence, vehicle_id]), _identity_aad(identity_id, device_pubkey, True))
        self.db.execute(
            "INSERT INTO identities (id, lookup, device_pubkey, enabled, document) VALUES (?, ?, ?, 1, ?)",
            (identity_id, lookup, device_pubkey, document),
        )

    def identity(self, identity_id):
        """The identity, its sealed document checked and opened; None if unknown."""
        keys = self._keys()
        row = self.db.execute("SELECT device_pubkey, enabled, document FROM identities WHERE id = ?", (identity_id,)).fetchone()
        if row is None:
            return None
        device_pubkey, enabled, document = row[0], bool(row[1]), row[2]
        try:
            name, licence, vehicle_id = codec.loads(aead.unseal(keys.seal, document, _identity_aad(identity_id, device_pubkey, enabled)))
        except (aead.AuthError, codec.DecodeError, ValueError):
            raise RepositoryError("identity %s: row altered outside the RA (document fails authentication)" % identity_id.hex())
        return Identity(identity_id, name, licence, vehicle_id, device_pubkey, enabled)

    def find_identity(self, licence, vehicle_id):
        row = self.db.execute("SELECT id FROM identities WHERE lookup = ?", (self._lookup(licence, vehicle_id),)).fetchone()
        return None if row is None else self.identity(row[0])

    def set_enabled(self, identity_id, enabled):
        """Enable or disable; the document is resealed because its seal binds the flag."""
        identity = self.identity(identity_id)
        if identity is None:
            return False
        document = aead.seal(
            self.keys.seal,
            codec.dumps([identity.name, identity.licence, identity.vehicle_id]),
            _identity_aad(identity_id, identity.device_pubkey, enabled),
        )
        self.db.execute("UPDATE identities SET enabled = ?, document = ? WHERE id = ?", (int(enabled), document, identity_id))
        return True

    # Registration batches

    def _nonce_tag(self, identity_id, nonce):
        return hmac_sha256(self._keys().lookup, b"plugpay/ra/nonce" + identity_id + nonce)

    def nonce_used(self, identity_id, nonce):
        return self.db.execute("SELECT 1 FROM nonces WHERE tag = ?", (self._nonce_tag(identity_id, nonce),)).fetchone() is not None

    def registered_among(self, pubkeys):
        """The subset of ``pubkeys`` already registered (to anyone)."""
        taken = set()
        chunk = 500  # well under SQLite's limit on bound parameters
        for i in range(0, len(pubkeys), chunk):
            part = pubkeys[i : i + chunk]
            sql = "SELECT pubkey FROM accounts WHERE pubkey IN (%s)" % ",".join("?" * len(part))
            taken.update(row[0] for row in self.db.execute(sql, part))
        return taken

    def store_batch(self, identity_id, nonce, epoch, pubkeys, now):
        """Record a signed batch; call inside ``transaction()`` after the checks."""
        keys = self._keys()
        owner = codec.dumps([identity_id, now])
        rows = [(pk, sha256(pk), epoch, aead.seal(keys.seal, owner, _owner_aad(pk, epoch))) for pk in pubkeys]
        self.db.execute("INSERT INTO nonces (tag) VALUES (?)", (self._nonce_tag(identity_id, nonce),))
        self.db.executemany("INSERT INTO accounts (pubkey, address, epoch, owner) VALUES (?, ?, ?, ?)", rows)

    # Queries

    def account(self, pubkey_or_address):
        """The registration of an account, by its 33-byte public key or 32-byte address."""
        keys = self._keys()
        column = "pubkey" if len(pubkey_or_address) == 33 else "address"
        row = self.db.execute("SELECT pubkey, address, epoch, owner FROM accounts WHERE %s = ?" % column, (pubkey_or_address,)).fetchone()
        if row is None:
            return None
        pubkey, address, epoch, owner = row
        try:
            identity_id, registered = codec.loads(aead.unseal(keys.seal, owner, _owner_aad(pubkey, epoch)))
        except (aead.AuthError, codec.DecodeError, ValueError):
            raise RepositoryError("account %s: row altered outside the RA (owner fails authentication)" % address.hex())
        return AccountRecord(pubkey, address, epoch, identity_id, registered)

    def counts(self):
        """Identities (all, disabled) and accounts per epoch: needs no key."""
        identities, disabled = self.db.execute("SELECT COUNT(*), COALESCE(SUM(enabled = 0), 0) FROM identities").fetchone()
        per_epoch = dict(self.db.execute("SELECT epoch, COUNT(*) FROM accounts GROUP BY epoch ORDER BY epoch"))
        batches = self.db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]
        return {"identities": identities, "disabled": disabled, "batches": batches, "accounts_by_epoch": per_epoch}
