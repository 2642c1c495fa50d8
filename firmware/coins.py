"""Coins of the wallet, and the rule that keeps them from tying sessions together.

A coin is ``(txhash, sn, key index, amount, group)``. The ledger shows everyone which
transaction made each coin and which spent it, so a coin that came back from one session
(the change of its deposit, a channel's refund or payout, an HTLC's claim or refund) names
that session: spent in a second session, it ties the two together. So every coin carries
a *group*:

* ``CLEAN`` (``b""``): the issuer minted it alone, in a ``Faucet`` op of its own, to a fresh
  one-time key; it names nothing and may fund any one session;
* otherwise the id of the session object it came out of (the channel id, the HTLC series
  id, the transaction's hash): it may fund only that same session (an HTLC series funds
  its later HTLCs from the change of its first), and is otherwise only ever *redeemed*:
  handed back to the issuer (``Books.redeem``), who mints the same value as fresh clean
  coins, each alone, under a salted commitment nobody else can tie to the redeem. The
  issuer can link the two; so can the RA, which may audit every account anyway. Coins of
  two groups never share a request.

Coin selection among the coins a request may take, in this order (``cover``):

1. exactly the amount (plus fee), from one coin or the fewest coins of the same
   denominations (the issuer mints powers of two, ``coin_plan``): no change, so no coin
   that would have to be redeemed (``exact``);
2. else the smallest single coin that covers it: one input, and big coins stay whole;
3. else the largest coins first until covered: the fewest inputs.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.schema import MAX_UINT, U64, Bytes, Record, UInt
from plugpay.protocol.structures import HASH, MAX_TX_INPUTS, MAX_TX_OUTPUTS

from .bookkeeping import KEY_INDEX, WalletError

CLEAN = b""  # the group of a coin the issuer minted alone
GROUP = Bytes(max=32)


class Coin(Record):
    NAME = "coin"
    FIELDS = (("txhash", HASH), ("sn", UInt(MAX_TX_OUTPUTS - 1)), ("index", KEY_INDEX), ("amount", U64),
              ("group", GROUP))

    def key(self):
        return (self.txhash, self.sn)


def coin_plan(amount, parts=L.MAX_REDEEM_OUTPUTS):
    """Fresh coins for ``amount``: powers of two, so that later payments can be made
    exactly, without change (at most ``parts`` coins; the smallest bits share one)."""
    if type(amount) is not int or not 1 <= amount <= MAX_UINT:
        raise WalletError("amount must be an integer 1..2**64-1, got %r" % (amount,))
    bits = []
    bit = 1
    while bit <= amount:
        if amount & bit:
            bits.append(bit)
        bit <<= 1
    if len(bits) > parts:
        cut = len(bits) - parts + 1
        bits = [sum(bits[:cut])] + bits[cut:]
    bits.reverse()
    return bits


def exact(coins, need):
    """Coins summing exactly to ``need``, largest first (at most ``MAX_TX_INPUTS``), or None."""
    chosen = []
    left = need
    for c in sorted(coins, key=lambda c: c.amount, reverse=True):
        if c.amount <= left:
            chosen.append(c)
            left -= c.amount
            if not left:
                return chosen
            if len(chosen) == MAX_TX_INPUTS:
                return None
    return None


def cover(coins, need):
    """``exact``, else the smallest coin covering ``need``, else the largest coins until
    covered; None if they cannot cover it in ``MAX_TX_INPUTS`` inputs."""
    chosen = exact(coins, need)
    if chosen is not None:
        return chosen
    best = None
    for c in coins:
        if c.amount > need and (best is None or c.amount < best.amount):
            best = c
    if best is not None:
        return [best]
    chosen = []
    total = 0
    for c in sorted(coins, key=lambda c: c.amount, reverse=True):
        chosen.append(c)
        total += c.amount
        if total >= need:
            return chosen
        if len(chosen) == MAX_TX_INPUTS:
            break
    return None
