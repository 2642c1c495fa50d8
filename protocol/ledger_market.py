"""Market requests (Unterweger et al.'s exploration, bidding and evaluation): a consumer's
request, a producer's bid, the consumer's commit to one bid or its withdrawal.
``ledger_ops`` names everything here and loads this module when one is first used.
"""
from .codec import DecodeError
from .ledger_ops import (
    PUBKEY,
    TAG_MARKET_BID,
    TAG_MARKET_COMMIT,
    TAG_MARKET_REQUEST,
    TAG_MARKET_WITHDRAW,
    WINDOW_UNIX_MINUTES,
)
from .port import sha256
from .schema import SIG, U64, Int, Struct, Text, UInt
from .structures import HASH

LATITUDE_E6 = Int(-90000000, 90000000)  # micro-degrees
LONGITUDE_E6 = Int(-180000000, 180000000)


class MarketRequest(Struct):
    """Exploration: a consumer asks for energy. The id is a one-time public key that signs
    the request; the place is a coarse region name, never a position. Bids are taken
    until block ``bid_deadline``."""

    NAME = "market_request"
    TAG = TAG_MARKET_REQUEST
    FIELDS = (
        ("request_key", PUBKEY),
        ("region", Text(32)),
        ("window_start", U64),
        ("window_end", U64),
        ("window_unit", UInt(WINDOW_UNIX_MINUTES)),
        ("energy_wh", U64),
        ("bid_deadline", U64),
        ("sig", SIG),
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
        ("unit_price", U64),
        ("seq", U64),
        ("sig", SIG),
    )
    UNSIGNED = 1

    def digest(self):
        return sha256(self.encode())


class MarketCommit(Struct):
    """Evaluation: the requester picks a bid (by the digest of its current version) and
    thereby closes the request. Signed by the request key."""

    NAME = "market_commit"
    TAG = TAG_MARKET_COMMIT
    FIELDS = (("request_key", PUBKEY), ("bid_digest", HASH), ("sig", SIG))
    UNSIGNED = 1


class MarketWithdraw(Struct):
    """A consumer takes its open request back (its session could not go ahead): bidding
    ends and producers stop waiting for a commit. Signed by the request key."""

    NAME = "market_withdraw"
    TAG = TAG_MARKET_WITHDRAW
    FIELDS = (("request_key", PUBKEY), ("sig", SIG))
    UNSIGNED = 1
