"""The ledger's state: tables of CBOR rows in SQLite, their mirrors in memory, the digest.

State lives in SQLite tables of the form ``(key columns..., data)`` where ``data`` is the
deterministic CBOR of the row. Tables that the hot path reads (live outputs, channels,
HTLCs, market requests, totals) are mirrored in memory; history that only grows (spent
outputs, confirmed requests, bids) is read from SQLite on the paths that need it.

Every row is an entry of the state digest, an additive multiset hash (AdHash) kept
incrementally: the sum, modulo 2**2048, of SHAKE-256 of each entry, hashed down to 32 bytes.
Inserting a row adds its term, deleting subtracts it, so the digest costs a hash per write.
The 2048-bit modulus, rather than 256 bits, is what keeps Wagner's generalised birthday
attack from forging a multiset with a chosen sum: the digest is what a replica that is
behind checks a snapshot from another (possibly Byzantine) replica against.

``State`` also holds what every contract family shares: the replay check, the totals, the
confirmed-request record, and signature verification, which skips a signature the engine
already verified for this very request (``trusted``) and, while a request is only being
checked (``checking``), refuses the first write, since every handler writes only after all
its checks passed.
"""
import collections
import hashlib

from plugpay.protocol import codec, signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

from .fastpath import key_cbor

ENTRY_BYTES = 256  # AdHash modulus 2**2048
DIGEST_DOMAIN = b"plugpay/ledger-state/v1"

Utxo = collections.namedtuple("Utxo", "account amount height")
Spent = collections.namedtuple("Spent", "account amount height spent_by spent_height")
Confirmed = collections.namedtuple("Confirmed", "height tag raw")
Channel = collections.namedtuple(
    "Channel", "consumer producer collateral installments window status seq paid deadline height"
)
HtlcRow = collections.namedtuple("HtlcRow", "payer payee amount hashlock timeout status height")
MarketRow = collections.namedtuple(
    "MarketRow", "region window_start window_end window_unit energy_wh bid_deadline status chosen bids height"
)
Bid = collections.namedtuple("Bid", "seq unit_price digest height lat_e6 lon_e6")
Listed = collections.namedtuple("Listed", "")  # a market_open row is all key
Total = collections.namedtuple("Total", "value")


class Reject(Exception):
    """A request the ledger refuses: a reason code of ``ledger_ops`` and a short text."""

    def __init__(self, reason, detail=""):
        Exception.__init__(self, detail)
        self.reason = reason
        self.detail = detail


class Checked(Exception):
    """Raised at the first write of a request that is only being checked: it passed."""


def signature_key(pubkey, digest, sig):
    """What a verified signature is remembered by: key, digest and signature, hashed."""
    return sha256(pubkey + digest + sig)


class Table:
    """One state table: key columns plus a CBOR ``data`` column, each row a digest entry.

    ``cached`` tables keep every row decoded in ``rows``; the others are looked up in
    SQLite. Writes are staged in ``pending`` (key -> [data at the last flush or None, data
    now or None, record now or None]) and reach SQLite and the state's digest at
    ``flush``, one ``executemany`` per kind of statement: a row written several times in
    a block (the totals) costs one statement and two digest terms, and a row inserted and
    deleted in one block none. Reads see the staged writes.
    """

    def __init__(self, state, name, keys, record, cached):
        self.state = state
        self.name = name
        self.keys = keys  # ((column, python type), ...)
        self.record = record
        self.cached = cached
        self.rows = {}
        self.blobs = {}  # cached tables: the stored data, so a delete need not re-encode
        self.pending = {}
        self.prefix = codec.dumps(name)
        sql_type = {bytes: "BLOB", int: "INTEGER", str: "TEXT"}
        cols = ", ".join(k for k, _ in keys)
        where = " AND ".join(k + " = ?" for k, _ in keys)
        table = "ledger_" + name
        self.sql_create = "CREATE TABLE IF NOT EXISTS %s (%s, data BLOB NOT NULL, PRIMARY KEY (%s)) WITHOUT ROWID" % (
            table, ", ".join("%s %s NOT NULL" % (k, sql_type[t]) for k, t in keys), cols)
        self.sql_get = "SELECT data FROM %s WHERE %s" % (table, where)
        self.sql_insert = "INSERT INTO %s VALUES (%s)" % (table, ", ".join("?" * (len(keys) + 1)))
        self.sql_update = "UPDATE %s SET data = ? WHERE %s" % (table, where)
        self.sql_delete = "DELETE FROM %s WHERE %s" % (table, where)
        self.sql_scan = "SELECT %s, data FROM %s ORDER BY %s" % (cols, table, cols)
        self.sql_prefix = "SELECT %s, data FROM %s WHERE %s = ? ORDER BY %s" % (cols, table, keys[0][0], cols)
        self.sql_clear = "DELETE FROM " + table

    def term(self, key, blob):
        """The digest term of a row: SHAKE-256 of name, key and data, each self-delimiting."""
        entry = self.prefix + key_cbor(key) + blob
        return int.from_bytes(hashlib.shake_256(entry).digest(ENTRY_BYTES), "big")

    def _decode(self, blob):
        return self.record(*codec.loads(blob, self.name))

    def load(self):
        """Drop staged writes, re-read the cache; return the digest terms of every row."""
        self.pending = {}
        total = 0
        rows, blobs = {}, {}
        n = len(self.keys)
        for row in self.state.conn.execute(self.sql_scan):
            key, blob = tuple(row[:n]), row[n]
            total += self.term(key, blob)
            if self.cached:
                rows[key] = self._decode(blob)
                blobs[key] = blob
        self.rows, self.blobs = rows, blobs
        return total

    def get(self, key):
        if self.cached:
            return self.rows.get(key)
        staged = self.pending.get(key)
        if staged is not None:
            return staged[2]
        row = self.state.conn.execute(self.sql_get, key).fetchone()
        return None if row is None else self._decode(row[0])

    def with_prefix(self, first):
        """Rows whose first key column is ``first``, in key order: [(key, record)]."""
        self.flush()
        n = len(self.keys)
        return [(tuple(r[:n]), self._decode(r[n])) for r in self.state.conn.execute(self.sql_prefix, (first,))]

    def page(self, first, offset, limit):
        """``with_prefix`` cut to ``limit`` rows from the ``offset``-th."""
        self.flush()
        n = len(self.keys)
        rows = self.state.conn.execute(self.sql_prefix + " LIMIT ? OFFSET ?", (first, limit, offset))
        return [(tuple(r[:n]), self._decode(r[n])) for r in rows]

    def _stage(self, key, old_blob, blob, value):
        if self.state.checking:
            raise Checked()
        staged = self.pending.get(key)
        if staged is None:
            self.pending[key] = [old_blob, blob, value]
        else:
            staged[1] = blob
            staged[2] = value
        if self.cached:
            if blob is None:
                del self.rows[key]
                del self.blobs[key]
            else:
                self.rows[key] = value
                self.blobs[key] = blob

    def insert(self, key, value):
        self._stage(key, None, codec.dumps(list(value)), value)

    def _old_blob(self, key, old):
        if self.cached:
            return self.blobs[key]
        staged = self.pending.get(key)
        return staged[1] if staged is not None else codec.dumps(list(old))

    def update(self, key, old, new):
        self._stage(key, self._old_blob(key, old), codec.dumps(list(new)), new)

    def delete(self, key, old):
        self._stage(key, self._old_blob(key, old), None, None)

    def flush(self):
        """Write the staged rows to SQLite and their terms to the digest."""
        pending = self.pending
        if not pending:
            return
        self.pending = {}
        term = self.term
        inserts, updates, deletes = [], [], []
        change = 0
        for key, (before, after, _) in pending.items():
            if before is None:
                if after is not None:
                    inserts.append(key + (after,))
                    change += term(key, after)
            elif after is None:
                deletes.append(key)
                change -= term(key, before)
            elif after != before:
                updates.append((after,) + key)
                change += term(key, after) - term(key, before)
        conn = self.state.conn
        if deletes:
            conn.executemany(self.sql_delete, deletes)
        if updates:
            conn.executemany(self.sql_update, updates)
        if inserts:
            conn.executemany(self.sql_insert, inserts)
        self.state._digest_sum += change

    def scan(self):
        """Every row as ``[key..., data]``, in key order (SQLite orders blobs by memcmp)."""
        self.flush()
        return [list(r) for r in self.state.conn.execute(self.sql_scan)]

    def check_rows(self, rows, path):
        """Type-check snapshot rows of this table before any of them is written."""
        if not isinstance(rows, list):
            raise DecodeError(path, "expected an array of rows")
        n = len(self.keys)
        previous = None
        for i, row in enumerate(rows):
            where = "%s[%d]" % (path, i)
            if not isinstance(row, list) or len(row) != n + 1:
                raise DecodeError(where, "expected %d key columns and data" % n)
            for (column, kind), value in zip(self.keys, row):
                if type(value) is not kind:
                    raise DecodeError(where + "." + column, "expected " + kind.__name__)
                if kind is int and not 0 <= value < 1 << 63:
                    raise DecodeError(where + "." + column, "outside SQLite's integer range")
            # Python orders bytes, ints and str keys as SQLite does (memcmp, numeric, UTF-8
            # binary), so strictly increasing keys are the canonical order and unique.
            key = tuple(row[:n])
            if previous is not None and key <= previous:
                raise DecodeError(where, "rows out of key order or repeated")
            previous = key
            if not isinstance(row[n], bytes):
                raise DecodeError(where + ".data", "expected bytes")
            value = codec.loads(row[n], where + ".data")
            if not isinstance(value, list) or len(value) != len(self.record._fields):
                raise DecodeError(where + ".data", "expected %d fields" % len(self.record._fields))


class State:
    """Every table over one SQLite connection (in the order a snapshot lists them), the
    digest, and the checks and writes every contract family shares."""

    def __init__(self, conn):
        self.conn = conn
        self._digest_sum = 0
        self.checking = False  # a request is being checked, not applied: writes end it
        self.trusted = frozenset()  # signatures the engine verified for the current request
        self.verified_now = None  # while checking: the signatures that verified
        self.utxos = Table(self, "utxos", (("txhash", bytes), ("sn", int)), Utxo, True)
        self.spent = Table(self, "spent", (("txhash", bytes), ("sn", int)), Spent, False)
        self.confirmed = Table(self, "confirmed", (("id", bytes),), Confirmed, False)
        self.channels = Table(self, "channels", (("channel_id", bytes),), Channel, True)
        self.htlcs = Table(self, "htlcs", (("htlc_id", bytes),), HtlcRow, True)
        self.market = Table(self, "market", (("request_key", bytes),), MarketRow, True)
        self.bids = Table(self, "bids", (("request_key", bytes), ("bidder_key", bytes)), Bid, False)
        # The requests still taking bids, by region and age: what QUERY_MARKET_REGION pages.
        self.market_open = Table(self, "market_open", (
            ("region_key", bytes), ("height", int), ("request_key", bytes), ("bid_deadline", int)), Listed, False)
        self.totals = Table(self, "totals", (("name", str),), Total, True)
        self.tables = (self.utxos, self.spent, self.confirmed, self.channels, self.htlcs,
                       self.market, self.bids, self.market_open, self.totals)
        for table in self.tables:
            conn.execute(table.sql_create)

    def reload(self):
        """Drop the caches and rebuild them, and the digest, from the connection."""
        self._digest_sum = sum(table.load() for table in self.tables)

    def flush(self):
        """Write every table's staged rows to the connection."""
        for table in self.tables:
            table.flush()

    def state_digest(self):
        self.flush()
        total = self._digest_sum % (1 << (8 * ENTRY_BYTES))
        return sha256(DIGEST_DOMAIN + total.to_bytes(ENTRY_BYTES, "big"))

    # -- signatures --------------------------------------------------------------------

    def verify_digest(self, pubkey, digest, sig):
        """``signing.verify_digest``, skipped for a signature in ``trusted``: verification
        is a pure function, so one that held once holds on every node at every height."""
        if self.trusted and signature_key(pubkey, digest, sig) in self.trusted:
            return True
        ok = signing.verify_digest(pubkey, digest, sig)
        if ok and self.verified_now is not None:
            self.verified_now.append(signature_key(pubkey, digest, sig))
        return ok

    def verify(self, pubkey, struct, sig):
        return self.verify_digest(pubkey, struct.signing_digest(), sig)

    # -- shared checks and writes ------------------------------------------------------

    def require_new(self, ident):
        """A request (by its id) that is already confirmed is a replay."""
        if self.confirmed.get((ident,)) is not None:
            raise Reject(L.DUPLICATE, "already confirmed: " + ident.hex())

    def confirm(self, ident, height, op, raw):
        self.confirmed.insert((ident,), Confirmed(height, op.TAG, raw))

    def total(self, name):
        row = self.totals.get((name,))
        return 0 if row is None else row.value

    def add_total(self, name, amount):
        if not amount:
            return
        old = self.totals.get((name,))
        if old is None:
            self.totals.insert((name,), Total(amount))
        else:
            self.totals.update((name,), old, Total(old.value + amount))

    def pay(self, txhash, payouts, height):
        """Outputs from a channel or HTLC: ``(sn, encoded account, amount)``; 0 is skipped."""
        for sn, account, amount in payouts:
            if amount:
                self.utxos.insert((txhash, sn), Utxo(account, amount, height))
