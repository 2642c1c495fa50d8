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
"""
from . import codec
from .codec import DecodeError
from .port import const, sha256
from .schema import Any, ArrayOf, Bool, Bytes, Int, Nested, Signature, Struct, Text, UInt
from .structures import (
    HASH,
    MAX_TX_INPUTS,
    MAX_TX_OUTPUTS,
    Account,
    ChannelState,
    Htlc,
    Transaction,
    TxInput,
    TxOutput,
)

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
LATITUDE_E6 = Int(-90000000, 90000000)  # micro-degrees
LONGITUDE_E6 = Int(-180000000, 180000000)
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


def _check_witnesses(op, path):
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


class Faucet(Struct):
    """Mints outputs on a test network, signed by the faucet key the ledger is configured
    with. The nonce makes two otherwise equal mints two different requests."""

    NAME = "faucet"
    TAG = TAG_FAUCET
    FIELDS = (
        ("nonce", UInt()),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS, 1)),
        ("faucet_sig", Signature()),
    )
    UNSIGNED = 1

    def txhash(self):
        return sha256(self.body())


class FaucetRequest(Struct):
    """A device asking the test network's faucet for money, sent sealed to the gateway
    (``sealed``), which holds the faucet key, checks the request against its limit and
    mints each output in a ``Faucet`` of its own (``host.faucet``), so the ledger never
    shows coins of one wallet created together. Not a ledger operation itself."""

    NAME = "faucet_request"
    TAG = TAG_FAUCET_REQUEST
    FIELDS = (
        ("nonce", UInt()),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_FAUCET_OUTPUTS, 1)),
    )


class Redeem(Struct):
    """Gives coins back to the issuer, who mints the same value as fresh coins, each in a
    ``Faucet`` op of its own (``redeem_mint``). A coin that came back from a session (a
    change output, a refund, a payout) names that session on the ledger; spending it in
    another session would tie the two together, so it is redeemed instead.

    ``amount`` is what the issuer owes (inputs above it are a fee). ``order`` commits to the
    fresh outputs under a secret salt (``redeem_order``): the wallet can prove what it asked
    for, while the ledger, which shows this op to everyone, shows nothing that ties the
    redeemed coins to the new ones. The id is the hash of the body, as for a channel open."""

    NAME = "redeem"
    TAG = TAG_REDEEM
    FIELDS = (
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("amount", UInt()),
        ("order", HASH),
        ("witnesses", ArrayOf(Signature(), MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        _check_witnesses(self, path)
        if self.amount < 1:
            raise DecodeError(path + ".amount", "at least 1")

    def redeem_id(self):
        return sha256(self.body())


class RedeemRequest(Struct):
    """What a wallet sends the issuer, sealed (``protocol.sealed``): the signed ``Redeem``,
    the salt of its ``order`` and the fresh outputs it commits to. Not a ledger op."""

    NAME = "redeem_request"
    TAG = TAG_REDEEM_REQUEST
    FIELDS = (
        ("redeem", Bytes(max=MAX_REQUEST_BYTES)),
        ("salt", Bytes(SALT_BYTES)),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_REDEEM_OUTPUTS, 1)),
    )


def redeem_order(salt, outputs):
    """The ``Redeem.order`` commitment to ``outputs`` under ``salt``."""
    return sha256(b"plugpay/redeem-order/v1" + salt + codec.dumps([o.to_value() for o in outputs]))


def redeem_mint(redeem_id, salt, i, output):
    """The unsigned ``Faucet`` op that mints fresh output ``i`` of a redeem. Its nonce
    comes from the salt, which only the wallet and the issuer know: the wallet finds its
    coin at ``(op.txhash(), 0)`` without asking anyone, and nobody else can tell which
    mints answer which redeem."""
    nonce = int.from_bytes(sha256(b"plugpay/redeem-mint/v1" + redeem_id + salt + bytes((i,)))[:8], "big")
    return Faucet(nonce, [output], b"")


class ChannelOpen(Struct):
    """Locks the consumer's collateral in a state channel (Unterweger et al., deposit).

    The channel starts at seq 0 with the first of ``installments`` installments,
    ``collateral // installments``, already the producer's: the producer never delivers
    energy it has not been paid for. The id is the hash of the body, so the producer can
    compute it from the open it was shown before the witnesses exist.
    """

    NAME = "channel_open"
    TAG = TAG_CHANNEL_OPEN
    FIELDS = (
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("consumer", Nested(Account)),  # refunds go here; its key signs channel states
        ("producer", Nested(Account)),  # payouts go here; its key signs channel states
        ("collateral", UInt()),
        ("installments", UInt(MAX_INSTALLMENTS)),
        ("window", UInt(MAX_WINDOW)),
        ("change", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS)),
        ("witnesses", ArrayOf(Signature(), MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        _check_witnesses(self, path)
        if self.installments < 1 or self.installments > self.collateral:
            raise DecodeError(path + ".installments", "must be 1..collateral")
        if self.window < 1:
            raise DecodeError(path + ".window", "a dispute window is at least one block")

    def channel_id(self):
        return sha256(self.body())

    def first_installment(self):
        return self.collateral // self.installments


def opening_state(channel_id, first_installment):
    """The implicit seq-0 state of a channel: valid on the ledger without signatures.

    Off-chain states start at seq 1; a party with nothing newer closes with this one.
    """
    return ChannelState(channel_id, 0, first_installment, 0, bytes(32), b"", b"")


class ChannelClose(Struct):
    """Cooperative close: a fully signed state, and both parties' signatures on closing
    with it. Pays out at once."""

    NAME = "channel_close"
    TAG = TAG_CHANNEL_CLOSE
    FIELDS = (
        ("state", Nested(ChannelState)),
        ("sig_consumer", Signature()),
        ("sig_producer", Signature()),
    )
    UNSIGNED = 2


class ChannelDispute(Struct):
    """Unilateral close by one party with its latest state: starts (or, with a higher seq,
    overrides within) the dispute window. Signed by the closing party."""

    NAME = "channel_dispute"
    TAG = TAG_CHANNEL_DISPUTE
    FIELDS = (
        ("state", Nested(ChannelState)),
        ("by_producer", Bool()),
        ("closer_sig", Signature()),
    )
    UNSIGNED = 1


class ChannelSettle(Struct):
    """Pays out a unilaterally closed channel once its dispute window is over. Anyone may
    send it: the payout is fixed by the ledger's state, not by the sender."""

    NAME = "channel_settle"
    TAG = TAG_CHANNEL_SETTLE
    FIELDS = (("channel_id", HASH),)


class HtlcCreate(Struct):
    """Funds an HTLC (the payer-signed terms) with Gao inputs. The HTLC id is
    ``htlc.digest()``: payer and payee know it before the funding exists."""

    NAME = "htlc_create"
    TAG = TAG_HTLC_CREATE
    FIELDS = (
        ("htlc", Nested(Htlc)),
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("change", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS)),
        ("witnesses", ArrayOf(Signature(), MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        _check_witnesses(self, path)


class HtlcClaim(Struct):
    """The payee reveals r before the timeout; signed by the payee's key so nobody who
    saw r first can race the claim."""

    NAME = "htlc_claim"
    TAG = TAG_HTLC_CLAIM
    FIELDS = (("htlc_id", HASH), ("preimage", Bytes(32)), ("payee_sig", Signature()))
    UNSIGNED = 1


class HtlcRefund(Struct):
    """The payer takes the amount back at or after the timeout height."""

    NAME = "htlc_refund"
    TAG = TAG_HTLC_REFUND
    FIELDS = (("htlc_id", HASH), ("payer_sig", Signature()))
    UNSIGNED = 1


class MarketRequest(Struct):
    """Exploration: a consumer asks for energy. The id is a one-time public key that signs
    the request; the place is a coarse region name, never a position. Bids are taken
    until block ``bid_deadline``."""

    NAME = "market_request"
    TAG = TAG_MARKET_REQUEST
    FIELDS = (
        ("request_key", PUBKEY),
        ("region", Text(32)),
        ("window_start", UInt()),
        ("window_end", UInt()),
        ("window_unit", UInt(WINDOW_UNIX_MINUTES)),
        ("energy_wh", UInt()),
        ("bid_deadline", UInt()),
        ("sig", Signature()),
    )
    UNSIGNED = 1

    def validate(self, path):
        if self.window_start >= self.window_end:
            raise DecodeError(path + ".window_end", "the window must end after it starts")
        if self.energy_wh < 1:
            raise DecodeError(path + ".energy_wh", "at least 1 Wh")


def market_region_key(region):
    """The ``QUERY_MARKET_REGION`` key of a region name: SHA-256 of its UTF-8 bytes, exactly
    as the request spells it (no case folding: a region is a name both sides agree on)."""
    return sha256(region.encode("utf-8"))


class MarketBid(Struct):
    """Bidding: a producer's offer under its own one-time key, with its site (a charger's
    place is public; the consumer needs it to weigh distance against price). A higher
    ``seq`` from the same bidder replaces its earlier bid while the request is open."""

    NAME = "market_bid"
    TAG = TAG_MARKET_BID
    FIELDS = (
        ("request_key", PUBKEY),
        ("bidder_key", PUBKEY),
        ("lat_e6", LATITUDE_E6),
        ("lon_e6", LONGITUDE_E6),
        ("unit_price", UInt()),
        ("seq", UInt()),
        ("sig", Signature()),
    )
    UNSIGNED = 1

    def digest(self):
        return sha256(self.encode())


class MarketCommit(Struct):
    """Evaluation: the requester picks a bid (by the digest of its current version) and
    thereby closes the request. Signed by the request key."""

    NAME = "market_commit"
    TAG = TAG_MARKET_COMMIT
    FIELDS = (("request_key", PUBKEY), ("bid_digest", HASH), ("sig", Signature()))
    UNSIGNED = 1


class MarketWithdraw(Struct):
    """A consumer takes its open request back (its session could not go ahead): bidding
    ends and producers stop waiting for a commit. Signed by the request key."""

    NAME = "market_withdraw"
    TAG = TAG_MARKET_WITHDRAW
    FIELDS = (("request_key", PUBKEY), ("sig", Signature()))
    UNSIGNED = 1


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
    FIELDS = (("kind", UInt(0xFF)), ("key", Bytes(min=32, max=33)), ("index", UInt(MAX_TX_OUTPUTS - 1)))


class Result(Struct):
    """The ledger's answer to one request: which request (SHA-256 of its bytes), whether
    it was applied, why not (a reason code and a short text), and what it produced (a
    txhash, a channel or HTLC id, a deadline, or a query's record)."""

    NAME = "ledger_result"
    TAG = TAG_RESULT
    FIELDS = (
        ("request_digest", HASH),
        ("ok", Bool()),
        ("reason", UInt(0xFFFF)),
        ("detail", Text(MAX_DETAIL_BYTES)),
        ("data", Any()),
    )

    def validate(self, path):
        if self.ok != (self.reason == OK):
            raise DecodeError(path + ".reason", "ok and reason disagree")


OPS = dict(
    (cls.TAG, cls)
    for cls in (Transaction, Faucet, Redeem, ChannelOpen, ChannelClose, ChannelDispute, ChannelSettle,
                HtlcCreate, HtlcClaim, HtlcRefund, MarketRequest, MarketBid, MarketCommit, MarketWithdraw)
)


class UnknownOp(DecodeError):
    """Well-formed CBOR whose tag is no ledger operation."""


def request_id(op, raw):
    """The one id of a ledger request (``op`` decoded from ``raw``): what the ledger confirms
    it under (``QUERY_TX``, ``plugpay ledger tx ID``), and so what session records, consoles,
    the event log and the dashboard show. A transaction's or mint's txhash, a channel's id
    for its open, an HTLC's id for its creation, a redeem's id; else SHA-256 of the bytes."""
    tag = op.TAG
    if tag == Transaction.TAG or tag == TAG_FAUCET:
        return op.txhash()
    if tag == TAG_CHANNEL_OPEN:
        return op.channel_id()
    if tag == TAG_HTLC_CREATE:
        return op.htlc.digest()
    if tag == TAG_REDEEM:
        return op.redeem_id()
    return sha256(raw)


def decode_request(data, max_bytes=MAX_REQUEST_BYTES):
    """Decode a request of any operation by its leading tag, or raise ``DecodeError``."""
    value = codec.loads(data, "request", max_bytes)
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise DecodeError("request", "expected an array with a leading type tag")
    cls = OPS.get(value[0])
    if cls is None:
        raise UnknownOp("request", "unknown operation tag %d" % value[0])
    return cls.from_value(value)

