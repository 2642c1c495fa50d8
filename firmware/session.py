"""One side of a charging session: the link machine, the wallet and the board together.

``protocol/link.py`` says *when* a deposit, a reading, a receipt or an installment is due;
this module decides *what* they are and checks what the peer sends, with the wallet and
the board (a ``firmware.board.Board``: its meter and contactor). It is sans-IO like the link: the runner feeds it link
bytes, ledger answers and the time (``now``: ms of the link's clock; a board keeps its own
time), and takes out link bytes and ledger requests. Producer and consumer are roles of
their own, independent of initiator (the vehicle's end) and responder, so G2V, V2G and V2V
run through the same code. How the money moves is the payment mode's (``payment.Payment``):
one state channel (``session_channel``) or a series of HTLCs (``session_htlc``), each
imported only when a session uses it.

Money, for a budget ``b = energy_wh * unit_price // 1000`` in N installments: installment 0
is the deposit, installment k (1..N-1) brings what the producer holds to ``b * (k + 1) // N``
against the receipt of reading k. Each installment pays for the next e/N in advance, so the
producer never delivers energy it holds no payment for (exposure <= 0) and the consumer
never has more than b/N outstanding. Both sides measure their exposure at every step
(``exposure``).

Energy (``energy.Energy``): each paid chunk flows to the board's limit and the responder's
meter reads it; the initiator checks each reading against its own measurement and
counter-signs it, and the receipt is what the next payment covers.
"""
from plugpay.protocol import link, signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_events as E
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256
from plugpay.protocol.structures import Account, MeterReceipt

from .bookkeeping import HtlcError, WalletError
from .books import check_account
from .channels import ChannelError
from .energy import Energy
from .terms import CHANNEL, HTLC, Misbehaviour, Terms  # noqa: F401 (Terms: what a session is built from)

# What the wallet and the codec raise on input they refuse.
REFUSALS = (WalletError, ChannelError, HtlcError, DecodeError)


def _payment(session):
    """The payment mode of ``session``'s terms; its module is imported here, when needed."""
    if session.terms.mode == CHANNEL:
        from .session_channel import ChannelPayment

        return ChannelPayment(session)
    from .session_htlc import HtlcPayment

    return HtlcPayment(session)


class Session:
    """One side of a session. Inputs: ``link_received``, ``ledger_answer``, ``tick``; outputs:
    ``link_messages`` (bytes for the peer), ``ledger_requests`` (``(kind, bytes)`` with kind
    "submit" or "query"), ``next_deadline``. ``finished`` once its money is settled.

    ``history``: keep ``exposure_log`` and ``installment_log``, rows that grow with every
    installment, for session records and plots. A device's role leaves them out: a board
    would run out of heap on a long session, and ``round_trips`` is all its record needs."""

    def __init__(self, wallet, board, terms, now, timeouts=None, misbehaviour=None, timestamp=0, history=True):
        self.wallet = wallet
        self.board = board
        self.terms = terms
        self.params = terms.parameters
        self.producer = terms.producer
        self.meters = not terms.initiator  # the responder's meter signs the readings
        self.cheat = misbehaviour or Misbehaviour()
        self.timestamp = timestamp  # Unix seconds the meter stamps, one more with each reading
        self.started = now
        self.index, account = wallet.new_account()  # one-time: receipts or payouts, never reused
        self.account = account
        self.session_secret = wallet.keystore.secret(self.index)
        role = M.ROLE_PRODUCER if self.producer else M.ROLE_CONSUMER
        if self.meters and board.meter is None:
            raise ValueError("the responder meters the energy: board %s has no meter" % board.name)
        meter_key = board.meter.pubkey if self.meters else b""
        config = link.LinkConfig(terms.session_id, role, account.pubkey, self.params, (terms.mode,), meter_key,
                                 timeouts, account.encode() if self.producer else b"")
        self.machine = (link.Initiator if terms.initiator else link.Responder)(config, now)
        self.payment = _payment(self)
        self.energy = Energy(self, now)
        self.receipt = None  # the last receipt's digest
        self.paid_signed = 0  # consumer: the most it signed away; producer: the most it holds
        self.max_exposure = 0
        self.exposure_log = []  # (ms since start, exposure, energy Wh, paid) at each change
        self.onchain = []  # this side's ledger requests that were applied (bytes)
        self.onchain_at = []  # when each was seen applied (ms since start)
        self.log = []  # (ms since start, text) of what happened
        self.stop_code = None
        self.installment_sent = None  # consumer: (k, ``now``) of the last installment that went out
        self.last_installment = None  # consumer: (k, sent, accepted) of the last one accepted, for timing
        self.installment_log = []  # consumer: every (k, sent, accepted), for session records (N entries)
        self.round_trips = []  # consumer: ms from each installment sent to its acceptance
        self.history = history
        self.held = False  # my owner paused the session (``pause``) and has not resumed
        self.now = now
        self.finished = False
        self.payout = None
        self._out = []
        self._ledger = []
        self._waiting = {}  # request digest -> callback(result, data, now)
        self._asked = {}  # digest -> (kind, bytes) of each request still waiting
        board.reset_session(self.producer)
        if self.meters:
            board.meter.start(terms.session_id, self.params.unit_price)
        self._collect(now)

    # ---- inputs ------------------------------------------------------------------------

    def link_received(self, data, now):
        """Bytes from the session topic: a link message, or the closing exchange."""
        if _is_ledger_op(data):
            return self._close_message(data, now)
        self._handle(self.machine.receive(data, now), now)

    def ledger_answer(self, data, now):
        """A ``Result`` from the ledger (through the gateway) for one of our requests."""
        try:
            result = L.Result.decode(data, L.MAX_REQUEST_BYTES)
        except DecodeError as e:
            self.note(now, "dropped a bad ledger answer: %s" % e)
            return
        callback = self._waiting.pop(result.request_digest, None)
        if callback is None:
            return
        kind, raw = self._asked.pop(result.request_digest)
        if kind == "submit" and result.ok:
            self.onchain.append(raw)
            self.onchain_at.append(now - self.started)
        try:
            callback(result, data, now)
        except REFUSALS as e:  # the wallet refused the ledger's answer
            self.note(now, "ledger answer refused by the wallet: %s" % e)
            self.stop(M.FAILED, now)
        self._collect(now)

    def tick(self, now):
        self.energy.watch(now)  # first: progress restarts the link's wait for the reading
        self._handle(self.machine.tick(now), now)
        self.energy.tick(now)
        self.payment.tick(now)
        self._collect(now)

    def connection_lost(self, now):
        """The transport lost its connection: the link pauses without telling the peer."""
        self.machine.connection_lost(now)

    def reconnected(self, now):
        """The transport is back: resume the link with the latest co-signed balance, unless
        my owner holds the session (a resume already asked for is re-sent as it stands)."""
        m = self.machine
        if not m.paused:
            m.connection_lost(now)
        if m.paused and m.stop_code is None and not m.resuming and not self.held:
            m.resume(self.balance(), now)
        self._collect(now)

    # ---- outputs -----------------------------------------------------------------------

    def link_messages(self):
        out = self._out
        self._out = []
        return out

    def ledger_requests(self):
        out = self._ledger
        self._ledger = []
        return out

    def next_deadline(self):
        t = self.machine.next_deadline()
        for d in (self.energy.next_deadline(self.now), self.payment.next_deadline()):
            if d is not None and (t is None or d < t):
                t = d
        return t

    # ---- what it shows (read-only) -----------------------------------------------------

    @property
    def stopped(self):
        return self.machine.phase == link.STOPPED

    @property
    def state(self):
        """The link's phase by name ("charging", "stopped", ...)."""
        return self.machine.state

    @property
    def charging(self):
        """Energy may flow now: the link is in its charging phase and not paused."""
        return self.machine.phase == link.CHARGING and not self.machine.paused

    @property
    def paused(self):
        """The link is paused (by either owner, or by a lost connection)."""
        return self.machine.paused

    @property
    def installments_paid(self):
        """Installments the producer accepted, the deposit included."""
        return self.machine.installments_paid

    @property
    def readings(self):
        """Meter readings sent (responder) or accepted (initiator)."""
        return self.machine.readings

    @property
    def channel(self):
        """The wallet's ``Channel`` of this session (state channel, once open), else None."""
        return getattr(self.payment, "channel", None)

    @property
    def series(self):
        """The wallet's ``HtlcSeries`` of this session (HTLC mode, once started), else None."""
        return getattr(self.payment, "series", None)

    def waiting(self):
        """What the link waits for and when it gives up (``link._Link.waiting``), or None."""
        return self.machine.waiting()

    def exposure_bound(self):
        """The most this side may have at risk: the largest installment (b/N rounded up)
        for the consumer; for the producer nothing when it meters, else what the metering
        tolerance is worth (its board gives each paid chunk up to the tolerance past it, as
        its own measurement may show more than the meter: ``energy``)."""
        p = self.params
        if not self.producer:
            return -(-self.terms.budget() // p.installments)
        return 0 if self.meters else -(-p.tolerance_wh * p.unit_price // 1000)

    def exposure(self):
        """Money at risk now: the consumer's signed payments beyond the energy it measured,
        the producer's delivered energy beyond the payments it holds (smallest units)."""
        energy = self.board.measured_wh * self.params.unit_price // 1000
        return energy - self.paid_signed if self.producer else self.paid_signed - energy

    # ---- the owner's controls ------------------------------------------------------------

    def pause(self, now):
        """The owner pauses the session (a driver in the vehicle, an operator at the
        charger): the peer is told, energy stops and no installment falls due until
        ``resume``. ``LocalProtocolError`` if there is nothing to pause now."""
        self.machine.pause(now)
        self.held = True
        self.note(now, "paused")
        self.tick(now)  # the contactor opens at once

    def resume(self, now):
        """End the owner's pause: answer the peer's resume if it asked, else ask, naming my
        latest co-signed balance. Only the side that paused lifts its pause."""
        self.held = False
        m = self.machine
        if m.owes_resume:
            m.accept_resume(self.balance(), now)
            self.pay(now)
        else:
            m.resume(self.balance(), now)
        self._collect(now)

    def balance(self):
        """The latest co-signed balance, for a resume (the payment mode's encoding)."""
        return self.payment.balance()

    def _same_balance(self, theirs, now):
        """A resume's balance against mine: the same, or one installment apart (the one in
        flight when the link dropped: its request, sent again before the resume, settles
        it). Anything else means one side lost or forged state: the session stops."""
        mine = self.balance()
        if theirs == mine:
            return True
        a, b = self.payment.progress(mine), self.payment.progress(theirs)
        if a is not None and b is not None and abs(a - b) == 1:
            return True
        self.note(now, "the peer resumes from another balance (%s, mine %s)" % (b, a))
        return False

    # ---- link events ---------------------------------------------------------------------

    def _handle(self, events, now):
        for ev in events:
            try:
                self._on_event(ev, now)
            except REFUSALS as e:
                self.note(now, "refused: %s" % e)
                self.stop(M.FAILED_UnpaidOverLimit if self.producer else M.FAILED_SignatureError, now)
        self._collect(now)

    def _on_event(self, ev, now):
        m = self.machine
        if isinstance(ev, E.TermsAgreed):
            self.note(now, "terms agreed: %s, %d installments of %d" % (
                self.payment.NAME, self.params.installments, self.terms.budget() // self.params.installments))
            if not self.producer:
                self._deposit(ev.peer_account, now)
        elif isinstance(ev, E.InstallmentReceived):
            self.payment.accept(ev.index, ev.proof, now)
        elif isinstance(ev, E.InstallmentAccepted):
            self._installment_accepted(ev.index, ev.proof, now)
        elif isinstance(ev, E.PowerDeliveryStarted):
            if self.producer or self.meters:
                self.energy.start_chunk(now)  # closes the contactor with the chunk's energy limit set
        elif isinstance(ev, E.MeterReadingReceived):
            self._reading_received(ev.reading, now)
        elif isinstance(ev, E.ReceiptReceived):
            self.receipt = ev.receipt.digest()
            self.pay(now)  # a metering consumer pays against the receipt it got back
        elif isinstance(ev, E.PowerDeliveryStopped):
            self.board.stop_delivery()
        elif isinstance(ev, E.ResumeRequested):
            if not self._same_balance(ev.balance, now):
                return self.stop(M.FAILED_UnpaidOverLimit, now)
            if self.held:  # my owner's pause: the peer waits for my resume
                self.note(now, "the peer asks to resume; held until my owner resumes")
                return
            m.accept_resume(self.balance(), now)
            self.pay(now)  # an installment that fell due while paused goes now
        elif isinstance(ev, E.Resumed):
            if not self._same_balance(ev.balance, now):
                return self.stop(M.FAILED_UnpaidOverLimit, now)
            self.note(now, "resumed")
            self.pay(now)
        elif isinstance(ev, E.SessionStopped):
            self.stop_code = ev.code
            self.note(now, "link stopped: %s%s" % (M.code_name(ev.code), " (by the peer)" if ev.by_peer else ""))
            self.after_stop(now)
        elif isinstance(ev, (E.Timeout, E.MessageRefused, E.PeerRefused, E.Paused)):
            self.note(now, repr(ev))

    # ---- consumer ------------------------------------------------------------------------

    def _deposit(self, peer_account, now):
        try:
            account = Account.decode(peer_account)
        except DecodeError as e:
            raise WalletError("the producer's account: %s" % e)
        check_account(self.wallet.ra_pubkeys, account, "producer")
        self.payment.deposit(account, now)

    def pay(self, now):
        """Send the installment that is due, if the link wants one and the deposit is
        confirmed; a consumer that does not meter lets the energy it pays for flow."""
        m = self.machine
        if self.producer or m.stop_code is not None or m.paused or m.phase not in (link.DEPOSIT, link.INSTALLMENT):
            return
        if m.installments_paid == 0 and not self.payment.ready():
            return  # the deposit goes once the ledger confirmed it
        k = m.installments_paid
        if self.cheat.stop_paying_at is not None and k >= self.cheat.stop_paying_at:
            self.note(now, "misbehaving: not paying installment %d" % k)
            return
        m.send_installment(self.payment.pay(k, now), now)
        self.installment_sent = (k, now)
        if not self.meters:
            self.energy.start_chunk(now)

    def _installment_accepted(self, k, proof, now):
        sent = self.installment_sent[1]
        self.last_installment = (k, sent, now)
        self.round_trips.append(now - sent)
        if self.history:
            self.installment_log.append(self.last_installment)
        self.payment.paid(k, proof, now)
        if self.meters and k > 0:
            self.energy.start_chunk(now)

    # ---- initiator: checks and counter-signs the readings -----------------------------------

    def _reading_received(self, reading, now):
        if not self.energy.check(reading, now):
            return self.stop(M.FAILED_ReceiptMismatch, now)
        receipt = MeterReceipt(reading, b"")
        receipt.ev_sig = signing.sign(self.session_secret, receipt)
        self.receipt = receipt.digest()
        self.machine.send_receipt(receipt.ev_sig, now)
        self.track(now)
        self.pay(now)

    # ---- producer ------------------------------------------------------------------------

    def accepted(self, k, answer, now):
        """Producer: the payment mode took installment k; ``answer`` goes back to the
        consumer and the chunk it pays for may flow."""
        self.signed(self.terms.paid_after(k), now)
        self.machine.accept_installment(answer, now)
        if k > 0:
            self.energy.start_chunk(now)

    # ---- the end ---------------------------------------------------------------------------

    def after_stop(self, now):
        """The link is over: stop energy, then let the payment mode settle the money."""
        self.energy.stop()
        self.track(now)
        if not self.finished:
            self.payment.close(now)

    def _close_message(self, data, now):
        """The closing exchange beside the link (a channel's close): for the payment mode
        once the link is over."""
        try:
            op = L.decode_request(data)
        except (DecodeError, L.UnknownOp) as e:
            self.note(now, "dropped a bad close message: %s" % e)
            return
        if self.channel is not None and isinstance(op, L.ChannelClose) and self.stopped:
            self.payment.close_message(op, data, now)
            self._collect(now)

    # ---- for the payment modes ---------------------------------------------------------------

    def stop(self, code, now):
        """End the link with ``code`` (if it is not over yet), then settle."""
        if not self.stopped:
            self.machine.stop(code, now)
            self.stop_code = code
            self.note(now, "stopped the link: %s" % M.code_name(code))
            self.after_stop(now)

    def signed(self, paid, now):
        """The consumer signed away, or the producer holds, ``paid`` in all."""
        if paid > self.paid_signed:
            self.paid_signed = paid
        self.track(now)

    def submit(self, raw, callback):
        """Send a request to the ledger; ``callback(result, data, now)`` gets its answer."""
        self._send_ledger("submit", raw, callback)

    def query(self, raw, callback):
        """Ask the ledger; ``callback(result, data, now)`` gets its answer."""
        self._send_ledger("query", raw, callback)

    def awaiting_ledger(self):
        """True while a ledger request has no answer yet."""
        return bool(self._waiting)

    def send(self, data):
        """Bytes for the peer beside the link (the closing exchange)."""
        self._out.append(data)

    def note(self, now, text):
        """A line of ``log``: what happened, when."""
        self.log.append((now - self.started, text))

    def _send_ledger(self, kind, raw, callback):
        digest = sha256(raw)
        self._waiting[digest] = callback
        self._asked[digest] = (kind, raw)
        self._ledger.append((kind, raw))

    def track(self, now):
        """Log the exposure now (and the most it was)."""
        e = self.exposure()
        if e > self.max_exposure:
            self.max_exposure = e
        if self.history:
            self.exposure_log.append((now - self.started, e, self.board.measured_wh, self.paid_signed))

    def _collect(self, now):
        self.now = now
        self._out.extend(self.machine.messages_to_send())


def _is_ledger_op(data):
    """True for the closing exchange's bytes (a ledger op array) as opposed to a link
    message; the first CBOR item after the array header is the tag."""
    if not isinstance(data, (bytes, bytearray)) or len(data) < 2:
        return False
    return data[1] == L.TAG_CHANNEL_CLOSE
