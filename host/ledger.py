"""The deterministic ledger state machine that every PBFT replica runs.

The replica orders requests into blocks and calls ``Ledger.execute(height, requests)``; the
ledger checks each request (``plugpay.protocol.ledger_ops``) against the state, applies it or
rejects it with a reason code, and writes the new state to the replica's SQLite connection
without committing, so the replica commits a block and the state it produced as one
transaction. Execution depends only on the state, the height and the request bytes: no
wall clock, no randomness, no iteration over unordered containers, so every honest replica
computes the same results and the same state.

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
"""
import collections
import hashlib

try:
    import cbor2 as _cbor2
except ImportError:  # codec then runs its own backend, and the fast path is off
    _cbor2 = None

from plugpay.protocol import codec, signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256
from plugpay.protocol.schema import MAX_UINT

ENTRY_BYTES = 256  # AdHash modulus 2**2048
SNAPSHOT_VERSION = 1
MAX_SNAPSHOT_BYTES = 1 << 31
MAX_VERIFIED_ACCOUNTS = 1 << 18  # the RA-signature cache is cleared when it reaches this
SQL_MAX_INT = (1 << 63) - 1  # a bid deadline beyond this (never reached) is stored as this

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


def _pubkey(account):
    """The public key inside a stored, already verified, encoded ``Account``: its
    deterministic encoding always starts ``85 01 01 58 21`` (array of 5, tag 1, version 1,
    33-byte string), so the key is bytes 5..38; cheaper than decoding on every spend."""
    return account[5:38]


def _key_cbor(key):
    """``codec.dumps(list(key))``, written directly for the common keys: a 32-byte id,
    or a 32-byte txhash and an output number below 24."""
    if len(key) == 2:
        first, sn = key
        if type(first) is bytes and len(first) == 32 and type(sn) is int and 0 <= sn < 24:
            return b"\x82\x58\x20" + first + bytes((sn,))
    elif len(key) == 1:
        first = key[0]
        if type(first) is bytes and len(first) == 32:
            return b"\x81\x58\x20" + first
    return codec.dumps(list(key))


def _record(cls, values):
    """An instance of a schema record holding already checked ``values`` in field order,
    as ``Record.from_value`` builds it (no ``__init__``)."""
    obj = object.__new__(cls)
    obj.__dict__.update(zip(_FIELD_NAMES[cls], values))
    return obj


_FIELD_NAMES = dict((cls, tuple(name for name, _ in cls.FIELDS))
                    for cls in (S.Transaction, S.TxInput, S.Price, S.TxOutput, S.Account))
_ACCOUNT_DOMAIN = ("plugpay/%s/v%d" % (S.Account.NAME, S.Account.VERSION)).encode()


def _uint(value, limit=MAX_UINT):
    return type(value) is int and 0 <= value <= limit


def _signature(value):
    return type(value) is bytes and (len(value) == 64 or not value)


def _account(value):
    """A decoded ``Account`` value checked as ``Account.from_value`` does, or None."""
    if type(value) is not list or len(value) != 5 or value[0] != S.TAG_ACCOUNT or type(value[0]) is not int \
            or value[1] != S.Account.VERSION or type(value[1]) is not int:
        return None
    _, _, pubkey, epoch, ra_sig = value
    if type(pubkey) is not bytes or len(pubkey) != 33 or pubkey[0] not in (2, 3) or not _uint(epoch, 0xFFFFFFFF) \
            or not _signature(ra_sig):
        return None
    return _record(S.Account, value[2:])


def _decode_transaction(raw):
    """The hot request, a Gao transaction, decoded without the generic schema walk: the
    ``Transaction`` that ``ledger_ops.decode_request(raw)`` gives, or None for anything
    else (another operation, a malformed one, another CBOR backend), which the generic
    decoder then answers with its own error text. Every field is checked as its schema
    type checks it, and those checks (ints of 64 bits, bytes, arrays) imply codec's
    subset check; the re-encoding check is codec's, so only deterministic CBOR passes."""
    if codec.BACKEND != "cbor2" or raw[:2] != b"\x86\x02":  # [tag 2, ...] of 6 items
        return None
    try:
        value = _cbor2.loads(raw)
    except Exception:
        return None
    if type(value) is not list or len(value) != 6 or value[1] != S.Transaction.VERSION or type(value[1]) is not int:
        return None
    _, _, inputs, price, outputs, witnesses = value
    if type(inputs) is not list or type(price) is not list or type(outputs) is not list \
            or type(witnesses) is not list or not 1 <= len(inputs) <= S.MAX_TX_INPUTS \
            or not 1 <= len(outputs) <= S.MAX_TX_OUTPUTS or len(witnesses) != len(inputs):
        return None
    ins, outs = [], []
    for item in inputs:
        if type(item) is not list or len(item) != 2:
            return None
        pre_txhash, pre_sn = item
        if type(pre_txhash) is not bytes or len(pre_txhash) != 32 or not _uint(pre_sn, S.MAX_TX_OUTPUTS - 1):
            return None
        ins.append(_record(S.TxInput, item))
    if len(price) != 2 or not _uint(price[0]) or not _uint(price[1]):
        return None
    for item in outputs:
        if type(item) is not list or len(item) != 2 or not _uint(item[1]):
            return None
        account = _account(item[0])
        if account is None:
            return None
        outs.append(_record(S.TxOutput, (account, item[1])))
    for witness in witnesses:
        if not _signature(witness):
            return None
    if codec.dumps(value) != raw:
        return None
    return _record(S.Transaction, (ins, _record(S.Price, price), outs, list(witnesses)))


def _account_body(account):
    """``account.body()`` written directly, as ``_key_cbor`` writes keys: the array head of
    ``[tag 1, version 1, pubkey, epoch]``, the 33-byte key, then the epoch."""
    epoch = account.epoch
    return b"\x84\x01\x01\x58\x21" + account.pubkey + (bytes((epoch,)) if epoch < 24 else codec.dumps(epoch))


def _account_bytes(account):
    """``account.encode()``: the body with one more item in its head, then the signature."""
    sig = account.ra_sig
    return b"\x85" + _account_body(account)[1:] + (b"\x58\x40" + sig if sig else b"\x40")


def _account_digest(account):
    """``account.signing_digest()``: what the RA signed."""
    return sha256(_ACCOUNT_DOMAIN + _account_body(account))


def _key_bytes(key):
    """A 33-byte public key given as bytes or, from a cluster's JSON config, as hex."""
    key = bytes.fromhex(key) if isinstance(key, str) else bytes(key)
    if not signing.valid_public_key(key):
        raise ValueError("not a compressed secp256k1 public key: %s" % key.hex())
    return key


def _epoch_keys(ra_pubkeys):
    """RA epoch -> public key; JSON configs give the epochs as strings and the keys as hex."""
    if not ra_pubkeys:
        raise ValueError("the ledger needs the RA's public key of at least one epoch")
    return {int(epoch): _key_bytes(key) for epoch, key in dict(ra_pubkeys).items()}


def _clip(text):
    """Cut a detail text to the ``Result`` limit without splitting a UTF-8 character."""
    return text.encode("utf-8")[: L.MAX_DETAIL_BYTES].decode("utf-8", "ignore")


class _Table:
    """One state table: key columns plus a CBOR ``data`` column, each row a digest entry.

    ``cached`` tables keep every row decoded in ``rows``; the others are looked up in
    SQLite. Writes are staged in ``pending`` (key -> [data at the last flush or None, data
    now or None, record now or None]) and reach SQLite and the ledger's digest at
    ``flush``, one ``executemany`` per kind of statement: a row written several times in
    a block (the totals) costs one statement and two digest terms, and a row inserted and
    deleted in one block none. Reads see the staged writes.
    """

    def __init__(self, ledger, name, keys, record, cached):
        self.ledger = ledger
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
        entry = self.prefix + _key_cbor(key) + blob
        return int.from_bytes(hashlib.shake_256(entry).digest(ENTRY_BYTES), "big")

    def _decode(self, blob):
        return self.record(*codec.loads(blob, self.name))

    def load(self):
        """Drop staged writes, re-read the cache; return the digest terms of every row."""
        self.pending = {}
        total = 0
        rows, blobs = {}, {}
        n = len(self.keys)
        for row in self.ledger.conn.execute(self.sql_scan):
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
        row = self.ledger.conn.execute(self.sql_get, key).fetchone()
        return None if row is None else self._decode(row[0])

    def with_prefix(self, first):
        """Rows whose first key column is ``first``, in key order: [(key, record)]."""
        self.flush()
        n = len(self.keys)
        return [(tuple(r[:n]), self._decode(r[n])) for r in self.ledger.conn.execute(self.sql_prefix, (first,))]

    def page(self, first, offset, limit):
        """``with_prefix`` cut to ``limit`` rows from the ``offset``-th."""
        self.flush()
        n = len(self.keys)
        rows = self.ledger.conn.execute(self.sql_prefix + " LIMIT ? OFFSET ?", (first, limit, offset))
        return [(tuple(r[:n]), self._decode(r[n])) for r in rows]

    def _stage(self, key, old_blob, blob, value):
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
        conn = self.ledger.conn
        if deletes:
            conn.executemany(self.sql_delete, deletes)
        if updates:
            conn.executemany(self.sql_update, updates)
        if inserts:
            conn.executemany(self.sql_insert, inserts)
        self.ledger._digest_sum += change

    def scan(self):
        """Every row as ``[key..., data]``, in key order (SQLite orders blobs by memcmp)."""
        self.flush()
        return [list(r) for r in self.ledger.conn.execute(self.sql_scan)]

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


class Ledger:
    """The state machine: UTXOs of RA-signed one-time accounts, state channels, HTLCs and
    the market board, over one SQLite connection owned by the replica."""

    def __init__(self, conn, ra_pubkeys, faucet_pubkey=None):
        self.conn = conn
        self.ra_pubkeys = _epoch_keys(ra_pubkeys)
        self.faucet_pubkey = _key_bytes(faucet_pubkey) if faucet_pubkey is not None else None
        self._verified = set()  # accounts whose RA signature verified: memory only
        self._digest_sum = 0
        self.utxos = _Table(self, "utxos", (("txhash", bytes), ("sn", int)), Utxo, True)
        self.spent = _Table(self, "spent", (("txhash", bytes), ("sn", int)), Spent, False)
        self.confirmed = _Table(self, "confirmed", (("id", bytes),), Confirmed, False)
        self.channels = _Table(self, "channels", (("channel_id", bytes),), Channel, True)
        self.htlcs = _Table(self, "htlcs", (("htlc_id", bytes),), HtlcRow, True)
        self.market = _Table(self, "market", (("request_key", bytes),), MarketRow, True)
        self.bids = _Table(self, "bids", (("request_key", bytes), ("bidder_key", bytes)), Bid, False)
        # The requests still taking bids, by region and age: what QUERY_MARKET_REGION pages.
        self.market_open = _Table(self, "market_open", (
            ("region_key", bytes), ("height", int), ("request_key", bytes), ("bid_deadline", int)), Listed, False)
        self.totals = _Table(self, "totals", (("name", str),), Total, True)
        self.tables = (self.utxos, self.spent, self.confirmed, self.channels, self.htlcs,
                       self.market, self.bids, self.market_open, self.totals)
        self._handlers = {
            L.Transaction.TAG: self._transaction,
            L.TAG_FAUCET: self._faucet,
            L.TAG_REDEEM: self._redeem,
            L.TAG_CHANNEL_OPEN: self._channel_open,
            L.TAG_CHANNEL_CLOSE: self._channel_close,
            L.TAG_CHANNEL_DISPUTE: self._channel_dispute,
            L.TAG_CHANNEL_SETTLE: self._channel_settle,
            L.TAG_HTLC_CREATE: self._htlc_create,
            L.TAG_HTLC_CLAIM: self._htlc_claim,
            L.TAG_HTLC_REFUND: self._htlc_refund,
            L.TAG_MARKET_REQUEST: self._market_request,
            L.TAG_MARKET_BID: self._market_bid,
            L.TAG_MARKET_COMMIT: self._market_commit,
            L.TAG_MARKET_WITHDRAW: self._market_withdraw,
        }
        self._queries = {
            L.QUERY_UTXO: self._query_utxo,
            L.QUERY_TX: self._query_tx,
            L.QUERY_CHANNEL: lambda q: self._query_row(self.channels, q),
            L.QUERY_HTLC: lambda q: self._query_row(self.htlcs, q),
            L.QUERY_MARKET: self._query_market,
            L.QUERY_MARKET_REGION: self._query_market_region,
        }
        for table in self.tables:
            conn.execute(table.sql_create)
        # Derived from the table, so outside the digest: finds the requests whose bidding ends.
        conn.execute("CREATE INDEX IF NOT EXISTS ledger_market_open_deadline ON ledger_market_open (bid_deadline)")
        self._sql_bidding_over = ("SELECT region_key, height, request_key, bid_deadline FROM ledger_market_open"
                                  " WHERE bid_deadline <= ?")
        # Statistics of this replica's own execution: not state, so outside digest and
        # snapshot (a rejection changes no state, and a restored replica starts at zero).
        conn.execute("CREATE TABLE IF NOT EXISTS ledger_rejections (reason INTEGER PRIMARY KEY, count INTEGER NOT NULL)")
        self.reload()

    # -- replica interface -------------------------------------------------------------

    def reload(self):
        """Drop the caches and rebuild them, and the digest, from the connection."""
        self._digest_sum = sum(table.load() for table in self.tables)

    def flush(self):
        """Write every table's staged rows to the connection (``execute`` ends with it)."""
        for table in self.tables:
            table.flush()

    def state_digest(self):
        self.flush()
        return sha256(b"plugpay/ledger-state/v1" + (self._digest_sum % (1 << (8 * ENTRY_BYTES))).to_bytes(ENTRY_BYTES, "big"))

    def execute(self, height, requests):
        """Apply a block's requests in order; one encoded ``Result`` per request."""
        if type(height) is not int or height < 0:
            raise ValueError("height must be a non-negative int")
        try:
            self._close_bidding(height)
            return [self._execute_one(height, raw) for raw in requests]
        finally:
            self.flush()

    def snapshot(self):
        """The whole state as deterministic CBOR: ``[version, [[table, rows]...]]``."""
        return codec.dumps([SNAPSHOT_VERSION, [[t.name, t.scan()] for t in self.tables]])

    def restore(self, data):
        """Replace the state with a snapshot (written, not committed, like ``execute``).

        The snapshot is checked completely before anything is deleted; a malformed one
        raises ``DecodeError`` and leaves the state as it was. Whether it is the *right*
        state is for the caller to check against ``state_digest``.
        """
        value = codec.loads(data, "snapshot", MAX_SNAPSHOT_BYTES)
        if not isinstance(value, list) or len(value) != 2 or value[0] != SNAPSHOT_VERSION:
            raise DecodeError("snapshot", "expected [%d, tables]" % SNAPSHOT_VERSION)
        tables = value[1]
        if not isinstance(tables, list) or [t[0] if isinstance(t, list) and t else None for t in tables] != [t.name for t in self.tables]:
            raise DecodeError("snapshot.tables", "expected the tables " + ", ".join(t.name for t in self.tables))
        for table, entry in zip(self.tables, tables):
            if len(entry) != 2:
                raise DecodeError("snapshot." + table.name, "expected [name, rows]")
            table.check_rows(entry[1], "snapshot." + table.name)
        for table, (_, rows) in zip(self.tables, tables):
            table.pending = {}
            self.conn.execute(table.sql_clear)
            self.conn.executemany(table.sql_insert, rows)
        self.reload()

    def query(self, request):
        """Read-only lookup (a ``ledger_ops.Query``), answered with an encoded ``Result``."""
        if not isinstance(request, (bytes, bytearray, memoryview)):
            return L.Result(sha256(b""), False, L.MALFORMED, "a query is bytes", None).encode()
        digest = sha256(bytes(request))
        try:
            q = L.Query.decode(request, L.MAX_REQUEST_BYTES)
        except DecodeError as e:
            return L.Result(digest, False, L.MALFORMED, _clip(str(e)), None).encode()
        lookup = self._queries.get(q.kind)
        if lookup is None:
            return L.Result(digest, False, L.UNKNOWN_OP, "unknown query kind %d" % q.kind, None).encode()
        try:
            data = lookup(q)
        except Reject as e:
            return L.Result(digest, False, e.reason, _clip(e.detail), None).encode()
        if data is None:
            return L.Result(digest, False, L.NOT_FOUND, "", None).encode()
        return L.Result(digest, True, L.OK, "", data).encode()

    # -- audit -------------------------------------------------------------------------

    def supply(self):
        """Where the money is: minted = live + in channels + in HTLCs + burnt (fees) +
        redeemed (handed back to the issuer, who mints it afresh)."""
        return {
            "minted": self._total("minted"),
            "burnt": self._total("burnt"),
            "redeemed": self._total("redeemed"),
            "live": sum(u.amount for u in self.utxos.rows.values()),
            "channels": sum(c.collateral for c in self.channels.rows.values() if c.status != L.STATUS_CLOSED),
            "htlcs": sum(h.amount for h in self.htlcs.rows.values() if h.status == L.STATUS_OPEN),
        }

    def rejections(self):
        """How many requests this replica rejected, by reason name."""
        rows = self.conn.execute("SELECT reason, count FROM ledger_rejections ORDER BY reason")
        return dict((L.reason_name(r), n) for r, n in rows)

    # -- execution ---------------------------------------------------------------------

    def _execute_one(self, height, raw):
        """One request's encoded ``Result``."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            self._count_rejection(L.MALFORMED)
            return L.Result(sha256(b""), False, L.MALFORMED, "a request is bytes", None).encode()
        raw = bytes(raw)
        digest = sha256(raw)
        try:
            if len(raw) > L.MAX_REQUEST_BYTES:
                raise Reject(L.TOO_LARGE, "%d bytes exceed the %d-byte limit" % (len(raw), L.MAX_REQUEST_BYTES))
            op = _decode_transaction(raw)
            if op is None:
                try:
                    op = L.decode_request(raw)
                except L.UnknownOp as e:
                    raise Reject(L.UNKNOWN_OP, str(e))
                except DecodeError as e:
                    raise Reject(L.MALFORMED, str(e))
            data = self._handlers[op.TAG](op, raw, height)
        except Reject as e:
            self._count_rejection(e.reason)
            return L.Result(digest, False, e.reason, _clip(e.detail), None).encode()
        # L.Result(digest, True, L.OK, "", data).encode(), without re-checking its fields
        return codec.dumps([L.TAG_RESULT, L.Result.VERSION, digest, True, L.OK, "", data])

    def _count_rejection(self, reason):
        self.conn.execute(
            "INSERT INTO ledger_rejections VALUES (?, 1) ON CONFLICT(reason) DO UPDATE SET count = count + 1", (reason,)
        )

    # -- shared checks -----------------------------------------------------------------

    def _require_new(self, ident):
        """A request (by its id) that is already confirmed is a replay."""
        if self.confirmed.get((ident,)) is not None:
            raise Reject(L.DUPLICATE, "already confirmed: " + ident.hex())

    def _check_account(self, account, where):
        """Gao step 2: the RA signed this one-time account (checked once per account)."""
        key = (account.pubkey, account.epoch, account.ra_sig)
        if key in self._verified:
            return
        ra = self.ra_pubkeys.get(account.epoch)
        if ra is None:
            raise Reject(L.UNKNOWN_RA_EPOCH, "%s: no RA key for epoch %d" % (where, account.epoch))
        if not signing.verify_digest(ra, _account_digest(account), account.ra_sig):
            raise Reject(L.BAD_ACCOUNT_SIGNATURE, where + ": the RA signature does not verify")
        if len(self._verified) >= MAX_VERIFIED_ACCOUNTS:
            self._verified.clear()
        self._verified.add(key)

    @staticmethod
    def _sum_outputs(outputs, locked=0):
        total = locked
        for i, out in enumerate(outputs):
            if out.amount == 0:
                raise Reject(L.ZERO_AMOUNT, "outputs[%d].amount is 0" % i)
            total += out.amount
        if total > MAX_UINT:
            raise Reject(L.AMOUNT_OVERFLOW, "the outputs sum to more than 2**64-1")
        return total

    def _check_funding(self, op, digest, outputs, locked, accounts, ident=None):
        """Gao et al.'s verification of anything paid for with inputs, in the paper's order:
        (1) format: no input twice, amounts non-zero and their sum within 64 bits;
        (2) every account named (outputs, plus ``accounts``) is RA-signed;
        (3) every input refers to an output that exists, and its witness verifies with
            that output's key over ``digest`` (``op``'s signing digest);
        (4) no input is spent already; (5) inputs cover outputs plus ``locked``.
        Returns the outputs to spend and the fee. Writes nothing.

        ``ident``, for an operation whose id hashes its inputs, moves the replay check
        to step (4): confirming it spent those inputs, so while they are all unspent it
        cannot have been confirmed, and the common case needs no lookup of the id."""
        seen = set()
        for i, inp in enumerate(op.inputs):
            key = (inp.pre_txhash, inp.pre_sn)
            if key in seen:
                raise Reject(L.DUPLICATE_INPUT, "inputs[%d] repeats an earlier input" % i)
            seen.add(key)
        total_out = self._sum_outputs(outputs, locked)
        for account, where in accounts:
            self._check_account(account, where)
        for i, out in enumerate(outputs):
            self._check_account(out.account, "outputs[%d].account" % i)
        found = []
        for i, (inp, witness) in enumerate(zip(op.inputs, op.witnesses)):
            key = (inp.pre_txhash, inp.pre_sn)
            source = self.utxos.get(key) or self.spent.get(key)
            if source is None:
                raise Reject(L.UNKNOWN_INPUT, "inputs[%d]: no output %s:%d" % (i, inp.pre_txhash.hex(), inp.pre_sn))
            if not signing.verify_digest(_pubkey(source.account), digest, witness):
                raise Reject(L.BAD_INPUT_SIGNATURE, "witnesses[%d] does not verify" % i)
            found.append((key, source))
        for i, (key, source) in enumerate(found):
            if isinstance(source, Spent):
                if ident is not None:
                    self._require_new(ident)
                raise Reject(L.DOUBLE_SPEND, "inputs[%d] was spent by %s" % (i, source.spent_by.hex()))
        total_in = sum(source.amount for _, source in found)
        if total_in < total_out:
            raise Reject(L.INPUTS_BELOW_OUTPUTS, "inputs %d < outputs %d" % (total_in, total_out))
        return found, total_in - total_out

    # -- writes (only after every check passed) ----------------------------------------

    def _spend(self, found, by, height):
        for key, utxo in found:
            self.utxos.delete(key, utxo)
            self.spent.insert(key, Spent(utxo.account, utxo.amount, utxo.height, by, height))

    def _create_outputs(self, txhash, outputs, height):
        for sn, out in enumerate(outputs):
            self.utxos.insert((txhash, sn), Utxo(_account_bytes(out.account), out.amount, height))

    def _pay(self, txhash, payouts, height):
        """Outputs from a channel or HTLC: ``(sn, encoded account, amount)``; 0 is skipped."""
        for sn, account, amount in payouts:
            if amount:
                self.utxos.insert((txhash, sn), Utxo(account, amount, height))

    def _total(self, name):
        row = self.totals.get((name,))
        return 0 if row is None else row.value

    def _add_total(self, name, amount):
        if not amount:
            return
        old = self.totals.get((name,))
        if old is None:
            self.totals.insert((name,), Total(amount))
        else:
            self.totals.update((name,), old, Total(old.value + amount))

    def _confirm(self, ident, height, op, raw):
        self.confirmed.insert((ident,), Confirmed(height, op.TAG, raw))

    # -- transactions and the faucet ---------------------------------------------------

    def _transaction(self, tx, raw, height):
        """Gao et al.'s payment. Its price field (unit price, total) is information for the
        parties and auditors; the ledger checks amounts only, and burns the fee."""
        body = tx.body_from(raw)  # cut from the request: gives the txhash and the signing digest
        txhash = sha256(body)
        found, fee = self._check_funding(tx, sha256(tx.domain() + body), tx.outputs, 0, (), txhash)
        self._spend(found, txhash, height)
        self._create_outputs(txhash, tx.outputs, height)
        self._add_total("burnt", fee)
        self._confirm(txhash, height, tx, raw)
        return txhash

    def _faucet(self, op, raw, height):
        if self.faucet_pubkey is None:
            raise Reject(L.NOT_FAUCET, "this ledger has no faucet")
        txhash = op.txhash()
        self._require_new(txhash)
        amount = self._sum_outputs(op.outputs)
        if self._total("minted") + amount > MAX_UINT:
            raise Reject(L.AMOUNT_OVERFLOW, "the supply would exceed 2**64-1")
        if not signing.verify(self.faucet_pubkey, op, op.faucet_sig):
            raise Reject(L.NOT_FAUCET, "not signed by the faucet key")
        for i, out in enumerate(op.outputs):
            self._check_account(out.account, "outputs[%d].account" % i)
        self._create_outputs(txhash, op.outputs, height)
        self._add_total("minted", amount)
        self._confirm(txhash, height, op, raw)
        return txhash

    def _redeem(self, op, raw, height):
        """Coins handed back to the issuer: spent, and their ``amount`` counted as redeemed
        (the issuer mints as much afresh); inputs above the amount are a fee."""
        body = op.body_from(raw)
        redeem_id = sha256(body)
        found, fee = self._check_funding(op, sha256(op.domain() + body), (), op.amount, (), redeem_id)
        self._spend(found, redeem_id, height)
        self._add_total("redeemed", op.amount)
        self._add_total("burnt", fee)
        self._confirm(redeem_id, height, op, raw)
        return redeem_id

    # -- state channels ----------------------------------------------------------------

    def _channel_open(self, op, raw, height):
        body = op.body_from(raw)
        channel_id = sha256(body)  # = op.channel_id()
        accounts = ((op.consumer, "consumer"), (op.producer, "producer"))
        found, fee = self._check_funding(op, sha256(op.domain() + body), op.change, op.collateral, accounts,
                                         channel_id)
        self._spend(found, channel_id, height)
        self._create_outputs(channel_id, op.change, height)
        self._add_total("burnt", fee)
        self.channels.insert((channel_id,), Channel(
            op.consumer.encode(), op.producer.encode(), op.collateral, op.installments, op.window,
            L.STATUS_OPEN, 0, op.first_installment(), 0, height))
        self._confirm(channel_id, height, op, raw)
        return channel_id

    def _live_channel(self, channel_id):
        channel = self.channels.get((channel_id,))
        if channel is None:
            raise Reject(L.CHANNEL_UNKNOWN, "no channel " + channel_id.hex())
        if channel.status == L.STATUS_CLOSED:
            raise Reject(L.CHANNEL_CLOSED, "channel is closed")
        return channel

    @staticmethod
    def _check_state(channel, state):
        """A state the ledger may close on: seq 0 is exactly the opening state (no
        signatures needed); any later seq is signed by both parties named at open."""
        if state.paid_to_producer > channel.collateral:
            raise Reject(L.CHANNEL_OVERPAID, "pays %d of a %d collateral" % (state.paid_to_producer, channel.collateral))
        if state.seq == 0:
            opening = L.opening_state(state.channel_id, channel.collateral // channel.installments)
            if state.body() != opening.body():
                raise Reject(L.CHANNEL_BAD_STATE, "seq 0 must be the opening state")
            return
        if not state.fully_signed():
            raise Reject(L.CHANNEL_NOT_SIGNED, "state seq %d lacks a signature" % state.seq)
        digest = state.signing_digest()
        if not (signing.verify_digest(_pubkey(channel.consumer), digest, state.sig_consumer)
                and signing.verify_digest(_pubkey(channel.producer), digest, state.sig_producer)):
            raise Reject(L.CHANNEL_BAD_SIGNATURE, "state seq %d is not signed by this channel's parties" % state.seq)

    def _pay_out_channel(self, channel_id, channel, seq, paid, height):
        txhash = L.channel_payout_txhash(channel_id)
        self._pay(txhash, ((0, channel.producer, paid), (1, channel.consumer, channel.collateral - paid)), height)
        self.channels.update((channel_id,), channel, channel._replace(status=L.STATUS_CLOSED, seq=seq, paid=paid))
        return txhash

    def _channel_close(self, op, raw, height):
        self._require_new(sha256(raw))
        state = op.state
        channel = self._live_channel(state.channel_id)
        if state.seq < channel.seq:
            raise Reject(L.CHANNEL_STALE_STATE, "seq %d is below the recorded %d" % (state.seq, channel.seq))
        self._check_state(channel, state)
        digest = op.signing_digest()
        if not (signing.verify_digest(_pubkey(channel.consumer), digest, op.sig_consumer)
                and signing.verify_digest(_pubkey(channel.producer), digest, op.sig_producer)):
            raise Reject(L.CHANNEL_BAD_SIGNATURE, "the close is not signed by both parties")
        txhash = self._pay_out_channel(state.channel_id, channel, state.seq, state.paid_to_producer, height)
        self._confirm(sha256(raw), height, op, raw)
        return txhash

    def _channel_dispute(self, op, raw, height):
        self._require_new(sha256(raw))
        state = op.state
        channel = self._live_channel(state.channel_id)
        if channel.status == L.STATUS_CLOSING:
            if height >= channel.deadline:
                raise Reject(L.CHANNEL_WINDOW_OVER, "the dispute window ended at %d" % channel.deadline)
            if state.seq <= channel.seq:
                raise Reject(L.CHANNEL_STALE_STATE, "seq %d does not beat the recorded %d" % (state.seq, channel.seq))
        self._check_state(channel, state)
        closer = channel.producer if op.by_producer else channel.consumer
        if not signing.verify(_pubkey(closer), op, op.closer_sig):
            raise Reject(L.CHANNEL_BAD_SIGNATURE, "the dispute is not signed by the closing party")
        deadline = channel.deadline if channel.status == L.STATUS_CLOSING else height + channel.window
        self.channels.update((state.channel_id,), channel, channel._replace(
            status=L.STATUS_CLOSING, seq=state.seq, paid=state.paid_to_producer, deadline=deadline))
        self._confirm(sha256(raw), height, op, raw)
        return deadline

    def _channel_settle(self, op, raw, height):
        self._require_new(sha256(raw))
        channel = self._live_channel(op.channel_id)
        if channel.status != L.STATUS_CLOSING:
            raise Reject(L.CHANNEL_NOT_CLOSING, "no unilateral close to settle")
        if height < channel.deadline:
            raise Reject(L.CHANNEL_TOO_EARLY, "the dispute window lasts until height %d" % channel.deadline)
        txhash = self._pay_out_channel(op.channel_id, channel, channel.seq, channel.paid, height)
        self._confirm(sha256(raw), height, op, raw)
        return txhash

    # -- HTLCs -------------------------------------------------------------------------

    def _htlc_create(self, op, raw, height):
        htlc = op.htlc
        htlc_id = htlc.digest()
        self._require_new(htlc_id)
        if htlc.amount == 0:
            raise Reject(L.ZERO_AMOUNT, "htlc.amount is 0")
        if htlc.timeout <= height:
            raise Reject(L.HTLC_EXPIRED, "timeout %d is not after height %d" % (htlc.timeout, height))
        accounts = ((htlc.payer, "htlc.payer"), (htlc.payee, "htlc.payee"))
        found, fee = self._check_funding(op, op.signing_digest(), op.change, htlc.amount, accounts)
        if not signing.verify(htlc.payer.pubkey, htlc, htlc.payer_sig):
            raise Reject(L.HTLC_BAD_SIGNATURE, "the terms are not signed by the payer")
        self._spend(found, htlc_id, height)
        self._create_outputs(htlc_id, op.change, height)
        self._add_total("burnt", fee)
        self.htlcs.insert((htlc_id,), HtlcRow(
            htlc.payer.encode(), htlc.payee.encode(), htlc.amount, htlc.hashlock, htlc.timeout, L.STATUS_OPEN, height))
        self._confirm(htlc_id, height, op, raw)
        return htlc_id

    def _open_htlc(self, htlc_id):
        htlc = self.htlcs.get((htlc_id,))
        if htlc is None:
            raise Reject(L.HTLC_UNKNOWN, "no HTLC " + htlc_id.hex())
        if htlc.status != L.STATUS_OPEN:
            raise Reject(L.HTLC_NOT_OPEN, "the HTLC was claimed or refunded")
        return htlc

    def _settle_htlc(self, htlc_id, htlc, account, status, height):
        txhash = L.htlc_payout_txhash(htlc_id)
        self._pay(txhash, ((0, account, htlc.amount),), height)
        self.htlcs.update((htlc_id,), htlc, htlc._replace(status=status))
        return txhash

    def _htlc_claim(self, op, raw, height):
        self._require_new(sha256(raw))
        htlc = self._open_htlc(op.htlc_id)
        if height >= htlc.timeout:
            raise Reject(L.HTLC_EXPIRED, "claims end before height %d" % htlc.timeout)
        if sha256(op.preimage) != htlc.hashlock:
            raise Reject(L.HTLC_WRONG_PREIMAGE, "H(preimage) is not the hashlock")
        if not signing.verify(_pubkey(htlc.payee), op, op.payee_sig):
            raise Reject(L.HTLC_BAD_SIGNATURE, "the claim is not signed by the payee")
        txhash = self._settle_htlc(op.htlc_id, htlc, htlc.payee, L.STATUS_CLAIMED, height)
        self._confirm(sha256(raw), height, op, raw)
        return txhash

    def _htlc_refund(self, op, raw, height):
        self._require_new(sha256(raw))
        htlc = self._open_htlc(op.htlc_id)
        if height < htlc.timeout:
            raise Reject(L.HTLC_NOT_EXPIRED, "refunds start at height %d" % htlc.timeout)
        if not signing.verify(_pubkey(htlc.payer), op, op.payer_sig):
            raise Reject(L.HTLC_BAD_SIGNATURE, "the refund is not signed by the payer")
        txhash = self._settle_htlc(op.htlc_id, htlc, htlc.payer, L.STATUS_REFUNDED, height)
        self._confirm(sha256(raw), height, op, raw)
        return txhash

    # -- market board ------------------------------------------------------------------

    def _market_request(self, op, raw, height):
        self._require_new(sha256(raw))
        if self.market.get((op.request_key,)) is not None:
            raise Reject(L.MARKET_EXISTS, "request key already used")
        if op.bid_deadline <= height:
            raise Reject(L.MARKET_CLOSED, "bid deadline %d is not after height %d" % (op.bid_deadline, height))
        if not signing.verify(op.request_key, op, op.sig):
            raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the request key")
        self.market.insert((op.request_key,), MarketRow(
            op.region, op.window_start, op.window_end, op.window_unit, op.energy_wh, op.bid_deadline,
            L.STATUS_OPEN, b"", 0, height))
        self.market_open.insert(self._listing_key(op.request_key, op.region, height, op.bid_deadline), Listed())
        self._confirm(sha256(raw), height, op, raw)
        return op.request_key

    @staticmethod
    def _listing_key(request_key, region, height, bid_deadline):
        return L.market_region_key(region), height, request_key, min(bid_deadline, SQL_MAX_INT)

    def _close_bidding(self, height):
        """Take the requests whose bidding is over at ``height`` (the first block that
        refuses their bids) off the region listing; the requests themselves stay."""
        self.market_open.flush()
        for row in self.conn.execute(self._sql_bidding_over, (min(height, SQL_MAX_INT),)).fetchall():
            self.market_open.delete(tuple(row), Listed())

    def _open_request(self, request_key):
        request = self.market.get((request_key,))
        if request is None:
            raise Reject(L.MARKET_UNKNOWN, "no request " + request_key.hex())
        if request.status != L.STATUS_OPEN:
            raise Reject(L.MARKET_CLOSED, "the request is %s" % (
                "withdrawn" if request.status == L.STATUS_WITHDRAWN else "committed"))
        return request

    def _market_bid(self, op, raw, height):
        self._require_new(sha256(raw))
        request = self._open_request(op.request_key)
        if height >= request.bid_deadline:
            raise Reject(L.MARKET_CLOSED, "bidding ended at height %d" % request.bid_deadline)
        key = (op.request_key, op.bidder_key)
        old = self.bids.get(key)
        if old is not None and op.seq <= old.seq:
            raise Reject(L.MARKET_STALE_BID, "seq %d does not beat the bidder's %d" % (op.seq, old.seq))
        if old is None and request.bids >= L.MAX_BIDS:
            raise Reject(L.MARKET_FULL, "the request has %d bids" % L.MAX_BIDS)
        if not signing.verify(op.bidder_key, op, op.sig):
            raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the bidder key")
        digest = op.digest()
        bid = Bid(op.seq, op.unit_price, digest, height, op.lat_e6, op.lon_e6)
        if old is None:
            self.bids.insert(key, bid)
            self.market.update((op.request_key,), request, request._replace(bids=request.bids + 1))
        else:
            self.bids.update(key, old, bid)
        self._confirm(sha256(raw), height, op, raw)
        return digest

    def _market_commit(self, op, raw, height):
        self._require_new(sha256(raw))
        request = self._open_request(op.request_key)
        if not any(bid.digest == op.bid_digest for _, bid in self.bids.with_prefix(op.request_key)):
            raise Reject(L.MARKET_UNKNOWN_BID, "no current bid has that digest")
        if not signing.verify(op.request_key, op, op.sig):
            raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the request key")
        self.market.update((op.request_key,), request, request._replace(status=L.STATUS_COMMITTED, chosen=op.bid_digest))
        listed = self._listing_key(op.request_key, request.region, request.height, request.bid_deadline)
        if self.market_open.get(listed) is not None:  # a commit before the deadline ends bidding too
            self.market_open.delete(listed, Listed())
        self._confirm(sha256(raw), height, op, raw)
        return op.bid_digest

    def _market_withdraw(self, op, raw, height):
        self._require_new(sha256(raw))
        request = self._open_request(op.request_key)
        if not signing.verify(op.request_key, op, op.sig):
            raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the request key")
        self.market.update((op.request_key,), request, request._replace(status=L.STATUS_WITHDRAWN))
        listed = self._listing_key(op.request_key, request.region, request.height, request.bid_deadline)
        if self.market_open.get(listed) is not None:
            self.market_open.delete(listed, Listed())
        self._confirm(sha256(raw), height, op, raw)
        return op.request_key

    # -- queries -----------------------------------------------------------------------

    def _query_utxo(self, q):
        key = (q.key, q.index)
        utxo = self.utxos.get(key)
        if utxo is not None:
            return list(utxo) + [None, None]
        spent = self.spent.get(key)
        return None if spent is None else list(spent)

    def _query_tx(self, q):
        row = self.confirmed.get((q.key,))
        return None if row is None else list(row)

    @staticmethod
    def _query_row(table, q):
        row = table.get((q.key,))
        return None if row is None else list(row)

    def _query_market(self, q):
        row = self.market.get((q.key,))
        if row is None:
            return None
        bids = [[key[1]] + list(bid) for key, bid in self.bids.with_prefix(q.key)]
        return list(row) + [bids]

    def _query_market_region(self, q):
        listed = self.market_open.page(q.key, q.index * L.MARKET_PAGE_ROWS, L.MARKET_PAGE_ROWS)
        if not listed and q.index:
            raise Reject(L.NOT_FOUND, "page %d is past the last page of open requests in this region" % q.index)
        rows = []
        for (_, height, request_key, _), _ in listed:
            r = self.market.get((request_key,))
            rows.append([request_key, r.window_start, r.window_end, r.window_unit, r.energy_wh, r.bid_deadline, height])
        return rows
