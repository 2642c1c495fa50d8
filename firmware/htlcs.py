"""A series of N HTLCs: Unterweger et al.'s N-installment payment without a state channel.

Who holds the preimages, as in the paper's payment phase: the *payer* (the consumer). It
locks N HTLCs of b/N each to the producer, ``HTLC_i = (payer, payee, b/N, H(r_i), t)``,
and reveals ``r_0`` before charging starts (the deposit), then ``r_i`` after receiving the
i-th e/N of energy. The producer claims each HTLC with the revealed ``r_i`` before the
timeout; from the timeout on, the payer refunds the ones never revealed. At any moment
the consumer risks one installment and the producer none.

The preimages are never stored: ``r_i = keystore.secret_for(b"htlc/" + series_id, i)``,
with ``series_id`` derived from the payer's one-time public key (fresh for every series,
so no two series share a preimage). What is stored, in the record ``ht-<series id hex>``,
is the count of preimages revealed, written *before* the next one leaves the device; so
after a reboot the payer knows which HTLCs it may still refund. The payee stores each
preimage it receives before it builds the claim, so a reboot loses no claimable money.

Both sides sign HTLC terms and requests deterministically (RFC 6979): a request rebuilt
after a reboot is byte for byte the one sent before, which the ledger answers DUPLICATE.

Writes (``Storage.replace``): ``start``, ``accept``: 1; ``created``, ``reveal`` (the first
time for an index), ``take_preimage``: 1; ``refunded``/``claimed``: 1 for the payout coin
in the book + 1 for the state. Repeats write nothing.
"""
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import const, sha256
from plugpay.protocol.schema import Bytes, Nested, Struct, UInt
from plugpay.protocol.structures import Account, Htlc

from . import names
from .bookkeeping import KEY_INDEX, TAG_HTLC_SERIES, WalletError, load_each, load_payload, remove_record, strict
from .records import ABRecord

PAYER = const(0)
PAYEE = const(1)
MAX_SERIES = const(64)  # HTLCs in one series: each is an on-chain create and claim
SERIES_ID_BYTES = const(16)
PREFIX = names.HTLC_PREFIX
ROLES = ("payer", "payee")

# The state of each HTLC of a series (one byte each).
NEW = const(0)  # payer: not funded yet
OPEN = const(1)  # payer: its create is confirmed; payee: its terms were accepted
FAILED = const(2)  # payer: the ledger refused its create
CLAIMED = const(3)
REFUNDED = const(4)
STATE_NAMES = ("new", "open", "failed", "claimed", "refunded")


class HtlcError(WalletError):
    """An HTLC operation refused; nothing stored changed."""


class SeriesRecord(Struct):
    NAME = "wallet_htlc_series"
    TAG = TAG_HTLC_SERIES
    FIELDS = (
        ("role", UInt(PAYEE)),
        ("series_id", Bytes(SERIES_ID_BYTES)),
        ("my_index", KEY_INDEX),
        ("counterparty", Nested(Account)),
        ("amount", UInt()),
        ("timeout", UInt()),
        ("revealed", UInt(MAX_SERIES)),  # preimages revealed (payer) or received (payee)
        ("states", Bytes(min=1, max=MAX_SERIES)),
        ("ids", Bytes(max=32 * MAX_SERIES)),  # the HTLC ids, 32 bytes each
        ("locks", Bytes(max=32 * MAX_SERIES)),  # payee: the hashlocks (the payer derives them)
        ("preimages", Bytes(max=32 * MAX_SERIES)),  # payee: the preimages received, in order
    )

    def validate(self, path):
        n = len(self.states)
        if len(self.ids) != 32 * n or self.revealed > n:
            raise DecodeError(path, "ids or revealed do not fit %d HTLCs" % n)
        if self.role == PAYEE and (len(self.locks) != 32 * n or len(self.preimages) != 32 * self.revealed):
            raise DecodeError(path, "hashlocks or preimages do not fit %d HTLCs" % n)
        if self.role == PAYER and (self.locks or self.preimages):
            raise DecodeError(path, "a payer stores no hashlocks or preimages")
        for s in self.states:
            if s > REFUNDED:
                raise DecodeError(path + ".states", "unknown HTLC state %d" % s)


def series_id_of(payer_pubkey):
    return sha256(b"plugpay/htlc-series/v1" + payer_pubkey)[:SERIES_ID_BYTES]


def record_name(series_id):
    return PREFIX + series_id[:8].hex()


def _slice(blob, i):
    return blob[32 * i:32 * i + 32]


class HtlcSeries:
    """One series, as payer (``start``) or payee (``accept``); ``load`` after a reboot."""

    def __init__(self, keystore, rec, record):
        self.keystore = keystore
        self.rec = rec
        self.record = record
        self._account = None

    @classmethod
    def start(cls, storage, keystore, payer_index, payee, amount, count, timeout):
        """Payer: a new series of ``count`` HTLCs of ``amount`` each to ``payee`` (an
        Account), refundable from block ``timeout``, under my one-time key ``payer_index``."""
        if type(count) is not int or not 1 <= count <= MAX_SERIES:
            raise HtlcError("a series has 1..%d HTLCs" % MAX_SERIES)
        if type(amount) is not int or amount < 1 or type(timeout) is not int or timeout < 1:
            raise HtlcError("amount and timeout must be positive integers")
        if not isinstance(payee, Account):
            raise HtlcError("the payee is not an Account")
        payer = keystore.account(payer_index)
        series_id = series_id_of(payer.pubkey)
        record = ABRecord(storage, record_name(series_id), keystore.state_key)
        if load_payload(record, SeriesRecord) is not None:
            raise HtlcError("key %d pays a series already: use a fresh key" % payer_index)
        args = [PAYER, series_id, payer_index, payee, amount, timeout, 0, bytes(count), bytes(32 * count), b"", b""]
        series = cls(keystore, SeriesRecord(*args), record)
        series._account = payer
        args[8] = b"".join(series.htlc(i).digest() for i in range(count))  # the ids
        series._store(SeriesRecord(*args))
        return series

    @classmethod
    def accept(cls, storage, keystore, ra_pubkeys, payee_index, terms):
        """Payee: take the payer's signed terms (``Htlc`` bytes, in order) naming my account
        of key ``payee_index``; every one is checked before anything is stored."""
        if not isinstance(terms, (list, tuple)) or not 1 <= len(terms) <= MAX_SERIES:
            raise HtlcError("a series has 1..%d HTLCs" % MAX_SERIES)
        htlcs = [strict(Htlc, t, "htlc[%d]" % i) for i, t in enumerate(terms)]
        mine = keystore.account(payee_index).encode()
        first = htlcs[0]
        payer = first.payer
        ra = ra_pubkeys.get(payer.epoch)
        if ra is None or not signing.verify(ra, payer, payer.ra_sig):
            raise HtlcError("the payer's account is not signed by a known RA key")
        locks = []
        for i, h in enumerate(htlcs):
            if h.payee.encode() != mine:
                raise HtlcError("htlc[%d] pays another account" % i)
            if h.payer.encode() != payer.encode() or h.amount != first.amount or h.timeout != first.timeout:
                raise HtlcError("htlc[%d] has other terms than htlc[0]" % i)
            if h.amount < 1:
                raise HtlcError("htlc[%d] locks nothing" % i)
            if h.hashlock in locks:
                raise HtlcError("htlc[%d] repeats a hashlock" % i)
            if not signing.verify(payer.pubkey, h, h.payer_sig):
                raise HtlcError("htlc[%d] is not signed by the payer" % i)
            locks.append(h.hashlock)
        series_id = series_id_of(payer.pubkey)
        ids = b"".join(h.digest() for h in htlcs)
        record = ABRecord(storage, record_name(series_id), keystore.state_key)
        stored = load_payload(record, SeriesRecord)
        if stored is not None:
            if stored.role == PAYEE and stored.ids == ids and stored.my_index == payee_index:
                return cls(keystore, stored, record)  # the same series shown again
            raise HtlcError("series %s is recorded with other terms" % series_id.hex())
        rec = SeriesRecord(PAYEE, series_id, payee_index, payer, first.amount, first.timeout, 0,
                           bytes([OPEN]) * len(htlcs), ids, b"".join(locks), b"")
        series = cls(keystore, rec, record)
        series._store(rec)
        return series

    @classmethod
    def load(cls, storage, keystore, name):
        record = ABRecord(storage, name, keystore.state_key)
        rec = load_payload(record, SeriesRecord)
        if rec is None:
            return None  # never completely written
        if record_name(rec.series_id) != name:
            raise HtlcError("%s: holds series %s" % (name, rec.series_id.hex()))
        return cls(keystore, rec, record)

    # -- reading ---------------------------------------------------------------------------

    @property
    def series_id(self):
        return self.rec.series_id

    @property
    def role(self):
        return self.rec.role

    def count(self):
        return len(self.rec.states)

    def state(self, i):
        return self.rec.states[i]

    def htlc_id(self, i):
        return _slice(self.rec.ids, i)

    def payout(self, i):
        """Where HTLC ``i``'s amount lands when claimed or refunded: ``(txhash, sn)``."""
        return L.htlc_payout_txhash(self.htlc_id(i)), 0

    def summary(self):
        r = self.rec
        counts = [0] * len(STATE_NAMES)
        for s in r.states:
            counts[s] += 1
        out = {"id": r.series_id.hex(), "role": ROLES[r.role], "count": len(r.states), "amount": r.amount,
               "timeout": r.timeout, "revealed": r.revealed}
        for name, n in zip(STATE_NAMES, counts):
            out[name] = n
        return out

    def done(self):
        """True when nothing in the series is still mine to reveal, refund or claim."""
        r = self.rec
        for i, s in enumerate(r.states):
            if s == OPEN and ((r.role == PAYER and i >= r.revealed) or (r.role == PAYEE and i < r.revealed)):
                return False
        return True

    # -- storing ---------------------------------------------------------------------------

    def _store(self, rec):
        self.record.store(rec.encode())
        self.rec = rec

    def _with(self, states=None, revealed=None, preimages=None):
        r = self.rec
        return SeriesRecord(r.role, r.series_id, r.my_index, r.counterparty, r.amount, r.timeout,
                            r.revealed if revealed is None else revealed, r.states if states is None else states,
                            r.ids, r.locks, r.preimages if preimages is None else preimages)

    def _set_state(self, i, state):
        if self.rec.states[i] != state:
            states = bytearray(self.rec.states)
            states[i] = state
            self._store(self._with(states=bytes(states)))

    def _index(self, i):
        if type(i) is not int or not 0 <= i < len(self.rec.states):
            raise HtlcError("no HTLC %r in a series of %d" % (i, len(self.rec.states)))
        return i

    def _require(self, role, what):
        if self.rec.role != role:
            raise HtlcError("only the %s may %s" % (ROLES[role], what))

    def _secret(self):
        return self.keystore.secret(self.rec.my_index)

    # -- payer -----------------------------------------------------------------------------

    def _preimage(self, i):
        return self.keystore.secret_for(b"htlc/" + self.rec.series_id, i)

    def htlc(self, i):
        """Payer: the signed terms of HTLC ``i`` (the same bytes every time)."""
        self._require(PAYER, "build the terms")
        if self._account is None:
            self._account = self.keystore.account(self.rec.my_index)
        r = self.rec
        h = Htlc(self._account, r.counterparty, r.amount, sha256(self._preimage(i)), r.timeout, b"")
        h.payer_sig = signing.sign(self._secret(), h)
        return h

    def terms(self):
        """Payer: every HTLC's signed terms, as bytes, for the payee's ``accept``."""
        return [self.htlc(i).encode() for i in range(self.count())]

    def created(self, i, confirmed):
        """Payer: the ledger confirmed (or refused) the create of HTLC ``i``."""
        self._require(PAYER, "fund HTLCs")
        state = self.rec.states[self._index(i)]
        if state not in (NEW, OPEN, FAILED):
            raise HtlcError("HTLC %d is settled already" % i)
        self._set_state(i, OPEN if confirmed else FAILED)

    def reveal(self, i):
        """Payer: the preimage of HTLC ``i`` for the payee, in order; the count revealed is
        on flash before it is returned. Revealing one again returns it again."""
        self._require(PAYER, "reveal preimages")
        r = self.rec
        if self._index(i) < r.revealed:
            return self._preimage(i)
        if i != r.revealed:
            raise HtlcError("preimages go in order: %d is next, not %d" % (r.revealed, i))
        if r.states[i] != OPEN:
            raise HtlcError("HTLC %d is %s, not open" % (i, STATE_NAMES[r.states[i]]))
        self._store(self._with(revealed=i + 1))
        return self._preimage(i)

    def refund(self, i):
        """Payer: ``HtlcRefund`` of HTLC ``i`` (valid on the ledger from the timeout on)."""
        self._require(PAYER, "refund")
        if self.rec.states[self._index(i)] not in (OPEN, REFUNDED):
            raise HtlcError("HTLC %d is %s: nothing to refund" % (i, STATE_NAMES[self.rec.states[i]]))
        op = L.HtlcRefund(self.htlc_id(i), b"")
        op.payer_sig = signing.sign(self._secret(), op)
        return op.encode()

    def refunded(self, i, data, books):
        """Payer: the ledger's result for ``refund(i)``; the amount goes into ``books``.
        HTLC_NOT_OPEN means the payee claimed it first."""
        return self._settled(i, data, books, self.refund(i), REFUNDED, CLAIMED)

    # -- payee -----------------------------------------------------------------------------

    def take_preimage(self, i, preimage):
        """Payee: the payer's ``r_i`` (in order), checked against the hashlock and stored
        before anything is built from it. Returns False if it was known already."""
        self._require(PAYEE, "take preimages")
        r = self.rec
        if not isinstance(preimage, bytes) or len(preimage) != 32:
            raise HtlcError("a preimage is 32 bytes")
        if sha256(preimage) != _slice(r.locks, self._index(i)):
            raise HtlcError("H(preimage) is not the hashlock of HTLC %d" % i)
        if i < r.revealed:
            return False
        if i != r.revealed:
            raise HtlcError("preimages come in order: %d is next, not %d" % (r.revealed, i))
        self._store(self._with(revealed=i + 1, preimages=r.preimages + preimage))
        return True

    def claim(self, i):
        """Payee: ``HtlcClaim`` of HTLC ``i`` with its stored preimage."""
        self._require(PAYEE, "claim")
        if self._index(i) >= self.rec.revealed:
            raise HtlcError("the preimage of HTLC %d has not come" % i)
        op = L.HtlcClaim(self.htlc_id(i), _slice(self.rec.preimages, i), b"")
        op.payee_sig = signing.sign(self._secret(), op)
        return op.encode()

    def ledger_row(self, i, data):
        """Payee: the ledger's answer to the query of HTLC ``i``: its row ``[payer, payee,
        amount, hashlock, timeout, status, height]``, or None if the ledger has none. A
        malformed answer, or one about other terms than this series', raises ``HtlcError``."""
        result = strict(L.Result, data, "ledger result")
        if result.request_digest != sha256(L.Query(L.QUERY_HTLC, self.htlc_id(i), 0).encode()):
            raise HtlcError("the result does not answer the query of HTLC %d" % i)
        if not result.ok:
            if result.reason == L.NOT_FOUND:
                return None
            raise HtlcError("the ledger refused the query of HTLC %d (%s)" % (i, L.reason_name(result.reason)))
        row = result.data
        if not isinstance(row, list) or [type(v) for v in row] != [bytes, bytes, int, bytes, int, int, int]:
            raise HtlcError("the ledger's HTLC record is malformed")
        r = self.rec
        if row[1] != self.keystore.account(r.my_index).encode() or row[0] != r.counterparty.encode() \
                or row[2] != r.amount or row[3] != _slice(r.locks, self._index(i)) or row[4] != r.timeout:
            raise HtlcError("the ledger's HTLC %d has other terms than the series" % i)
        return row

    def claimed(self, i, data, books):
        """Payee: the ledger's result for ``claim(i)``; the amount goes into ``books``.
        HTLC_NOT_OPEN means the payer refunded it first."""
        return self._settled(i, data, books, self.claim(i), CLAIMED, REFUNDED)

    # -- results ---------------------------------------------------------------------------

    def _settled(self, i, data, books, request, mine, theirs):
        result = strict(L.Result, data, "ledger result")
        if result.request_digest != sha256(request):
            raise HtlcError("the result does not answer the request for HTLC %d" % i)
        txhash, sn = self.payout(i)
        if result.ok and result.data != txhash:
            raise HtlcError("the result names another payout")
        if result.ok or result.reason == L.DUPLICATE:
            books.receive(txhash, sn, self.rec.my_index, self.rec.amount, self.rec.series_id)  # names this session
            self._set_state(i, mine)
            return STATE_NAMES[mine]
        if result.reason == L.HTLC_NOT_OPEN:
            self._set_state(i, theirs)
            return STATE_NAMES[theirs]
        raise HtlcError("the ledger refused: %s %s" % (L.reason_name(result.reason), result.detail))

    def reconcile(self, books):
        """After a reboot: an HTLC whose payout coin is in the book but whose state was not
        updated (a power cut between the two writes) gets its state now. Returns how many."""
        mine = REFUNDED if self.rec.role == PAYER else CLAIMED
        states = bytearray(self.rec.states)
        fixed = 0
        for i, s in enumerate(states):
            if s == OPEN and books.knows(*self.payout(i)):
                states[i] = mine
                fixed += 1
        if fixed:
            self._store(self._with(states=bytes(states)))
        return fixed

    def remove(self):
        remove_record(self.record)

    # -- integrity ---------------------------------------------------------------------------

    def check(self):
        r = self.rec
        where = "htlc series %s" % r.series_id.hex()
        if r.my_index >= self.keystore.reserved:
            return [where + ": my key %d was never handed out" % r.my_index]
        problems = []
        for i in range(len(r.states)):
            if r.role == PAYER:
                if self.htlc(i).digest() != self.htlc_id(i):
                    problems.append(where + ": HTLC %d's id is not its terms'" % i)
                if i < r.revealed and r.states[i] in (NEW, FAILED):
                    problems.append(where + ": HTLC %d was revealed but never opened" % i)
            elif i < r.revealed and sha256(_slice(r.preimages, i)) != _slice(r.locks, i):
                problems.append(where + ": the preimage of HTLC %d does not open its hashlock" % i)
        return problems


def load_all(storage, keystore):
    """Every series record: ``(series by id, [(record name, why it is unusable)])``."""
    return load_each(storage, PREFIX, lambda name: HtlcSeries.load(storage, keystore, name), lambda s: s.series_id)


def compact_terms(series):
    """Payer: the series' terms for the payee in 96 bytes per HTLC instead of ~320: what
    every HTLC shares (payer account, amount, timeout) once, then each hashlock and payer
    signature. ``expand_terms`` rebuilds the signed ``Htlc`` bytes, which ``accept`` checks."""
    htlcs = [series.htlc(i) for i in range(series.count())]
    first = htlcs[0]
    return codec.dumps([first.payer.encode(), first.amount, first.timeout,
                       b"".join(h.hashlock for h in htlcs), b"".join(h.payer_sig for h in htlcs)])


def expand_terms(data, payee):
    """Payee: the ``Htlc`` bytes of compact terms naming my account ``payee``; raises
    ``HtlcError`` on malformed input (the signatures are checked by ``accept``)."""
    try:
        value = codec.loads(data, "htlc terms", 200 + 96 * MAX_SERIES)
        payer, amount, timeout, locks, sigs = value
        payer = Account.decode(payer)
    except (DecodeError, TypeError, ValueError) as e:
        raise HtlcError("compact HTLC terms: %s" % e)
    if type(amount) is not int or type(timeout) is not int or not isinstance(locks, bytes) \
            or not isinstance(sigs, bytes):
        raise HtlcError("compact HTLC terms: wrong field types")
    count = len(locks) // 32
    if not 1 <= count <= MAX_SERIES or len(locks) != 32 * count or len(sigs) != 64 * count:
        raise HtlcError("compact HTLC terms: %d bytes of hashlocks and %d of signatures" % (len(locks), len(sigs)))
    try:
        return [Htlc(payer, payee, amount, locks[32 * i:32 * i + 32], timeout, sigs[64 * i:64 * i + 64]).encode()
                for i in range(count)]
    except ValueError as e:
        raise HtlcError("compact HTLC terms: %s" % e)
