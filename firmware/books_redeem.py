"""Redeems: the coins one session gave back handed to the issuer for fresh clean coins
(see ``books``). ``Books`` loads this module when the wallet redeems, or holds a redeem
waiting for its answer.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import urandom
from plugpay.protocol.structures import MAX_TX_INPUTS, TxInput, TxOutput

from .bookkeeping import WalletError
from .books import MAX_COINS, OwnOutput, amount_of
from .books_spend import require_room, sign
from .coins import CLEAN, Coin, coin_plan


def redeem(books, group, fee):
    """``Books.redeem``."""
    if not isinstance(group, bytes) or group == CLEAN:
        raise WalletError("only coins that came back from a session are redeemed")
    amount_of(fee, "fee", 0)
    require_room(books)
    coins = sorted([c for c in books.coins if c.group == group], key=lambda c: c.amount, reverse=True)
    coins = coins[:MAX_TX_INPUTS]
    if not coins:
        raise WalletError("no coins in group %s" % group.hex())
    total = sum(c.amount for c in coins)
    if total <= fee:
        raise WalletError("the coins of group %s hold %d, not more than the fee %d" % (group.hex(), total, fee))
    keys = books.keystore.available()
    if not keys:
        raise WalletError("a redeem needs a one-time key for each fresh coin, and none is left: register more")
    amounts = coin_plan(total - fee, min(L.MAX_REDEEM_OUTPUTS, keys))  # few keys left: fewer, bigger coins
    if len(books.coins) - len(coins) + len(amounts) > MAX_COINS:
        raise WalletError("the book cannot hold %d more coins" % len(amounts))
    own = []
    for sn, value in enumerate(amounts):
        index, _ = books.keystore.reserve()
        own.append(OwnOutput(sn, index, value))
    salt = urandom(L.SALT_BYTES)
    order = L.redeem_order(salt, outputs(books, own))
    op = L.Redeem([TxInput(c.txhash, c.sn) for c in coins], total - fee, order, [b""] * len(coins))
    return sign(books, op, coins, own, salt)


def outputs(books, own):
    """The ``TxOutput`` of each of a redeem's fresh coins (``OwnOutput``)."""
    return [TxOutput(books.keystore.account(o.index), o.amount) for o in own]


def redeem_request(books, spend):
    """``Books.redeem_request``."""
    return L.RedeemRequest(spend.request, spend.meta, outputs(books, spend.change)).encode()


def minted(books, spend):
    """The clean coins a confirmed redeem's mints created, where the wallet knows they are."""
    coins = []
    for o, out in zip(spend.change, outputs(books, spend.change)):
        txhash = L.redeem_mint(spend.ident, spend.meta, o.sn, out).txhash()
        coins.append(Coin(txhash, 0, o.index, o.amount, CLEAN))
    return coins
