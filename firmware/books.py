"""The wallet's UTXO book: the coins it owns and the spends it signed, in one A/B record.

A coin is ``(txhash, sn, key index, amount, group)``. A *spend* is a signed request that
consumes coins (a Gao ``Transaction``, a ``ChannelOpen``, an ``HtlcCreate``, a ``Redeem``),
kept with its exact bytes, the coins it consumes and the outputs that come back to the
wallet (change). The spend is on flash, and its coins out of the spendable set, *before*
the bytes leave the device: after a reboot the wallet re-submits the same bytes
(``pending_requests``) and can never sign a second, conflicting spend of those coins. One
record holds everything so that one atomic write moves coins between states.

Coins and privacy: every coin carries a *group*, and a request of one session never spends
coins another session gave back (``coins``: the rule, coin selection and denominations).
A request that can only be paid by breaking it is refused (``WouldLink``) and says why;
``Wallet.status`` shows what waits to be redeemed.

Change goes to a fresh one-time account (``Keystore.reserve``) in the spend's group. Only
confirmed coins are selected; change of a spend becomes a coin when the ledger confirms
the spend.

A ledger ``Result`` settles a spend: OK (or DUPLICATE, which means this very request was
confirmed before) adds its change; a refusal returns its coins, except when the ledger
says an input is gone or not ours (DOUBLE_SPEND, UNKNOWN_INPUT, BAD_INPUT_SIGNATURE):
then the book and the ledger disagree, and those coins move to ``lost`` for a person to
look at instead of being tried again. Results must come from the ledger client's f+1
agreement (or, for a redeem, the issuer's answer once its mints are confirmed): a forged
refusal would make the wallet spend the coins again.

Writes (``Storage.replace``): ``receive``, ``settle``: 1. ``pay``, ``fund_htlc``: 1, plus
1 for the change key's reservation when there is change. ``fund_channel_open``: 2 (the
consumer key, the book) plus 1 with change. ``redeem``: 1 per fresh coin's key, then 1.
A repeat of a ``receive`` writes nothing; reads and ``check`` write nothing.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import codec
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import collect, const, sha256, urandom
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

from . import names
from .bookkeeping import KEY_INDEX, TAG_BOOK, WalletError, strict
from .coins import CLEAN, Coin, coin_plan, cover, exact
from .keystore import MAX_KEYS
from .records import SLOTS, ABRecord

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


class WouldLink(InsufficientFunds):
    """Enough money, but only in coins that came back from other sessions: paying with them
    would tie those sessions to this one on the ledger. Redeem them first."""


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
        elif self.kind == L.TAG_REDEEM:  # the salt of its order; its change lands in the issuer's mints
            good = isinstance(meta, bytes) and len(meta) == L.SALT_BYTES
        else:
            good = self.kind == L.Transaction.TAG and meta is None
        if not good:
            raise DecodeError(path + ".meta", "does not fit a request of tag %d" % self.kind)

    def digest(self):
        """What the ledger's ``Result.request_digest`` names."""
        return sha256(self.request)

    def group(self):
        """The group of the coins this spend gives back (see the module doc)."""
        if self.kind == L.TAG_HTLC_CREATE:
            return self.meta[0]
        return CLEAN if self.kind == L.TAG_REDEEM else self.ident


class LostCoin(Record):
    NAME = "lost_coin"
    FIELDS = (("coin", Nested(Coin)), ("reason", UInt(0xFFFF)))


class BookRecord(Struct):
    NAME = "wallet_book"
    TAG = TAG_BOOK
    VERSION = 2  # 2: coins carry their group
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
    if op.TAG == L.TAG_REDEEM:
        return op.redeem_id()
    return op.txhash()


def _upgrade_v1(value):
    """A version-1 book (coins without a group), as version 2. Where its coins came from is
    unknown, so each is put in the group of the transaction that made it: coins of one
    transaction stay together, and none funds a session before it was redeemed."""
    if not isinstance(value, list) or len(value) != 5 or value[:2] != [TAG_BOOK, 1]:
        return value
    coins = list(value[2]) if isinstance(value[2], list) else []
    for spend in value[3] if isinstance(value[3], list) else []:
        if isinstance(spend, list) and len(spend) == 6 and isinstance(spend[3], list):
            coins.extend(spend[3])
    for lost in value[4] if isinstance(value[4], list) else []:
        if isinstance(lost, list) and lost:
            coins.append(lost[0])
    for coin in coins:
        if isinstance(coin, list) and len(coin) == 4:
            coin.append(coin[0])
    return [TAG_BOOK, 2] + value[2:]


class Books:
    """The book of one wallet. ``Books.open`` loads it; ``RecordCorrupt`` and
    ``WalletError`` (a malformed record) pass through for the wallet to report."""

    def __init__(self, storage, keystore, ra_pubkeys):
        self.record = ABRecord(storage, names.BOOKS, keystore.state_key)
        self.keystore = keystore
        self.ra_pubkeys = ra_pubkeys
        self.coins = []
        self.spends = []
        self.lost = []

    @classmethod
    def open(cls, storage, keystore, ra_pubkeys):
        books = cls(storage, keystore, ra_pubkeys)
        payload = books.record.load()
        if payload is not None:
            try:
                rec = BookRecord.from_value(_upgrade_v1(codec.loads(payload, "books")))
            except DecodeError as e:
                raise WalletError("books: authentic but malformed record (%s)" % e)
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

    def save(self):
        """Write the book as it stands (the empty one of a new wallet)."""
        self._commit(self.coins, self.spends, self.lost)

    def rebuild(self, coins):
        """Make ``coins`` the whole book (a recovery from the ledger): its spends and lost
        coins are dropped and its copies, readable or not, replaced."""
        storage = self.record.storage
        for slot in SLOTS:
            if storage.exists(names.BOOKS + slot):
                storage.remove(names.BOOKS + slot)
        self.record = ABRecord(storage, names.BOOKS, self.record.key)
        self._commit(list(coins), [], [])

    # -- reading ---------------------------------------------------------------------------

    def balance(self):
        """Confirmed coins: what can be spent now (clean or waiting to be redeemed)."""
        return sum(c.amount for c in self.coins)

    def clean_balance(self):
        """Confirmed coins that may fund a new session without linking it to another."""
        return sum(c.amount for c in self.coins if c.group == CLEAN)

    def groups(self):
        """The groups of confirmed coins that came back from sessions: what to redeem."""
        out = []
        for c in self.coins:
            if c.group != CLEAN and c.group not in out:
                out.append(c.group)
        return out

    def locked(self):
        """Coins inside spends that wait for their result."""
        return sum(c.amount for s in self.spends for c in s.inputs)

    def incoming(self):
        """Change that becomes coins when the pending spends confirm."""
        return sum(o.amount for s in self.spends for o in s.change)

    def pending_requests(self):
        """The signed bytes of every spend without a result: send them (again). Redeems go
        to the issuer, not the ledger: ``pending_redeems``."""
        return [s.request for s in self.spends if s.kind != L.TAG_REDEEM]

    def pending_redeems(self):
        """The ``RedeemRequest`` bytes of every redeem without an answer: send (again) to the
        issuer, sealed."""
        return [self.redeem_request(s) for s in self.spends if s.kind == L.TAG_REDEEM]

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

    def receive(self, txhash, sn, index, amount, group):
        """Learn a coin paid to key ``index``: ``group`` is ``CLEAN`` for a coin the issuer
        minted alone, else the id of the session object it came from (a channel or HTLC
        series payout, a payment's txhash). Returns False, writing nothing, if the book
        knows it already."""
        try:
            coin = Coin(txhash, sn, index, amount, group)
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
            raise WalletError("the book holds %d coins: redeem some (they come back as fewer)" % MAX_COINS)
        lost = [x for x in self.lost if x.coin.key() != coin.key()]
        self._commit(self.coins + [coin], self.spends, lost)
        return True

    # -- building and signing ------------------------------------------------------------------

    def _check_account(self, account, what):
        check_account(self.ra_pubkeys, account, what)

    def _select(self, need, group=None):
        """Coins for ``need`` that link nothing: a request of session ``group`` takes that
        group's own coins first, then clean ones; any other request only clean ones."""
        if group:
            own = [c for c in self.coins if c.group == group]
            chosen = exact(own, need)
            if chosen is not None:
                return chosen
            allowed = own + [c for c in self.coins if c.group == CLEAN]
        else:
            allowed = [c for c in self.coins if c.group == CLEAN]
        chosen = cover(allowed, need)
        if chosen is not None:
            return chosen
        usable = sum(c.amount for c in allowed)
        if usable < need <= self.balance():
            raise WouldLink("%d needed; %d is in coins that may fund it, %d more came back from other sessions and "
                            "would tie them to this one: redeem them first" % (need, usable, self.balance() - usable))
        raise InsufficientFunds("%d needed, %d in %d confirmed coins (%d at most in one request)" % (
            need, usable, len(allowed), MAX_TX_INPUTS))

    def _require_room(self):
        """Room for one more spend of the largest size, checked before any key is reserved."""
        if len(self.spends) >= MAX_SPENDS:
            raise WalletError("%d requests wait for their result: settle some first" % MAX_SPENDS)
        size = len(BookRecord(self.coins, self.spends, self.lost).encode())
        if size + L.MAX_REQUEST_BYTES + 1024 > MAX_BOOK_BYTES:
            raise WalletError("the book holds %d bytes: wait for pending results" % size)

    def _prepare(self, amount, fee, group=None):
        """Coins covering ``amount + fee`` and the change ``(index, account, value)`` or
        None. Every check runs before the change key is reserved (a write)."""
        _amount(fee, "fee", 0)
        self._require_room()
        need = amount + fee
        if need > MAX_UINT:
            raise WalletError("amount plus fee exceeds 2**64-1")
        inputs = self._select(need, group)
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
        """A signed Gao ``Transaction`` paying ``payees`` (``[(Account, amount)]``) from clean
        coins, change to a fresh own account. Returns the stored ``Spend`` (``.request``:
        the bytes to send, ``.ident``: the txhash)."""
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

    def fund_channel_open(self, producer, collateral, installments, window, fee=0):
        """A signed ``ChannelOpen`` locking ``collateral`` (Unterweger et al.'s deposit) from
        clean coins as the consumer, under a fresh one-time key whose index is the spend's
        ``meta``. Its ``ident`` is the channel id."""
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
        """A signed ``HtlcCreate`` funding the payer-signed terms ``htlc`` of series
        ``meta[0]`` from that series' change or clean coins; its ``ident`` is the HTLC id."""
        self._check_account(htlc.payee, "htlc.payee")
        _amount(htlc.amount, "htlc.amount")
        if not isinstance(meta, list) or len(meta) != 2 or not isinstance(meta[0], bytes):
            raise WalletError("an HTLC is funded as part of a series: meta is [series id, number]")
        inputs, change = self._prepare(htlc.amount, fee, meta[0])
        own, outputs = self._change(change)
        op = L.HtlcCreate(htlc, [TxInput(c.txhash, c.sn) for c in inputs], outputs, [b""] * len(inputs))
        return self._sign(op, inputs, own, meta)

    def redeem(self, group, fee=0):
        """A signed ``Redeem`` of the coins of ``group`` (at most 16 at a time: call again
        for the rest) for fresh clean coins of ``coin_plan`` amounts, each to a fresh key.
        Returns the stored ``Spend``; ``redeem_request(spend)`` is what goes to the issuer."""
        if not isinstance(group, bytes) or group == CLEAN:
            raise WalletError("only coins that came back from a session are redeemed")
        _amount(fee, "fee", 0)
        self._require_room()
        coins = sorted([c for c in self.coins if c.group == group], key=lambda c: c.amount, reverse=True)
        coins = coins[:MAX_TX_INPUTS]
        if not coins:
            raise WalletError("no coins in group %s" % group.hex())
        total = sum(c.amount for c in coins)
        if total <= fee:
            raise WalletError("the coins of group %s hold %d, not more than the fee %d" % (group.hex(), total, fee))
        keys = self.keystore.available()
        if not keys:
            raise WalletError("a redeem needs a one-time key for each fresh coin, and none is left: register more")
        amounts = coin_plan(total - fee, min(L.MAX_REDEEM_OUTPUTS, keys))  # few keys left: fewer, bigger coins
        if len(self.coins) - len(coins) + len(amounts) > MAX_COINS:
            raise WalletError("the book cannot hold %d more coins" % len(amounts))
        own = []
        for sn, value in enumerate(amounts):
            index, _ = self.keystore.reserve()
            own.append(OwnOutput(sn, index, value))
        salt = urandom(L.SALT_BYTES)
        order = L.redeem_order(salt, self._outputs(own))
        op = L.Redeem([TxInput(c.txhash, c.sn) for c in coins], total - fee, order, [b""] * len(coins))
        return self._sign(op, coins, own, salt)

    def _outputs(self, own):
        return [TxOutput(self.keystore.account(o.index), o.amount) for o in own]

    def redeem_request(self, spend):
        """The ``RedeemRequest`` bytes of a pending redeem, for the issuer (send sealed)."""
        return L.RedeemRequest(spend.request, spend.meta, self._outputs(spend.change)).encode()

    def _minted(self, spend):
        """The clean coins a confirmed redeem's mints created, where the wallet knows they are."""
        coins = []
        for o, out in zip(spend.change, self._outputs(spend.change)):
            txhash = L.redeem_mint(spend.ident, spend.meta, o.sn, out).txhash()
            coins.append(Coin(txhash, 0, o.index, o.amount, CLEAN))
        return coins

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
            if spend.kind == L.TAG_REDEEM:
                back = self._minted(spend)
            else:
                group = spend.group()
                back = [Coin(spend.ident, o.sn, o.index, o.amount, group) for o in spend.change]
            self._commit(self.coins + back, keep, self.lost)
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
        groups = [c.group for c in s.inputs if c.group != CLEAN]
        mine = s.group() if s.kind == L.TAG_HTLC_CREATE else None
        if len(set(groups)) > 1 or (s.kind != L.TAG_REDEEM and groups and groups[0] != mine):
            return [where + ": it spends coins of another session, which ties them together"]
        if s.kind == L.TAG_REDEEM and op.order != L.redeem_order(s.meta, self._outputs(s.change)):
            return [where + ": its order is not the fresh coins the book expects"]
        digest = op.signing_digest()
        for c, w in zip(s.inputs, op.witnesses):
            if not signing.verify_digest(signing.public_key(self.keystore.secret(c.index)), digest, w):
                return [where + ": witness for %s:%d does not verify" % (c.txhash.hex(), c.sn)]
        return []


def decode_result(data):
    """A ledger ``Result`` from untrusted bytes."""
    return strict(L.Result, data, "ledger result")
