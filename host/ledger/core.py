"""``Ledger``: the one entry both consensus engines call, and what they read.

``apply_block(height, requests)`` applies a block's requests in order and returns each
one's encoded ``Result`` (a reason code and a text for a refusal) with the state digest
after the block. Its writes go to the engine's SQLite connection without a commit, so the
engine commits a block and the state it produced as one transaction. ``execute``,
``query``, ``state_digest``, ``snapshot`` and ``restore`` are the PBFT replica's
application interface; the ABCI application (``host.abci_app``) calls ``apply_block``,
``check`` (CheckTx), ``query`` and ``state_digest``.

Execution depends only on the state, the height and the request bytes: no wall clock, no
randomness, no iteration over unordered containers, so every honest node computes the
same results and the same state.
"""
import collections

from plugpay.protocol import codec, signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

from . import handlers, market
from .fastpath import decode_transaction
from .state import Checked, Reject, State

SNAPSHOT_VERSION = 1
MAX_SNAPSHOT_BYTES = 1 << 31
NOTHING = frozenset()

# results: the encoded Result of every request, in order; reasons: their reason codes;
# digest: the state digest after the block.
Applied = collections.namedtuple("Applied", "results reasons digest")
# A check before ordering: OK (the request may be ordered) or a refusal's reason, its text
# and encoded Result, and the signatures that verified (``state.signature_key``s).
Check = collections.namedtuple("Check", "reason detail result signatures")


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


def _refusal(digest, reason, detail):
    return L.Result(digest, False, reason, _clip(detail), None).encode()


def decode(raw):
    """The operation in request bytes, or ``Reject`` (too large, malformed, unknown)."""
    if len(raw) > L.MAX_REQUEST_BYTES:
        raise Reject(L.TOO_LARGE, "%d bytes exceed the %d-byte limit" % (len(raw), L.MAX_REQUEST_BYTES))
    op = decode_transaction(raw)
    if op is not None:
        return op
    try:
        return L.decode_request(raw)
    except L.UnknownOp as e:
        raise Reject(L.UNKNOWN_OP, str(e))
    except DecodeError as e:
        raise Reject(L.MALFORMED, str(e))


class Ledger(State):
    """The state machine: UTXOs of RA-signed one-time accounts, state channels, HTLCs and
    the market board, over one SQLite connection owned by the engine."""

    def __init__(self, conn, ra_pubkeys, faucet_pubkey=None):
        State.__init__(self, conn)
        self.ra_pubkeys = _epoch_keys(ra_pubkeys)
        self.faucet_pubkey = _key_bytes(faucet_pubkey) if faucet_pubkey is not None else None
        self.verified_accounts = set()  # accounts whose RA signature verified: memory only
        self._handlers = dict(handlers.OPERATIONS)
        self._queries = dict(handlers.QUERIES)
        market.create_index(conn)
        # Statistics of this node's own execution: not state, so outside digest and
        # snapshot (a rejection changes no state, and a restored node starts at zero).
        conn.execute("CREATE TABLE IF NOT EXISTS ledger_rejections (reason INTEGER PRIMARY KEY, count INTEGER NOT NULL)")
        self.reload()

    # -- the engines' entry --------------------------------------------------------------

    def apply_block(self, height, requests, trusted=None):
        """Apply a block's requests in order: ``Applied(results, reasons, digest)``.

        ``trusted`` maps a request's SHA-256 to signatures (``state.signature_key``)
        this node already verified for it (in ``check``); those are not verified again."""
        if type(height) is not int or height < 0:
            raise ValueError("height must be a non-negative int")
        results, reasons = [], []
        try:
            for hook in handlers.BLOCK_START:
                hook(self, height)
            for raw in requests:
                reason, result = self._execute_one(height, raw, trusted)
                reasons.append(reason)
                results.append(result)
        finally:
            self.trusted = NOTHING
            self.flush()
        return Applied(results, reasons, self.state_digest())

    def execute(self, height, requests):
        """The PBFT replica's entry: one encoded ``Result`` per request."""
        return self.apply_block(height, requests).results

    def check(self, raw, height):
        """What can be settled about ``raw`` before it is ordered, as if it ran at
        ``height``: its format, its signatures, and the refusals no later block can undo
        (``handlers.DEFERRED`` lists the ones it can). Writes nothing."""
        raw = bytes(raw)
        self.checking = True
        self.verified_now = []
        try:
            op = decode(raw)
            self._handlers[op.TAG](self, op, raw, height)
        except Checked:
            pass
        except Reject as e:
            if e.reason not in handlers.DEFERRED:
                return Check(e.reason, e.detail, _refusal(sha256(raw), e.reason, e.detail), NOTHING)
        finally:
            self.checking = False
            verified, self.verified_now = self.verified_now, None
        return Check(L.OK, "", None, frozenset(verified))

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
        names = [t[0] if isinstance(t, list) and t else None for t in tables] if isinstance(tables, list) else None
        if names != [t.name for t in self.tables]:
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
            return _refusal(sha256(b""), L.MALFORMED, "a query is bytes")
        digest = sha256(bytes(request))
        try:
            q = L.Query.decode(request, L.MAX_REQUEST_BYTES)
        except DecodeError as e:
            return _refusal(digest, L.MALFORMED, str(e))
        lookup = self._queries.get(q.kind)
        if lookup is None:
            return _refusal(digest, L.UNKNOWN_OP, "unknown query kind %d" % q.kind)
        try:
            data = lookup(self, q)
        except Reject as e:
            return _refusal(digest, e.reason, e.detail)
        if data is None:
            return _refusal(digest, L.NOT_FOUND, "")
        return L.Result(digest, True, L.OK, "", data).encode()

    # -- audit -------------------------------------------------------------------------

    def supply(self):
        """Where the money is: minted = live + in channels + in HTLCs + burnt (fees) +
        redeemed (handed back to the issuer, who mints it afresh)."""
        return {
            "minted": self.total("minted"),
            "burnt": self.total("burnt"),
            "redeemed": self.total("redeemed"),
            "live": sum(u.amount for u in self.utxos.rows.values()),
            "channels": sum(c.collateral for c in self.channels.rows.values() if c.status != L.STATUS_CLOSED),
            "htlcs": sum(h.amount for h in self.htlcs.rows.values() if h.status == L.STATUS_OPEN),
        }

    def rejections(self):
        """How many requests this node rejected, by reason name."""
        rows = self.conn.execute("SELECT reason, count FROM ledger_rejections ORDER BY reason")
        return dict((L.reason_name(r), n) for r, n in rows)

    # -- execution ---------------------------------------------------------------------

    def _execute_one(self, height, raw, trusted):
        """One request's (reason, encoded ``Result``)."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            self._count_rejection(L.MALFORMED)
            return L.MALFORMED, _refusal(sha256(b""), L.MALFORMED, "a request is bytes")
        raw = bytes(raw)
        digest = sha256(raw)
        self.trusted = trusted.get(digest, NOTHING) if trusted else NOTHING
        try:
            op = decode(raw)
            data = self._handlers[op.TAG](self, op, raw, height)
        except Reject as e:
            self._count_rejection(e.reason)
            return e.reason, _refusal(digest, e.reason, e.detail)
        # L.Result(digest, True, L.OK, "", data).encode(), without re-checking its fields
        return L.OK, codec.dumps([L.TAG_RESULT, L.Result.VERSION, digest, True, L.OK, "", data])

    def _count_rejection(self, reason):
        self.conn.execute(
            "INSERT INTO ledger_rejections VALUES (?, 1) ON CONFLICT(reason) DO UPDATE SET count = count + 1", (reason,)
        )
