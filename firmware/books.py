"""The wallet's UTXO book: the coins it owns and the spends it signed, in one A/B record.

A coin is ``(txhash, sn, key index, amount)``. A *spend* is a signed request that consumes
coins (a Gao ``Transaction``, a ``ChannelOpen``, an ``HtlcCreate``), kept with its exact
bytes, the coins it consumes and the outputs that come back to the wallet (change). The
spend is on flash, and its coins out of the spendable set, *before* the bytes leave the
device: after a reboot the wallet re-submits the same bytes (``pending_requests``) and can
never sign a second, conflicting spend of those coins. One record holds everything so
that one atomic write moves coins between states.

Coin selection, in this order:

1. one coin of exactly the amount (plus fee): no change, so no one-time key is spent;
2. else the smallest single coin that covers it: one input (one signature, ~100 bytes,
   one account linked to the payment) and the big coins stay whole for big payments;
3. else the largest coins first until covered: the fewest inputs, so the fewest
   signatures on the device and the fewest of its one-time accounts linked together.

Change goes to a fresh one-time account (``Keystore.reserve``). Only confirmed coins are
selected; change of a spend becomes a coin when the ledger confirms the spend.

A ledger ``Result`` settles a spend: OK (or DUPLICATE, which means this very request was
confirmed before) adds its change; a refusal returns its coins, except when the ledger
says an input is gone or not ours (DOUBLE_SPEND, UNKNOWN_INPUT, BAD_INPUT_SIGNATURE):
then the book and the ledger disagree, and those coins move to ``lost`` for a person to
look at instead of being tried again. Results must come from the ledger client's f+1
agreement: a forged refusal would make the wallet spend the coins again.

Writes (``Storage.replace``): ``receive``, ``settle``: 1. ``pay``, ``fund_htlc``: 1, plus
1 for the change key's reservation when there is change. ``split``: 2 (its key, the book).
``fund_channel_open``: 2 (the consumer key, the book) plus 1 with change. A repeat of a
``receive`` writes nothing; reads and ``check`` write nothing.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import collect, const, sha256
from plugpay.protocol.schema import MAX_UINT, Any, ArrayOf, Bytes, Nested, Record, Struct, UInt
from plugpay.protocol.structures import (
    HASH,
    MAX_TX_INPUTS,
    MAX_TX_OUTPUTS,
    Account,
    Price,
    Transaction,
    TxInput,
    TxOutput,
)

from .bookkeeping import KEY_INDEX, TAG_BOOK, WalletError, load_payload, strict
from .keystore import MAX_KEYS
from .records import ABRecord

MAX_COINS = const(128)  # receive/split refuse beyond this: consolidate with a payment to self
MAX_SPENDS = const(16)  # signed requests waiting for their result
MAX_LOST = const(16)  # the newest disagreements with the ledger are kept for a person
MAX_BOOK_BYTES = const(32768)  # the book is read whole into RAM
# Coins after the worst settle: every spend's inputs back, or its change added.
_MAX_HELD = MAX_COINS + MAX_SPENDS * MAX_TX_OUTPUTS
# Refusals after which the wallet cannot tell which input is gone: keep them out of use.
_INPUT_GONE = (L.DOUBLE_SPEND, L.UNKNOWN_INPUT, L.BAD_INPUT_SIGNATURE)


class InsufficientFunds(WalletError):
    """The confirmed coins do not cover the amount (or need more than 16 inputs)."""


class Coin(Record):
    NAME = "coin"
    FIELDS = (("txhash", HASH), ("sn", UInt(MAX_TX_OUTPUTS - 1)), ("index", KEY_INDEX), ("amount", UInt()))

    def key(self):
        return (self.txhash, self.sn)


class OwnOutput(Record):
    """An output of a spend that pays this wallet; it lands at ``(spend ident, sn)``."""

    NAME = "own_output"
    FIELDS = (("sn", UInt(MAX_TX_OUTPUTS - 1)), ("index", KEY_INDEX), ("amount", UInt()))


class Spend(Record):
    """A signed request: its tag, its id on the ledger (txhash, channel id or HTLC id), its
    exact bytes, the coins it consumes, what comes back, and the caller's ``meta``."""

    NAME = "spend"
    FIELDS = (
        ("kind", UInt(0xFF)),
        ("ident", HASH),
        ("request", Bytes(max=L.MAX_REQUEST_BYTES)),
        ("inputs", ArrayOf(Nested(Coin), MAX_TX_INPUTS, 1)),
        ("change", ArrayOf(Nested(OwnOutput), MAX_TX_OUTPUTS)),
        ("meta", Any()),
    )

    def validate(self, path):
        meta = self.meta
        if self.kind == L.TAG_CHANNEL_OPEN:
            good = type(meta) is int and 0 <= meta < MAX_KEYS  # the consumer's key index
        elif self.kind == L.TAG_HTLC_CREATE:  # [series id, HTLC number]
            good = isinstance(meta, list) and len(meta) == 2 and isinstance(meta[0], bytes) and type(meta[1]) is int
        else:
            good = self.kind == L.Transaction.TAG and meta is None
        if not good:
            raise DecodeError(path + ".meta", "does not fit a request of tag %d" % self.kind)

    def digest(self):
        """What the ledger's ``Result.request_digest`` names."""
        return sha256(self.request)


class LostCoin(Record):
    NAME = "lost_coin"
    FIELDS = (("coin", Nested(Coin)), ("reason", UInt(0xFFFF)))


class BookRecord(Struct):
    NAME = "wallet_book"
    TAG = TAG_BOOK
    FIELDS = (
        ("coins", ArrayOf(Nested(Coin), _MAX_HELD)),
        ("spends", ArrayOf(Nested(Spend), MAX_SPENDS)),
        ("lost", ArrayOf(Nested(LostCoin), MAX_LOST)),
    )


def _amount(value, what, minimum=1):
    if type(value) is not int or value < minimum or value > MAX_UINT:
        raise WalletError("%s must be an integer %d..2**64-1, got %r" % (what, minimum, value))
    return value


def check_account(ra_pubkeys, account, what):
    """Gao step 2 before signing: money goes to RA-signed accounts only, so a request the
    ledger would refuse for its account is refused here, before any key is spent."""
    if not isinstance(account, Account):
        raise WalletError("%s is not an Account" % what)
    ra = ra_pubkeys.get(account.epoch)
    if ra is None:
        raise WalletError("%s: RA epoch %d is not one this wallet knows" % (what, account.epoch))
    if not signing.verify(ra, account, account.ra_sig):
        raise WalletError("%s: the RA signature does not verify" % what)


def _spend_ident(op):
    """The id the ledger gives a request that spends coins."""
    if op.TAG == L.TAG_CHANNEL_OPEN:
        return op.channel_id()
    if op.TAG == L.TAG_HTLC_CREATE:
        return op.htlc.digest()
    return op.txhash()


class Books:
    """The book of one wallet. ``Books.open`` loads it; ``RecordCorrupt`` and
    ``WalletError`` (a malformed record) pass through for the wallet to report."""

    def __init__(self, storage, keystore, ra_pubkeys):
        self.record = ABRecord(storage, "books", keystore.state_key)
        self.keystore = keystore
        self.ra_pubkeys = ra_pubkeys
        self.coins = []
        self.spends = []
        self.lost = []

    @classmethod
    def open(cls, storage, keystore, ra_pubkeys):
        books = cls(storage, keystore, ra_pubkeys)
        rec = load_payload(books.record, BookRecord)
        if rec is not None:
            books.coins, books.spends, books.lost = rec.coins, rec.spends, rec.lost
        return books

    def _commit(self, coins, spends, lost):
        """Store the new book, then adopt it; an error before the write changes nothing."""
        try:
            payload = BookRecord(coins, spends, lost).encode()
        except ValueError as e:
            raise WalletError("the book would not be valid: %s" % e)
        if len(payload) > MAX_BOOK_BYTES:
            raise WalletError("the book would hold %d bytes (limit %d): wait for pending results" % (
                len(payload), MAX_BOOK_BYTES))
        self.record.store(payload)
        self.coins, self.spends, self.lost = coins, spends, lost

    # -- reading ---------------------------------------------------------------------------

    def balance(self):
        """Confirmed coins: what can be spent now."""
        return sum(c.amount for c in self.coins)

    def locked(self):
        """Coins inside spends that wait for their result."""
        return sum(c.amount for s in self.spends for c in s.inputs)

    def incoming(self):
        """Change that becomes coins when the pending spends confirm."""
        return sum(o.amount for s in self.spends for o in s.change)

    def pending_requests(self):
        """The signed bytes of every spend without a result: send them (again)."""
        return [s.request for s in self.spends]

    def find(self, digest):
        """The pending spend whose request has SHA-256 ``digest``, or None."""
        for s in self.spends:
            if s.digest() == digest:
                return s
        return None

    def spend_with_meta(self, meta):
        for s in self.spends:
            if s.meta == meta:
                return s
        return None

    def knows(self, txhash, sn):
        """True if the coin is in the book (spendable or inside a pending spend)."""
        for c in self.coins:
            if c.txhash == txhash and c.sn == sn:
                return True
        for s in self.spends:
            for c in s.inputs:
                if c.txhash == txhash and c.sn == sn:
                    return True
        return False

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, txhash, sn, index, amount):
        """Learn a coin paid to key ``index`` (a faucet mint, a payment, a channel or HTLC
        payout). Returns False, writing nothing, if the book knows it already."""
        try:
            coin = Coin(txhash, sn, index, amount)
        except ValueError as e:
            raise WalletError("not a coin: %s" % e)
        _amount(amount, "amount")
        if index >= self.keystore.reserved:
            raise WalletError("key %d was never handed out: nothing can have paid it" % index)
        for c in self.coins:
            if c.key() == coin.key():
                if c.index == index and c.amount == amount:
                    return False
                raise WalletError("coin %s:%d is in the book with key %d and amount %d" % (
                    txhash.hex(), sn, c.index, c.amount))
        if self.knows(txhash, sn):
            return False
        if len(self.coins) >= MAX_COINS:
            raise WalletError("the book holds %d coins: consolidate them with a payment to self" % MAX_COINS)
        lost = [x for x in self.lost if x.coin.key() != coin.key()]
        self._commit(self.coins + [coin], self.spends, lost)
        return True

    # -- building and signing ------------------------------------------------------------------

    def _check_account(self, account, what):
        check_account(self.ra_pubkeys, account, what)

    def _select(self, need):
        best = None
        for c in self.coins:
            if c.amount == need:
                return [c]
            if c.amount > need and (best is None or c.amount < best.amount):
                best = c
        if best is not None:
            return [best]
        chosen = []
        total = 0
        for c in sorted(self.coins, key=lambda c: c.amount, reverse=True):
            chosen.append(c)
            total += c.amount
            if total >= need:
                return chosen
            if len(chosen) == MAX_TX_INPUTS:
                break
        raise InsufficientFunds("%d needed, %d in %d confirmed coins (%d at most in one request)" % (
            need, self.balance(), len(self.coins), MAX_TX_INPUTS))

    def _require_room(self):
        """Room for one more spend of the largest size, checked before any key is reserved."""
        if len(self.spends) >= MAX_SPENDS:
            raise WalletError("%d requests wait for their result: settle some first" % MAX_SPENDS)
        size = len(BookRecord(self.coins, self.spends, self.lost).encode())
        if size + L.MAX_REQUEST_BYTES + 1024 > MAX_BOOK_BYTES:
            raise WalletError("the book holds %d bytes: wait for pending results" % size)

    def _prepare(self, amount, fee):
        """Coins covering ``amount + fee`` and the change ``(index, account, value)`` or
        None. Every check runs before the change key is reserved (a write)."""
        _amount(fee, "fee", 0)
        self._require_room()
        need = amount + fee
        if need > MAX_UINT:
            raise WalletError("amount plus fee exceeds 2**64-1")
        inputs = self._select(need)
        value = sum(c.amount for c in inputs) - need
        if not value:
            return inputs, None
        index, account = self.keystore.reserve()
        return inputs, (index, account, value)

    def _sign(self, op, inputs, change, meta):
        """Sign every input over ``op``'s digest, then store the spend: on flash before the
        caller can send its bytes (``spend.request``). Returns the ``Spend``."""
        digest = op.signing_digest()
        witnesses = []
        for c in inputs:
            witnesses.append(signing.sign_digest(self.keystore.secret(c.index), digest))
        op.witnesses = witnesses
        raw = op.encode()
        spend = Spend(op.TAG, _spend_ident(op), raw, inputs, change, meta)
        keys = [c.key() for c in inputs]
        coins = [c for c in self.coins if c.key() not in keys]
        collect()
        self._commit(coins, self.spends + [spend], self.lost)
        return spend

    def pay(self, payees, fee=0, unit_price=0):
        """A signed Gao ``Transaction`` paying ``payees`` (``[(Account, amount)]``), change to
        a fresh own account. Returns the stored ``Spend`` (``.request``: the bytes to send,
        ``.ident``: the txhash)."""
        if not isinstance(payees, (list, tuple)) or not 1 <= len(payees) <= MAX_TX_OUTPUTS - 1:
            raise WalletError("a payment has 1..%d payees" % (MAX_TX_OUTPUTS - 1))
        outputs = []
        total = 0
        for i, pair in enumerate(payees):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise WalletError("payees[%d] is not (account, amount)" % i)
            account, amount = pair
            self._check_account(account, "payees[%d]" % i)
            total += _amount(amount, "payees[%d] amount" % i)
            outputs.append(TxOutput(account, amount))
        _amount(unit_price, "unit_price", 0)
        inputs, change = self._prepare(total, fee)
        own = []
        if change is not None:
            own.append(OwnOutput(len(outputs), change[0], change[2]))
            outputs.append(TxOutput(change[1], change[2]))
        tx = Transaction([TxInput(c.txhash, c.sn) for c in inputs], Price(unit_price, min(total, MAX_UINT)),
                         outputs, [b""] * len(inputs))
        return self._sign(tx, inputs, own, None)

    def split(self, parts, amount, fee=0):
        """A ``Transaction`` that pays ``parts`` outputs of ``amount`` to one fresh own
        account (and its change to the same account): separate coins to fund several
        requests in one block, such as the N HTLCs of a series."""
        if type(parts) is not int or not 1 <= parts <= MAX_TX_OUTPUTS - 1:
            raise WalletError("a split makes 1..%d coins" % (MAX_TX_OUTPUTS - 1))
        _amount(amount, "amount")
        _amount(fee, "fee", 0)
        if parts * amount + fee > MAX_UINT:
            raise WalletError("the split exceeds 2**64-1")
        if len(self.coins) + parts + 1 > MAX_COINS:
            raise WalletError("the book cannot hold %d more coins" % (parts + 1))
        self._require_room()
        inputs = self._select(parts * amount + fee)
        index, account = self.keystore.reserve()
        value = sum(c.amount for c in inputs) - parts * amount - fee
        amounts = [amount] * parts + ([value] if value else [])
        outputs = [TxOutput(account, a) for a in amounts]
        own = [OwnOutput(sn, index, a) for sn, a in enumerate(amounts)]
        tx = Transaction([TxInput(c.txhash, c.sn) for c in inputs], Price(0, parts * amount), outputs,
                         [b""] * len(inputs))
        return self._sign(tx, inputs, own, None)

    def fund_channel_open(self, producer, collateral, installments, window, fee=0):
        """A signed ``ChannelOpen`` locking ``collateral`` (Unterweger et al.'s deposit) as
        the consumer, under a fresh one-time key whose index is the spend's ``meta``. Its
        ``ident`` is the channel id."""
        self._check_account(producer, "producer")
        _amount(collateral, "collateral")
        if type(installments) is not int or not 1 <= installments <= min(collateral, L.MAX_INSTALLMENTS):
            raise WalletError("installments must be 1..min(collateral, %d)" % L.MAX_INSTALLMENTS)
        if type(window) is not int or not 1 <= window <= L.MAX_WINDOW:
            raise WalletError("the dispute window must be 1..%d blocks" % L.MAX_WINDOW)
        inputs, change = self._prepare(collateral, fee)
        index, consumer = self.keystore.reserve()
        own, outputs = self._change(change)
        op = L.ChannelOpen([TxInput(c.txhash, c.sn) for c in inputs], consumer, producer, collateral,
                           installments, window, outputs, [b""] * len(inputs))
        return self._sign(op, inputs, own, index)

    def fund_htlc(self, htlc, fee=0, meta=None):
        """A signed ``HtlcCreate`` funding the payer-signed terms ``htlc``; its ``ident`` is
        the HTLC id."""
        self._check_account(htlc.payee, "htlc.payee")
        _amount(htlc.amount, "htlc.amount")
        inputs, change = self._prepare(htlc.amount, fee)
        own, outputs = self._change(change)
        op = L.HtlcCreate(htlc, [TxInput(c.txhash, c.sn) for c in inputs], outputs, [b""] * len(inputs))
        return self._sign(op, inputs, own, meta)

    @staticmethod
    def _change(change):
        if change is None:
            return [], []
        return [OwnOutput(0, change[0], change[2])], [TxOutput(change[1], change[2])]

    # -- results ---------------------------------------------------------------------------

    @staticmethod
    def confirmed(spend, result):
        """True if ``result`` says ``spend`` is on the ledger, False if it was refused.
        A result claiming success for another id is refused (``WalletError``)."""
        if result.ok:
            if result.data != spend.ident:
                raise WalletError("the result confirms %r, not this request's id %s" % (result.data, spend.ident.hex()))
            return True
        return result.reason == L.DUPLICATE

    def settle(self, spend, result):
        """Apply the ledger's ``result`` for ``spend``: returns "confirmed", "refused" (its
        coins are spendable again) or "lost" (its coins moved to ``lost``)."""
        keep = [s for s in self.spends if s is not spend]
        if len(keep) == len(self.spends):
            raise WalletError("that spend is not pending")
        if self.confirmed(spend, result):
            coins = self.coins + [Coin(spend.ident, o.sn, o.index, o.amount) for o in spend.change]
            self._commit(coins, keep, self.lost)
            return "confirmed"
        if result.reason in _INPUT_GONE:
            lost = self.lost + [LostCoin(c, result.reason) for c in spend.inputs]
            self._commit(self.coins, keep, lost[max(0, len(lost) - MAX_LOST):])
            return "lost"
        self._commit(self.coins + spend.inputs, keep, self.lost)
        return "refused"

    # -- integrity ----------------------------------------------------------------------------

    def check(self):
        """Invariants of the book, as a list of problems (empty if none): no coin twice, keys
        handed out, amounts positive, every pending request decodes to what the book says
        it is and is signed by the keys of its inputs."""
        problems = []
        seen = []
        reserved = self.keystore.reserved
        held = list(self.coins)
        for s in self.spends:
            held.extend(s.inputs)
        for c in held:
            if c.key() in seen:
                problems.append("coin %s:%d is in the book twice" % (c.txhash.hex(), c.sn))
            seen.append(c.key())
            if c.amount == 0:
                problems.append("coin %s:%d has amount 0" % (c.txhash.hex(), c.sn))
            if c.index >= reserved:
                problems.append("coin %s:%d belongs to key %d, never handed out" % (c.txhash.hex(), c.sn, c.index))
        for s in self.spends:
            problems.extend(self._check_spend(s))
            collect()
        return problems

    def _check_spend(self, s):
        where = "pending request %s" % s.ident.hex()
        try:
            op = L.decode_request(s.request)
        except ValueError as e:
            return [where + ": does not decode (%s)" % e]
        if op.TAG != s.kind or _spend_ident(op) != s.ident:
            return [where + ": its bytes are another request"]
        if [(i.pre_txhash, i.pre_sn) for i in op.inputs] != [c.key() for c in s.inputs]:
            return [where + ": its inputs are not the coins the book took for it"]
        digest = op.signing_digest()
        for c, w in zip(s.inputs, op.witnesses):
            if not signing.verify_digest(signing.public_key(self.keystore.secret(c.index)), digest, w):
                return [where + ": witness for %s:%d does not verify" % (c.txhash.hex(), c.sn)]
        return []


def decode_result(data):
    """A ledger ``Result`` from untrusted bytes."""
    return strict(L.Result, data, "ledger result")
