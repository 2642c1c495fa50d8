"""One state channel of the wallet (Unterweger et al.'s N installments), one A/B record each.

The record ``ch-<first 8 bytes of the channel id, hex>`` holds the role (consumer or
producer), the channel id, my key index, the counterparty's account, collateral,
installments, dispute window, status, the latest fully signed state (the implicit seq-0
opening state at first) and, for the consumer, the next state it signed that the producer
has not countersigned yet.

The rule that makes a power cut harmless: a state is on flash *before* my signature on it
leaves the device. So after a reboot the wallet

* never signs two different states with the same seq: the consumer re-sends its stored
  next state and refuses to propose another until it is countersigned; the producer signs
  only seq = latest + 1, and answers a repeat of its latest with the stored bytes;
* can always close with its latest fully signed state: cooperatively (``sign_close`` /
  ``countersign_close``) or unilaterally (``dispute``, then ``settle`` after the window).

Signing a close also moves the channel to CLOSING first, and a closing channel signs no
more states: otherwise the counterparty could close on an older state after receiving
a newer one's energy or money.

Writes (``Storage.replace``): ``create``, ``propose``, ``countersign``, ``accept``: 1.
``sign_close``, ``countersign_close``, ``dispute``: 1 the first time (status), 0 after.
``finish``: 1 (the payout coin in the book) + 2 removals. A repeat of an operation
already done (same state again) writes nothing.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import const, sha256
from plugpay.protocol.schema import ArrayOf, Nested, Struct, UInt
from plugpay.protocol.structures import HASH, Account, ChannelState

from . import names
from .bookkeeping import KEY_INDEX, TAG_CHANNEL, WalletError, load_each, load_payload, remove_record, strict
from .records import ABRecord

CONSUMER = const(0)
PRODUCER = const(1)
OPEN = const(0)
CLOSING = const(1)
ROLES = ("consumer", "producer")
STATUSES = ("open", "closing")
PREFIX = names.CHANNEL_PREFIX


class ChannelError(WalletError):
    """A channel operation refused; nothing stored changed."""


class ChannelRecord(Struct):
    NAME = "wallet_channel"
    TAG = TAG_CHANNEL
    FIELDS = (
        ("role", UInt(PRODUCER)),
        ("channel_id", HASH),
        ("my_index", KEY_INDEX),
        ("counterparty", Nested(Account)),
        ("collateral", UInt()),
        ("installments", UInt(L.MAX_INSTALLMENTS)),
        ("window", UInt(L.MAX_WINDOW)),
        ("status", UInt(CLOSING)),
        ("latest", Nested(ChannelState)),
        ("next", ArrayOf(Nested(ChannelState), 1)),
    )

    def validate(self, path):
        if self.latest.channel_id != self.channel_id:
            raise DecodeError(path + ".latest", "a state of another channel")
        if self.next and (self.role != CONSUMER or self.next[0].seq != self.latest.seq + 1):
            raise DecodeError(path + ".next", "not the consumer's state after the latest")


def query(channel_id):
    """The ledger query of a channel: all a producer needs to be shown is the channel id."""
    return L.Query(L.QUERY_CHANNEL, channel_id, 0).encode()


def channel_row(channel_id, data):
    """The row ``[consumer, producer, collateral, installments, window, status, seq, paid,
    deadline, height]`` in the ledger's answer ``data`` to ``query(channel_id)``, or None if
    the ledger has no such channel; a malformed answer, or one to another query, raises
    ``ChannelError``."""
    result = strict(L.Result, data, "ledger result")
    if result.request_digest != sha256(query(channel_id)):
        raise ChannelError("the result does not answer the query of channel %s" % channel_id.hex())
    if not result.ok:
        if result.reason == L.NOT_FOUND:
            return None
        raise ChannelError("the ledger refused the query of channel %s (%s)" % (
            channel_id.hex(), L.reason_name(result.reason)))
    row = result.data
    if not isinstance(row, list) or len(row) != 10 or [type(v) for v in row[:2]] != [bytes, bytes] \
            or [type(v) for v in row[2:]] != [int] * 8:
        raise ChannelError("the ledger's channel record is malformed")
    return row


def record_name(channel_id):
    return PREFIX + channel_id[:8].hex()


def _same(a, b):
    return a.encode() == b.encode()


class Channel:
    """A channel the wallet is party to. Build with ``create`` or ``load``."""

    def __init__(self, keystore, rec, record):
        self.keystore = keystore
        self.rec = rec
        self.record = record
        self.unsaved = False  # ``rec`` holds an acceptance not written yet (``accept``)
        self.behind = None  # why the record may have lost a newer state (set by the wallet)

    @classmethod
    def create(cls, storage, keystore, role, channel_id, counterparty, terms, my_index):
        """Record channel ``channel_id`` with me as ``role``, ``counterparty`` (an
        ``Account``) on the other side and ``terms`` ``(collateral, installments, window)``.
        Creating it again (after a reboot) returns the stored channel unchanged."""
        collateral, installments, window = terms
        record = ABRecord(storage, record_name(channel_id), keystore.state_key)
        stored = load_payload(record, ChannelRecord)
        if stored is not None:
            if stored.channel_id != channel_id or stored.role != role:
                raise ChannelError("a record for another channel uses the name " + record.name)
            return cls(keystore, stored, record)
        opening = L.opening_state(channel_id, collateral // installments)
        rec = ChannelRecord(role, channel_id, my_index, counterparty, collateral, installments, window,
                            OPEN, opening, [])
        channel = cls(keystore, rec, record)
        channel._store(rec)
        return channel

    @classmethod
    def load(cls, storage, keystore, name):
        """The channel stored under ``name``, or None if it was never completely written;
        ``RecordCorrupt``/``WalletError`` pass through."""
        record = ABRecord(storage, name, keystore.state_key)
        rec = load_payload(record, ChannelRecord)
        if rec is None:
            return None
        if record_name(rec.channel_id) != name:
            raise ChannelError("%s: holds channel %s" % (name, rec.channel_id.hex()))
        return cls(keystore, rec, record)

    # -- reading ---------------------------------------------------------------------------

    @property
    def channel_id(self):
        return self.rec.channel_id

    @property
    def role(self):
        return self.rec.role

    def latest(self):
        """The latest fully signed state (the opening state before any update)."""
        return self.rec.latest

    def pending(self):
        """The consumer's signed state waiting for the producer, or None."""
        return self.rec.next[0] if self.rec.next else None

    def summary(self):
        r = self.rec
        nxt = self.pending()
        return {
            "id": r.channel_id.hex(), "role": ROLES[r.role], "status": STATUSES[r.status],
            "collateral": r.collateral, "installments": r.installments, "window": r.window,
            "seq": r.latest.seq, "paid": r.latest.paid_to_producer, "energy_wh": r.latest.energy_wh,
            "next_seq": None if nxt is None else nxt.seq,
        }

    # -- storing -----------------------------------------------------------------------------

    def _store(self, rec):
        """Write ``rec``, then adopt it: until the write returns, nothing leaves the device."""
        self.record.store(rec.encode())
        self.rec = rec
        self.unsaved = False

    def _with(self, status=None, latest=None, next=None):
        r = self.rec
        return ChannelRecord(r.role, r.channel_id, r.my_index, r.counterparty, r.collateral, r.installments,
                             r.window, r.status if status is None else status,
                             r.latest if latest is None else latest, r.next if next is None else next)

    def _secret(self):
        return self.keystore.secret(self.rec.my_index)

    def _require(self, role, what):
        if self.rec.role != role:
            raise ChannelError("only the %s may %s" % (ROLES[role], what))
        if self.rec.status != OPEN:
            raise ChannelError("the channel is closing: no more states are signed")
        self._require_current(what)

    def _require_current(self, what):
        """A record that may be behind might sign a seq it signed before, or close on a
        state older than one it signed: it only disputes with what it can prove."""
        if self.behind is not None:
            raise ChannelError("the channel record %s: it may not %s, only close alone with its latest state" % (
                self.behind, what))

    def _check_amounts(self, paid, energy_wh):
        latest = self.rec.latest
        if paid > self.rec.collateral:
            raise ChannelError("paid %d exceeds the collateral %d" % (paid, self.rec.collateral))
        if paid < latest.paid_to_producer:
            raise ChannelError("paid %d is below the latest %d" % (paid, latest.paid_to_producer))
        if energy_wh < latest.energy_wh:
            raise ChannelError("energy %d Wh is below the latest %d Wh" % (energy_wh, latest.energy_wh))

    def _decode_state(self, data):
        state = strict(ChannelState, data, "channel state")
        if state.channel_id != self.rec.channel_id:
            raise ChannelError("the state is for channel %s" % state.channel_id.hex())
        return state

    # -- updates -----------------------------------------------------------------------------

    def propose(self, paid, energy_wh, receipt_digest):
        """Consumer: the next state, paying ``paid`` in total for ``energy_wh`` in total
        against the meter receipt ``receipt_digest``; stored, then returned signed (bytes)."""
        self._require(CONSUMER, "propose a state")
        nxt = self.pending()
        if nxt is not None:
            if (nxt.paid_to_producer, nxt.energy_wh, nxt.receipt_digest) == (paid, energy_wh, receipt_digest):
                return nxt.encode()  # the same proposal again: the same bytes
            raise ChannelError("state seq %d still waits for the producer's signature" % nxt.seq)
        try:
            state = ChannelState(self.rec.channel_id, self.rec.latest.seq + 1, paid, energy_wh, receipt_digest,
                                 b"", b"")
        except ValueError as e:
            raise ChannelError("not a channel state: %s" % e)
        self._check_amounts(paid, energy_wh)
        state.sig_consumer = signing.sign(self._secret(), state)
        self._store(self._with(next=[state]))
        return state.encode()

    def countersign(self, data):
        """Producer: check the consumer's signed state (seq = latest + 1, amounts never
        decreasing, paid <= collateral, the consumer's signature), store it with my
        signature, and return it fully signed (bytes)."""
        self._require(PRODUCER, "countersign a state")
        state = self._decode_state(data)
        latest = self.rec.latest
        if state.seq == latest.seq and latest.seq and state.body() == latest.body() \
                and state.sig_consumer == latest.sig_consumer:
            return latest.encode()  # a repeat of what I countersigned last: the same bytes
        if state.seq != latest.seq + 1:
            raise ChannelError("seq %d is not the next after %d" % (state.seq, latest.seq))
        self._check_amounts(state.paid_to_producer, state.energy_wh)
        if not signing.verify(self.rec.counterparty.pubkey, state, state.sig_consumer):
            raise ChannelError("the consumer's signature does not verify")
        state.sig_producer = signing.sign(self._secret(), state)
        self._store(self._with(latest=state))
        return state.encode()

    def accept(self, data, store=True):
        """Consumer: the producer's countersigned state; it must be the one I proposed, with
        a valid producer signature. It becomes the latest.

        ``store=False`` keeps it in memory until the next write (``save``, or ``propose``,
        which then stores both in one write): the session gives the next proposal a few
        ms to come, since nothing is signed on an unsaved acceptance and the producer
        holds the same fully signed state."""
        if self.rec.role != CONSUMER:
            raise ChannelError("only the consumer accepts a countersigned state")
        state = self._decode_state(data)
        nxt = self.pending()
        if nxt is None:
            if _same(state, self.rec.latest):
                return state  # accepted already
            raise ChannelError("no proposal waits for a countersignature")
        if state.body() != nxt.body() or state.sig_consumer != nxt.sig_consumer:
            raise ChannelError("not the state seq %d I proposed" % nxt.seq)
        if not signing.verify(self.rec.counterparty.pubkey, state, state.sig_producer):
            raise ChannelError("the producer's signature does not verify")
        rec = self._with(latest=state, next=[])
        if store:
            self._store(rec)
        else:
            self.rec = rec
            self.unsaved = True
        return state

    def save(self):
        """Write what ``accept(store=False)`` kept in memory, if anything."""
        if self.unsaved:
            self._store(self.rec)

    # -- closing -----------------------------------------------------------------------------

    def _closing(self):
        if self.rec.status != CLOSING:
            self._store(self._with(status=CLOSING))

    def close_only(self):
        """Sign no state from now on, only close (a record that may be behind, once a
        recovery cleared its damage: it can prove nothing newer than what it holds)."""
        self._closing()

    def _mine_and_theirs(self):
        """The names of my and the counterparty's signature fields on a ``ChannelClose``."""
        if self.rec.role == CONSUMER:
            return "sig_consumer", "sig_producer"
        return "sig_producer", "sig_consumer"

    def sign_close(self):
        """A cooperative ``ChannelClose`` on my latest state with my signature, for the
        counterparty to countersign (bytes). The channel signs no states from now on."""
        self._require_current("sign a cooperative close")
        op = L.ChannelClose(self.rec.latest, b"", b"")
        mine, _ = self._mine_and_theirs()
        setattr(op, mine, signing.sign(self._secret(), op))
        self._closing()
        return op.encode()

    def countersign_close(self, data):
        """Add my signature to the counterparty's ``ChannelClose``; only on my latest state
        and only with a valid counterparty signature. Returns the complete request."""
        self._require_current("countersign a close")
        op = strict(L.ChannelClose, data, "channel close")
        if not _same(op.state, self.rec.latest):
            raise ChannelError("the close is on seq %d; my latest is seq %d" % (op.state.seq, self.rec.latest.seq))
        mine, theirs = self._mine_and_theirs()
        if not signing.verify(self.rec.counterparty.pubkey, op, getattr(op, theirs)):
            raise ChannelError("the counterparty's signature on the close does not verify")
        setattr(op, mine, signing.sign(self._secret(), op))
        self._closing()
        return op.encode()

    def dispute(self):
        """A unilateral close with my latest state (``ChannelDispute``), or the answer to
        the counterparty's stale one within the window."""
        op = L.ChannelDispute(self.rec.latest, self.rec.role == PRODUCER, b"")
        op.closer_sig = signing.sign(self._secret(), op)
        self._closing()
        return op.encode()

    def settle(self):
        """``ChannelSettle``: pays out a unilaterally closed channel after its window."""
        return L.ChannelSettle(self.rec.channel_id).encode()

    def query(self):
        """The ledger query whose answer ``finish`` takes."""
        return query(self.rec.channel_id)

    def payout(self):
        """Where my payout lands: ``(txhash, sn)`` (producer output 0, consumer 1)."""
        return L.channel_payout_txhash(self.rec.channel_id), 0 if self.rec.role == PRODUCER else 1

    def ledger_row(self, data):
        """The ledger's answer to ``query()``: this channel's row ``[consumer, producer,
        collateral, installments, window, status, seq, paid, deadline, height]``, or None if
        the ledger has no such channel. A malformed answer, or one about another channel,
        other parties or other amounts, raises ``ChannelError``."""
        row = channel_row(self.rec.channel_id, data)
        if row is None:
            return None
        consumer, producer, collateral, paid = row[0], row[1], row[2], row[7]
        mine = self.keystore.account(self.rec.my_index).encode()
        theirs = self.rec.counterparty.encode()
        if (consumer, producer) != ((mine, theirs) if self.rec.role == CONSUMER else (theirs, mine)):
            raise ChannelError("the ledger's channel has other parties")
        if collateral != self.rec.collateral or not 0 <= paid <= collateral:
            raise ChannelError("the ledger's channel has other amounts")
        return row

    def finish(self, data, books):
        """Take the ledger's answer to ``query()`` for a closed channel: my payout goes into
        ``books`` (then the wallet removes the record). Returns my payout amount."""
        row = self.ledger_row(data)
        if row is None:
            raise ChannelError("the ledger has no channel %s" % self.rec.channel_id.hex())
        collateral, status, paid = row[2], row[5], row[7]
        if status != L.STATUS_CLOSED:
            raise ChannelError("the channel is not closed on the ledger yet (status %d)" % status)
        amount = paid if self.rec.role == PRODUCER else collateral - paid
        if amount:
            txhash, sn = self.payout()
            books.receive(txhash, sn, self.rec.my_index, amount, self.rec.channel_id)  # names this session
        return amount

    def remove(self):
        remove_record(self.record)

    # -- integrity ---------------------------------------------------------------------------

    def check(self):
        """Invariants of the stored channel, as a list of problems."""
        r = self.rec
        where = "channel %s" % r.channel_id.hex()
        problems = []
        if r.my_index >= self.keystore.reserved:
            problems.append(where + ": my key %d was never handed out" % r.my_index)
            return problems
        mine = signing.public_key(self._secret())
        keys = (mine, r.counterparty.pubkey) if r.role == CONSUMER else (r.counterparty.pubkey, mine)
        latest = r.latest
        if latest.paid_to_producer > r.collateral:
            problems.append(where + ": the latest state pays more than the collateral")
        if latest.seq == 0:
            if latest.body() != L.opening_state(r.channel_id, r.collateral // r.installments).body():
                problems.append(where + ": seq 0 is not the opening state")
        elif not (signing.verify(keys[0], latest, latest.sig_consumer)
                  and signing.verify(keys[1], latest, latest.sig_producer)):
            problems.append(where + ": the latest state is not signed by both parties")
        nxt = self.pending()
        if nxt is not None:
            if nxt.paid_to_producer < latest.paid_to_producer or nxt.paid_to_producer > r.collateral:
                problems.append(where + ": the pending state's amount is out of order")
            if not signing.verify(keys[0], nxt, nxt.sig_consumer):
                problems.append(where + ": the pending state is not signed by me")
        return problems


def load_all(storage, keystore):
    """Every channel record: ``(channels by id, [(record name, why it is unusable)])``."""
    return load_each(storage, PREFIX, lambda name: Channel.load(storage, keystore, name), lambda c: c.channel_id)
