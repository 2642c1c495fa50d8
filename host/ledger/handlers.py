"""The handler table: every operation tag and query kind, to the contract function that
serves it, gathered from the contract families; and what a check before ordering defers.

A handler is ``handler(state, op, raw, height)``: it checks ``op`` against the state and
raises ``Reject`` with a reason, or writes the change and returns what the result carries.
Every handler writes only after all of its checks passed; ``Ledger.check`` relies on it.
"""
from plugpay.protocol import ledger_ops as L

from . import channels, htlcs, market, payments

FAMILIES = (payments, channels, htlcs, market)


def _merge(tables):
    merged = {}
    for table in tables:
        for key, handler in table.items():
            if key in merged:
                raise ValueError("two handlers for %r" % (key,))
            merged[key] = handler
    return merged


OPERATIONS = _merge(family.HANDLERS for family in FAMILIES)
QUERIES = _merge(family.QUERIES for family in FAMILIES)
BLOCK_START = (market.close_bidding,)  # run at the start of every block, before its requests

# Refusals that requests ordered before this one, or a later height, can turn into success:
# an output, channel, HTLC, request or bid not on the ledger yet, a close not started yet,
# a window or timeout not reached yet. A check before ordering lets such a request through
# for the block to decide; every other refusal holds at any later height (what it depends
# on only grows: confirmed ids, spent outputs, sequence numbers, heights, bid counts).
DEFERRED = frozenset({
    L.UNKNOWN_INPUT, L.CHANNEL_UNKNOWN, L.CHANNEL_NOT_CLOSING, L.CHANNEL_TOO_EARLY, L.HTLC_UNKNOWN,
    L.HTLC_NOT_EXPIRED, L.MARKET_UNKNOWN, L.MARKET_UNKNOWN_BID,
})
