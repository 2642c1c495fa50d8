"""Ledger requests and results: what a wallet submits to the PBFT ledger and what comes back.

Every request is its own tagged structure (tags 16 and up; a Gao et al. ``Transaction``,
tag 2, is a request too), so the ledger decodes one by peeking at the tag. Devices build
these, so this module follows the portability rule of ``schema``.

Operations that lock money (``ChannelOpen``, ``HtlcCreate``) are funded exactly like a
transaction: Gao inputs with one witness each over the operation's signing digest, optional
change outputs, and the difference between inputs and (locked amount + change) is a fee.
Money that leaves a channel or an HTLC lands in new outputs whose transaction hash is
derived from the channel or HTLC id (``channel_payout_txhash``, ``htlc_payout_txhash``), so
a wallet knows where to find it without asking.

Who builds what: this module holds what every side needs (tags, limits, reason codes,
``Query``, ``Result``, ``decode_request``); the requests themselves live by use in
``ledger_channel``, ``ledger_htlc``, ``ledger_market`` and ``ledger_issuer``, and this
module names them all (``L.ChannelOpen``), loading each of those modules the first time
one of its names is used (a module ``__getattr__``). So a device holds the code of the
requests it makes, and the host, which executes them all, sees one namespace.
"""
from . import codec
from .codec import DecodeError
from .port import const, sha256
from .schema import ANY, BOOL, U16, U8, Bytes, Struct, Text, UInt
from .structures import HASH, MAX_TX_OUTPUTS, Transaction

TAG_FAUCET = const(16)
TAG_CHANNEL_OPEN = const(17)
TAG_CHANNEL_CLOSE = const(18)
TAG_CHANNEL_DISPUTE = const(19)
TAG_CHANNEL_SETTLE = const(20)
TAG_HTLC_CREATE = const(21)
TAG_HTLC_CLAIM = const(22)
TAG_HTLC_REFUND = const(23)
TAG_MARKET_REQUEST = const(24)
TAG_MARKET_BID = const(25)
TAG_MARKET_COMMIT = const(26)
TAG_FAUCET_REQUEST = const(27)
TAG_REDEEM = const(28)
TAG_REDEEM_REQUEST = const(29)
TAG_QUERY = const(30)
TAG_RESULT = const(31)
TAG_MARKET_WITHDRAW = const(32)

MAX_REQUEST_BYTES = const(8192)  # a 16-in/16-out channel open is about 4 KB
MAX_DETAIL_BYTES = const(160)
MAX_WINDOW = const(1000000)  # dispute window, in blocks
MAX_INSTALLMENTS = const(100000)
MAX_BIDS = const(64)  # per market request: bounds the state one request can grow
MARKET_PAGE_ROWS = const(32)  # open requests per ``QUERY_MARKET_REGION`` page
MAX_FAUCET_OUTPUTS = const(16)
MAX_REDEEM_OUTPUTS = const(16)  # fresh coins one redeem asks for, each minted alone
SALT_BYTES = const(32)
PUBKEY = Bytes(33)

# Reason codes of a ``Result``. Stable numbers: they are on the wire and in the state.
OK = const(0)
MALFORMED = const(1)
TOO_LARGE = const(2)
UNKNOWN_OP = const(3)
DUPLICATE = const(4)
DUPLICATE_INPUT = const(5)
AMOUNT_OVERFLOW = const(6)
ZERO_AMOUNT = const(7)
UNKNOWN_RA_EPOCH = const(8)
BAD_ACCOUNT_SIGNATURE = const(9)
UNKNOWN_INPUT = const(10)
BAD_INPUT_SIGNATURE = const(11)
DOUBLE_SPEND = const(12)
INPUTS_BELOW_OUTPUTS = const(13)
NOT_FAUCET = const(14)
CHANNEL_UNKNOWN = const(20)
CHANNEL_CLOSED = const(21)
CHANNEL_NOT_SIGNED = const(22)
CHANNEL_BAD_SIGNATURE = const(23)
CHANNEL_BAD_STATE = const(24)
CHANNEL_OVERPAID = const(25)
CHANNEL_STALE_STATE = const(26)
CHANNEL_WINDOW_OVER = const(27)
CHANNEL_NOT_CLOSING = const(28)
CHANNEL_TOO_EARLY = const(29)
HTLC_UNKNOWN = const(30)
HTLC_NOT_OPEN = const(31)
HTLC_BAD_SIGNATURE = const(32)
HTLC_WRONG_PREIMAGE = const(33)
HTLC_EXPIRED = const(34)
HTLC_NOT_EXPIRED = const(35)
MARKET_EXISTS = const(40)
MARKET_UNKNOWN = const(41)
MARKET_CLOSED = const(42)
MARKET_BAD_SIGNATURE = const(43)
MARKET_STALE_BID = const(44)
MARKET_UNKNOWN_BID = const(45)
MARKET_FULL = const(46)
NOT_FOUND = const(50)
FAUCET_LIMIT = const(51)  # the gateway's faucet mints at most its limit per request

REASONS = {
    OK: "OK",
    MALFORMED: "MALFORMED",
    TOO_LARGE: "TOO_LARGE",
    UNKNOWN_OP: "UNKNOWN_OP",
    DUPLICATE: "DUPLICATE",
    DUPLICATE_INPUT: "DUPLICATE_INPUT",
    AMOUNT_OVERFLOW: "AMOUNT_OVERFLOW",
    ZERO_AMOUNT: "ZERO_AMOUNT",
    UNKNOWN_RA_EPOCH: "UNKNOWN_RA_EPOCH",
    BAD_ACCOUNT_SIGNATURE: "BAD_ACCOUNT_SIGNATURE",
    UNKNOWN_INPUT: "UNKNOWN_INPUT",
    BAD_INPUT_SIGNATURE: "BAD_INPUT_SIGNATURE",
    DOUBLE_SPEND: "DOUBLE_SPEND",
    INPUTS_BELOW_OUTPUTS: "INPUTS_BELOW_OUTPUTS",
    NOT_FAUCET: "NOT_FAUCET",
    CHANNEL_UNKNOWN: "CHANNEL_UNKNOWN",
    CHANNEL_CLOSED: "CHANNEL_CLOSED",
    CHANNEL_NOT_SIGNED: "CHANNEL_NOT_SIGNED",
    CHANNEL_BAD_SIGNATURE: "CHANNEL_BAD_SIGNATURE",
    CHANNEL_BAD_STATE: "CHANNEL_BAD_STATE",
    CHANNEL_OVERPAID: "CHANNEL_OVERPAID",
    CHANNEL_STALE_STATE: "CHANNEL_STALE_STATE",
    CHANNEL_WINDOW_OVER: "CHANNEL_WINDOW_OVER",
    CHANNEL_NOT_CLOSING: "CHANNEL_NOT_CLOSING",
    CHANNEL_TOO_EARLY: "CHANNEL_TOO_EARLY",
    HTLC_UNKNOWN: "HTLC_UNKNOWN",
    HTLC_NOT_OPEN: "HTLC_NOT_OPEN",
    HTLC_BAD_SIGNATURE: "HTLC_BAD_SIGNATURE",
    HTLC_WRONG_PREIMAGE: "HTLC_WRONG_PREIMAGE",
    HTLC_EXPIRED: "HTLC_EXPIRED",
    HTLC_NOT_EXPIRED: "HTLC_NOT_EXPIRED",
    MARKET_EXISTS: "MARKET_EXISTS",
    MARKET_UNKNOWN: "MARKET_UNKNOWN",
    MARKET_CLOSED: "MARKET_CLOSED",
    MARKET_BAD_SIGNATURE: "MARKET_BAD_SIGNATURE",
    MARKET_STALE_BID: "MARKET_STALE_BID",
    MARKET_UNKNOWN_BID: "MARKET_UNKNOWN_BID",
    MARKET_FULL: "MARKET_FULL",
    NOT_FOUND: "NOT_FOUND",
    FAUCET_LIMIT: "FAUCET_LIMIT",
}

# Status of a channel, an HTLC or a market request, as ``query`` reports it.
STATUS_OPEN = const(0)
STATUS_CLOSING = const(1)  # a unilateral close is in its dispute window
STATUS_CLOSED = const(2)
STATUS_CLAIMED = const(3)
STATUS_REFUNDED = const(4)
STATUS_COMMITTED = const(5)
STATUS_WITHDRAWN = const(6)  # a market request its consumer took back

# Market time windows: block heights, or unix minutes (coarse on purpose).
WINDOW_HEIGHTS = const(0)
WINDOW_UNIX_MINUTES = const(1)

# ``Query.kind``
QUERY_UTXO = const(1)  # key: txhash, index: output number
QUERY_TX = const(2)  # key: txhash or other request id
QUERY_CHANNEL = const(3)  # key: channel id
QUERY_HTLC = const(4)  # key: HTLC id
QUERY_MARKET = const(5)  # key: the request's one-time public key
QUERY_MARKET_REGION = const(6)  # key: market_region_key(region), index: page number
QUERY_HEIGHT = const(7)  # key: any 32 bytes (ignored); the gateway answers the cluster's height



def reason_name(code):
    return REASONS.get(code, "REASON_%d" % code)


def check_witnesses(op, path):
    """One witness per input of a request funded like a transaction."""
    if len(op.witnesses) != len(op.inputs):
        raise DecodeError(path + ".witnesses", "%d witnesses for %d inputs" % (len(op.witnesses), len(op.inputs)))


def _payout_txhash(kind, ident):
    return sha256(b"plugpay/" + kind + b"-payout/v1" + ident)


def channel_payout_txhash(channel_id):
    """Where a closed channel's payouts land: output 0 the producer's, 1 the consumer's
    (an output that would be 0 is not created)."""
    return _payout_txhash(b"channel", channel_id)


def htlc_payout_txhash(htlc_id):
    """Where a claimed or refunded HTLC's amount lands (output 0)."""
    return _payout_txhash(b"htlc", htlc_id)


class Query(Struct):
    """A read-only lookup, answered with a ``Result`` (``NOT_FOUND`` if there is none)
    whose data is the record as a list:

    - ``QUERY_UTXO``: account (encoded), amount, height, spent_by, spent_height (the last
      two ``None`` while the output is unspent);
    - ``QUERY_TX``: height, operation tag, the request's bytes;
    - ``QUERY_CHANNEL``: consumer, producer (encoded accounts), collateral, installments,
      window, status, seq, paid_to_producer, deadline, height opened;
    - ``QUERY_HTLC``: payer, payee (encoded accounts), amount, hashlock, timeout, status,
      height created;
    - ``QUERY_MARKET``: region, window_start, window_end, window_unit, energy_wh,
      bid_deadline, status, chosen bid digest (``b""`` until committed), bid count,
      height, and the bids as ``[bidder_key, seq, unit_price, digest, height, lat_e6,
      lon_e6]`` in bidder key order;
    - ``QUERY_MARKET_REGION``: page ``index`` (``MARKET_PAGE_ROWS`` rows) of the requests in
      the region that still take bids, oldest first, as ``[request_key, window_start,
      window_end, window_unit, energy_wh, bid_deadline, height]``; page 0 may be empty, a
      later page past the last is ``NOT_FOUND``;
    - ``QUERY_HEIGHT``: ``[height]``, the newest block at least f+1 replicas hold (answered
      by the gateway, not by the ledger): what a device needs to set a bid deadline or an
      HTLC timeout without naming any earlier object of its own.
    """

    NAME = "ledger_query"
    TAG = TAG_QUERY
    FIELDS = (("kind", U8), ("key", Bytes(min=32, max=33)), ("index", UInt(MAX_TX_OUTPUTS - 1)))


class Result(Struct):
    """The ledger's answer to one request: which request (SHA-256 of its bytes), whether
    it was applied, why not (a reason code and a short text), and what it produced (a
    txhash, a channel or HTLC id, a deadline, or a query's record)."""

    NAME = "ledger_result"
    TAG = TAG_RESULT
    FIELDS = (
        ("request_digest", HASH),
        ("ok", BOOL),
        ("reason", U16),
        ("detail", Text(MAX_DETAIL_BYTES)),
        ("data", ANY),
    )

    def validate(self, path):
        if self.ok != (self.reason == OK):
            raise DecodeError(path + ".reason", "ok and reason disagree")


# Where each request lives (see the module doc), and the name of each request's class by tag.
_HOMES = {
    "ledger_channel": ("ChannelOpen", "ChannelClose", "ChannelDispute", "ChannelSettle", "opening_state"),
    "ledger_htlc": ("HtlcCreate", "HtlcClaim", "HtlcRefund"),
    "ledger_market": ("MarketRequest", "MarketBid", "MarketCommit", "MarketWithdraw", "market_region_key",
                      "LATITUDE_E6", "LONGITUDE_E6"),
    "ledger_issuer": ("Faucet", "FaucetRequest", "Redeem", "RedeemRequest", "redeem_order", "redeem_mint"),
}
_OP_NAMES = {
    Transaction.TAG: "Transaction",
    TAG_FAUCET: "Faucet",
    TAG_REDEEM: "Redeem",
    TAG_CHANNEL_OPEN: "ChannelOpen",
    TAG_CHANNEL_CLOSE: "ChannelClose",
    TAG_CHANNEL_DISPUTE: "ChannelDispute",
    TAG_CHANNEL_SETTLE: "ChannelSettle",
    TAG_HTLC_CREATE: "HtlcCreate",
    TAG_HTLC_CLAIM: "HtlcClaim",
    TAG_HTLC_REFUND: "HtlcRefund",
    TAG_MARKET_REQUEST: "MarketRequest",
    TAG_MARKET_BID: "MarketBid",
    TAG_MARKET_COMMIT: "MarketCommit",
    TAG_MARKET_WITHDRAW: "MarketWithdraw",
}


def __getattr__(name):
    """A request's name, from the module it lives in (imported now if it is not yet)."""
    if name == "OPS":  # every ledger operation by tag: the host's view
        return dict((tag, _named(n)) for tag, n in _OP_NAMES.items())
    for module, names in _HOMES.items():
        if name in names:
            full = __name__[: __name__.rfind(".") + 1] + module
            __import__(full)
            import sys

            value = getattr(sys.modules[full], name)
            globals()[name] = value  # found directly from now on
            return value
    raise AttributeError(name)


def _named(name):
    value = globals().get(name)
    return value if value is not None else __getattr__(name)


class UnknownOp(DecodeError):
    """Well-formed CBOR whose tag is no ledger operation."""


def request_id(op, raw):
    """The one id of a ledger request (``op`` decoded from ``raw``): what the ledger confirms
    it under (``QUERY_TX``, ``plugpay ledger tx ID``), and so what session records, consoles,
    the event log and the dashboard show. A transaction's or mint's txhash, a channel's id
    for its open, an HTLC's id for its creation, a redeem's id; else SHA-256 of the bytes."""
    tag = op.TAG
    if tag == Transaction.TAG or tag == TAG_FAUCET:
        return sha256(op.body_from(raw))  # the txhash, cut from the bytes instead of re-encoded
    if tag == TAG_CHANNEL_OPEN:
        return op.channel_id()
    if tag == TAG_HTLC_CREATE:
        return op.htlc.digest()
    if tag == TAG_REDEEM:
        return op.redeem_id()
    return sha256(raw)


def decode_request(data, max_bytes=MAX_REQUEST_BYTES):
    """Decode a request of any operation by its leading tag, or raise ``DecodeError``. Only
    the module of that request's kind is loaded."""
    value = codec.loads(data, "request", max_bytes)
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise DecodeError("request", "expected an array with a leading type tag")
    name = _OP_NAMES.get(value[0])
    if name is None:
        raise UnknownOp("request", "unknown operation tag %d" % value[0])
    return _named(name).from_value(value)
