"""Signing spends from the book: coin selection, the change key and the witnesses of a
payment, a channel's deposit, an HTLC's funding and a redeem. ``Books`` loads this module
the first time it signs (a producer that only receives never does), and ``books_redeem``
builds on it. Every check runs before anything is written; the spend is stored before its
bytes can leave (``sign``).
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.port import collect
from plugpay.protocol.schema import MAX_UINT
from plugpay.protocol.structures import MAX_TX_INPUTS, MAX_TX_OUTPUTS, Price, Transaction, TxInput, TxOutput

from .bookkeeping import WalletError
from .books import MAX_BOOK_BYTES, MAX_SPENDS, BookRecord, InsufficientFunds, OwnOutput, Spend, WouldLink, \
    amount_of, check_account, spend_ident
from .coins import CLEAN, cover, exact


def select(books, need, group=None):
    """Coins for ``need`` that link nothing: a request of session ``group`` takes that
    group's own coins first, then clean ones; any other request only clean ones."""
    if group:
        own = [c for c in books.coins if c.group == group]
        chosen = exact(own, need)
        if chosen is not None:
            return chosen
        allowed = own + [c for c in books.coins if c.group == CLEAN]
    else:
        allowed = [c for c in books.coins if c.group == CLEAN]
    chosen = cover(allowed, need)
    if chosen is not None:
        return chosen
    usable = sum(c.amount for c in allowed)
    if usable < need <= books.balance():
        raise WouldLink("%d needed; %d is in coins that may fund it, %d more came back from other sessions and "
                        "would tie them to this one: redeem them first" % (need, usable, books.balance() - usable))
    raise InsufficientFunds("%d needed, %d in %d confirmed coins (%d at most in one request)" % (
        need, usable, len(allowed), MAX_TX_INPUTS))


def require_room(books):
    """Room for one more spend of the largest size, checked before any key is reserved."""
    if len(books.spends) >= MAX_SPENDS:
        raise WalletError("%d requests wait for their result: settle some first" % MAX_SPENDS)
    size = len(BookRecord(books.coins, books.spends, books.lost).encode())
    if size + L.MAX_REQUEST_BYTES + 1024 > MAX_BOOK_BYTES:
        raise WalletError("the book holds %d bytes: wait for pending results" % size)


def prepare(books, amount, fee, group=None):
    """Coins covering ``amount + fee`` and the change ``(index, account, value)`` or
    None. Every check runs before the change key is reserved (a write)."""
    amount_of(fee, "fee", 0)
    require_room(books)
    need = amount + fee
    if need > MAX_UINT:
        raise WalletError("amount plus fee exceeds 2**64-1")
    inputs = select(books, need, group)
    value = sum(c.amount for c in inputs) - need
    if not value:
        return inputs, None
    index, account = books.keystore.reserve()
    return inputs, (index, account, value)


def sign(books, op, inputs, change, meta):
    """Sign every input over ``op``'s digest, then store the spend: on flash before the
    caller can send its bytes (``spend.request``). Returns the ``Spend``."""
    digest = op.signing_digest()
    witnesses = []
    for c in inputs:
        witnesses.append(signing.sign_digest(books.keystore.secret(c.index), digest))
    op.witnesses = witnesses
    raw = op.encode()
    spend = Spend(op.TAG, spend_ident(op), raw, inputs, change, meta)
    keys = [c.key() for c in inputs]
    coins = [c for c in books.coins if c.key() not in keys]
    collect()
    books._commit(coins, books.spends + [spend], books.lost)
    return spend


def _change(change):
    if change is None:
        return [], []
    return [OwnOutput(0, change[0], change[2])], [TxOutput(change[1], change[2])]


def pay(books, payees, fee, unit_price):
    """``Books.pay``."""
    if not isinstance(payees, (list, tuple)) or not 1 <= len(payees) <= MAX_TX_OUTPUTS - 1:
        raise WalletError("a payment has 1..%d payees" % (MAX_TX_OUTPUTS - 1))
    outputs = []
    total = 0
    for i, pair in enumerate(payees):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise WalletError("payees[%d] is not (account, amount)" % i)
        account, amount = pair
        check_account(books.ra_pubkeys, account, "payees[%d]" % i)
        total += amount_of(amount, "payees[%d] amount" % i)
        outputs.append(TxOutput(account, amount))
    amount_of(unit_price, "unit_price", 0)
    inputs, change = prepare(books, total, fee)
    own = []
    if change is not None:
        own.append(OwnOutput(len(outputs), change[0], change[2]))
        outputs.append(TxOutput(change[1], change[2]))
    tx = Transaction([TxInput(c.txhash, c.sn) for c in inputs], Price(unit_price, min(total, MAX_UINT)),
                     outputs, [b""] * len(inputs))
    return sign(books, tx, inputs, own, None)


def fund_channel_open(books, producer, collateral, installments, window, fee):
    """``Books.fund_channel_open``."""
    check_account(books.ra_pubkeys, producer, "producer")
    amount_of(collateral, "collateral")
    if type(installments) is not int or not 1 <= installments <= min(collateral, L.MAX_INSTALLMENTS):
        raise WalletError("installments must be 1..min(collateral, %d)" % L.MAX_INSTALLMENTS)
    if type(window) is not int or not 1 <= window <= L.MAX_WINDOW:
        raise WalletError("the dispute window must be 1..%d blocks" % L.MAX_WINDOW)
    inputs, change = prepare(books, collateral, fee)
    index, consumer = books.keystore.reserve()
    own, outputs = _change(change)
    op = L.ChannelOpen([TxInput(c.txhash, c.sn) for c in inputs], consumer, producer, collateral,
                       installments, window, outputs, [b""] * len(inputs))
    return sign(books, op, inputs, own, index)


def fund_htlc(books, htlc, fee, meta):
    """``Books.fund_htlc``."""
    check_account(books.ra_pubkeys, htlc.payee, "htlc.payee")
    amount_of(htlc.amount, "htlc.amount")
    if not isinstance(meta, list) or len(meta) != 2 or not isinstance(meta[0], bytes):
        raise WalletError("an HTLC is funded as part of a series: meta is [series id, number]")
    inputs, change = prepare(books, htlc.amount, fee, meta[0])
    own, outputs = _change(change)
    op = L.HtlcCreate(htlc, [TxInput(c.txhash, c.sn) for c in inputs], outputs, [b""] * len(inputs))
    return sign(books, op, inputs, own, meta)
