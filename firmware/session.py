"""One side of a charging session: the link machine, the wallet and the board together.

``protocol/link.py`` says *when* a deposit, a reading, a receipt or an installment is due;
this module decides *what* they are and checks what the peer sends, with the wallet's
channels and HTLC series and the board's meter and contactor. It is sans-IO like the link:
the runner feeds it link bytes, ledger answers and the time, and takes out link bytes and
ledger requests. Producer and consumer are roles of their own, independent of initiator
(the vehicle's end) and responder, so G2V, V2G and V2V run through the same code.

Money, for a budget ``b = energy_wh * unit_price // 1000`` in N installments:

* state channel: installment 0 is the confirmed ``ChannelOpen`` locking ``b`` (whose seq 0
  already gives the producer ``b // N``); installment k (1..N-1) is the consumer-signed
  state of seq k paying ``b * (k + 1) // N`` for ``due_wh(k)`` against the receipt of
  reading k, and the producer's answer is that state countersigned. At the end the
  consumer signs a cooperative ``ChannelClose`` on the latest state, sent beside the link
  on the session topic; the producer countersigns and submits it (on-chain: open and
  close), and the consumer submits the same bytes only if the ledger does not show the
  channel closed ``CLOSE_WAIT_MS`` later. The deposit the producer is shown is the channel
  id alone: it reads the channel's terms from the ledger, and never sees the open's
  inputs. A producer that gets no close disputes with its latest state and settles after
  the window; so does a consumer whose peer vanished.
* HTLC series: installment 0 is the series' terms (each HTLC ``b // N``, all N funded and
  confirmed first) with preimage r_0; installment k is r_k. The producer checks on the
  ledger that the HTLC is open before it accepts, and claims each one.

Each installment pays for the next e/N in advance, so the producer never delivers energy
it holds no payment for (exposure <= 0) and the consumer never has more than b/N
outstanding. Both sides measure their exposure at every step (``exposure``).

Energy is metered by the responder (the charger, or the vehicle acting as one in V2V),
whoever produces: the producer lets each paid chunk flow and the responder's meter stops it
at the chunk's energy and signs the reading. The initiator checks the reading against its
own measurement (``tolerance_wh``) and counter-signs it; each side refuses a reading that
would cost it (a consumer one that shows more than it measured, or less than due; a producer
one that shows less than it delivered). The receipt is what the next payment covers: the
consumer pays once it signed the receipt (G2V) or once the receipt came back (V2G), and the
producer checks that each state pays exactly what is due, for the energy and receipt of
that reading. A producer that does not meter lets each chunk flow up to the tolerance past
its energy, as its own measurement may show a little more than the responder's meter: its
exposure stays within the agreed tolerance, and at 0 when the two measurements agree. Both
sides tell the link when they measure the chunk's energy advancing, so a slow flow is
waited for and a stopped one times out.
"""
from plugpay.protocol import codec, link, signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_events as E
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256
from plugpay.protocol.structures import Account, ChannelState, MeterReceipt

from .bookkeeping import WalletError
from .books import check_account
from . import channels
from .channels import ChannelError
from .htlcs import HtlcError, compact_terms, expand_terms

CHANNEL = M.MODE_STATE_CHANNEL
HTLC = M.MODE_HTLC
CLOSE_RESEND_MS = 500  # the consumer sends its signed close again this often
CLOSE_TRIES = 4  # then it closes alone (dispute), as does a producer that got none
CLOSE_WAIT_MS = 2000  # the consumer gives the producer this long to submit the completed close
NO_POWER_POLL_MS = 10
# The meter reads a chunk that stopped short of its energy (within the tolerance: the
# producer's own measurement reached its limit first) only after no energy came for this
# long, so a peer's pause or resume on its way is not taken for the end of the flow.
STALL_MS = 1000
# The consumer's acceptance of installment k waits this long for its proposal k+1 (when
# energy flows fast, the next reading is already on its way) so one write stores both.
# Losing it to a power cut in between loses nothing: the producer holds the same state.
ACCEPT_WRITE_MS = 5
# What the wallet and the codec raise on input they refuse.
REFUSALS = (WalletError, ChannelError, HtlcError, DecodeError)
WATCH_MS = 250  # the producer looks at the channel on the ledger this often while it waits
DEPOSIT_LOOKS = 3  # a channel the consumer named but the ledger does not show yet is looked for again
SETTLE_RETRY_MS = 200


class Terms:
    """What both sides agreed before the link starts (in the market): the charge
    parameters, the payment mode, the session id, who produces and who initiates, the
    channel's dispute window (blocks), the HTLCs' timeout (block height: the producer takes
    no series that refunds earlier) and the fee offered with each ledger request."""

    def __init__(self, session_id, parameters, mode, producer, initiator, window=10, htlc_timeout=100000, fee=0):
        if mode not in (CHANNEL, HTLC):
            raise ValueError("unknown payment mode %r" % (mode,))
        self.session_id = session_id
        self.parameters = parameters
        self.mode = mode
        self.producer = producer
        self.initiator = initiator
        self.window = window
        self.htlc_timeout = htlc_timeout
        self.fee = fee

    def budget(self):
        p = self.parameters
        b = p.energy_wh * p.unit_price // 1000
        return b - b % p.installments if self.mode == HTLC else b

    def paid_after(self, k):
        """What the producer holds once installment k is accepted."""
        return self.budget() * (k + 1) // self.parameters.installments


class Misbehaviour:
    """A side that cheats, for tests and the demo: a producer that stops delivering after
    reading ``stop_delivering_after``, a consumer that stops paying from installment
    ``stop_paying_at``, a consumer that closes with a stale state at the end."""

    def __init__(self, stop_delivering_after=None, stop_paying_at=None, stale_close=False):
        self.stop_delivering_after = stop_delivering_after
        self.stop_paying_at = stop_paying_at
        self.stale_close = stale_close


class Session:
    """One side of a session. Inputs: ``link_received``, ``ledger_answer``, ``tick``; outputs:
    ``link_messages`` (bytes for the peer), ``ledger_requests`` (``(kind, bytes)`` with kind
    "submit" or "query"), ``next_deadline``. ``finished`` once its money is settled."""

    def __init__(self, wallet, board, terms, now, timeouts=None, misbehaviour=None, timestamp=0):
        self.wallet = wallet
        self.board = board
        self.terms = terms
        self.params = terms.parameters
        self.producer = terms.producer
        self.meters = not terms.initiator  # the responder's meter signs the readings
        self.cheat = misbehaviour or Misbehaviour()
        self.timestamp = timestamp  # Unix seconds the meter stamps, advanced with the clock
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
        self.peer_account = None
        self.channel = None  # the wallet's Channel
        self.series = None  # the wallet's HtlcSeries
        self.deposit = None  # consumer: the ChannelOpen bytes; producer: the channel id it was shown
        self.deposit_looks = 0  # producer: queries of that channel the ledger answered NOT_FOUND
        self.funded = 0  # consumer, HTLC: HTLCs confirmed
        self.chunk = None  # the cumulative Wh the paid chunk may reach: the producer's limit, the meter's target
        self.chunk_paused = False  # the chunk's energy was stopped for a pause
        self.energy_seen = 0  # Wh measured when the energy last advanced, and when (link ms)
        self.flow_at = now
        self.receipt = None  # the last receipt's digest
        self.paid_signed = 0  # consumer: the most it signed away; producer: the most it holds
        self.max_exposure = 0
        self.exposure_log = []  # (ms since start, exposure, energy Wh, paid) at each change
        self.onchain = []  # this side's ledger requests that were applied (bytes)
        self.log = []  # (ms since start, text) of what happened
        self.stop_code = None
        self.installment_sent = None  # consumer: (k, ``now``) of the last installment that went out
        self.last_installment = None  # consumer: (k, sent, accepted) of the last one accepted, for timing
        self.installment_log = []  # consumer: every (k, sent, accepted), for session records (N entries)
        self.closing = None  # the close (or dispute) request on its way to the ledger
        self.closing_started = False
        self.closing_at = None  # consumer: when the close the producer completed came back
        self.close_tries = 0
        self.disputed = False  # a unilateral close (or the answer to one) went to the ledger
        self.wake = None  # when wake_action runs next (closing and settling)
        self.wake_action = None
        self.stale = None  # misbehaving consumer: the fully signed state of seq 1
        self.save_at = None  # consumer: when tick writes an acceptance still in memory
        self.held = False  # my owner paused the session (``pause``) and has not resumed
        self.claims = 0  # producer, HTLC: claims waiting for the ledger
        self.now = now
        self.finished = False
        self.payout = None
        self._out = []
        self._ledger = []
        self._waiting = {}  # request digest -> callback(result, now)
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
            self._note(now, "dropped a bad ledger answer: %s" % e)
            return
        callback = self._waiting.pop(result.request_digest, None)
        if callback is None:
            return
        kind, raw = self._asked.pop(result.request_digest)
        if kind == "submit" and result.ok:
            self.onchain.append(raw)
        try:
            callback(result, data, now)
        except REFUSALS as e:  # the wallet refused the ledger's answer
            self._note(now, "ledger answer refused by the wallet: %s" % e)
            self._stop(M.FAILED, now)
        self._collect(now)

    def tick(self, now):
        self._energy(now)  # first: progress restarts the link's wait for the reading
        self._handle(self.machine.tick(now), now)
        if self.chunk is not None:
            paused = self.machine.paused
            if paused != self.chunk_paused:  # no energy while the link is paused
                self.chunk_paused = paused
                if paused:
                    self.board.stop_delivery(self._board_now())
                else:
                    self.flow_at = now
                    self.board.start_delivery(self._board_now(), self.chunk)
            self._read_meter(now)
        if self.wake is not None and now >= self.wake:
            action, self.wake = self.wake_action, None
            action(now)
        if self.save_at is not None and now >= self.save_at:
            self.save_at = None
            self.channel.save()  # nothing if the next proposal wrote it already
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
        m = self.machine
        if self.chunk is not None and not m.paused and m.phase == link.CHARGING:
            sim_ms = self.board.time_to_reach_ms(self.chunk)
            d = None
            if sim_ms is None:  # no power as things stand (the peer's contactor is open)
                d = self.now + NO_POWER_POLL_MS if self.meters else None  # the meter looks again soon
            elif sim_ms > 0 or self.meters:  # a producer's board switches off at its limit once looked at
                d = self.now + -(-sim_ms * 1000 // int(getattr(self.board.clock, "scale", 1) * 1000))
            if d is not None and (t is None or d < t):
                t = d
        if self.wake is not None and (t is None or self.wake < t):
            t = self.wake
        if self.save_at is not None and self.channel.unsaved and (t is None or self.save_at < t):
            t = self.save_at
        return t

    @property
    def stopped(self):
        return self.machine.phase == link.STOPPED

    def exposure(self):
        """Money at risk now: the consumer's signed payments beyond the energy it measured,
        the producer's delivered energy beyond the payments it holds (smallest units)."""
        energy = self.board.measured_wh * self.params.unit_price // 1000
        return energy - self.paid_signed if self.producer else self.paid_signed - energy

    # ---- link events ---------------------------------------------------------------------

    def _handle(self, events, now):
        for ev in events:
            try:
                self._on_event(ev, now)
            except REFUSALS as e:
                self._note(now, "refused: %s" % e)
                self._stop(M.FAILED_UnpaidOverLimit if self.producer else M.FAILED_SignatureError, now)
        self._collect(now)

    def _on_event(self, ev, now):
        m = self.machine
        if isinstance(ev, E.TermsAgreed):
            self._note(now, "terms agreed: %s, %d installments of %d" % (
                "state channel" if self.terms.mode == CHANNEL else "HTLC series", self.params.installments,
                self.terms.budget() // self.params.installments))
            if not self.producer:
                self._deposit(ev.peer_account, now)
        elif isinstance(ev, E.InstallmentReceived):
            self._installment_received(ev.index, ev.proof, now)
        elif isinstance(ev, E.InstallmentAccepted):
            if ev.index == 0 and not self.meters:  # a consuming vehicle is ready before power is asked
                self.board.start_delivery(self._board_now())  # for (PowerDeliveryReq): it measures the first Wh
            self._installment_accepted(ev.index, ev.proof, now)
        elif isinstance(ev, E.PowerDeliveryStarted):
            if self.producer or self.meters:
                self._start_chunk(now)  # closes the contactor with the chunk's energy limit set
            else:
                self.board.start_delivery(self._board_now())
        elif isinstance(ev, E.MeterReadingReceived):
            self._reading_received(ev.reading, now)
        elif isinstance(ev, E.ReceiptReceived):
            self.receipt = ev.receipt.digest()
            self._pay(now)  # a metering consumer pays against the receipt it got back
        elif isinstance(ev, E.PowerDeliveryStopped):
            self.board.stop_delivery(self._board_now())
        elif isinstance(ev, E.ResumeRequested):
            if not self._same_balance(ev.balance, now):
                return self._stop(M.FAILED_UnpaidOverLimit, now)
            if self.held:  # my owner's pause: the peer waits for my resume
                self._note(now, "the peer asks to resume; held until my owner resumes")
                return
            m.accept_resume(self.balance(), now)
            self._pay(now)  # an installment that fell due while paused goes now
        elif isinstance(ev, E.Resumed):
            if not self._same_balance(ev.balance, now):
                return self._stop(M.FAILED_UnpaidOverLimit, now)
            self._note(now, "resumed")
            self._pay(now)
        elif isinstance(ev, E.SessionStopped):
            self.stop_code = ev.code
            self._note(now, "link stopped: %s%s" % (M.code_name(ev.code), " (by the peer)" if ev.by_peer else ""))
            self._after_stop(now)
        elif isinstance(ev, (E.Timeout, E.MessageRefused, E.PeerRefused, E.Paused)):
            self._note(now, repr(ev))

    def pause(self, now):
        """The owner pauses the session (a driver in the vehicle, an operator at the
        charger): the peer is told, energy stops and no installment falls due until
        ``resume``. ``LocalProtocolError`` if there is nothing to pause now."""
        self.machine.pause(now)
        self.held = True
        self._note(now, "paused")
        self.tick(now)  # the contactor opens at once

    def resume(self, now):
        """End the owner's pause: answer the peer's resume if it asked, else ask, naming my
        latest co-signed balance. Only the side that paused lifts its pause."""
        self.held = False
        m = self.machine
        if m.owes_resume:
            m.accept_resume(self.balance(), now)
            self._pay(now)
        else:
            m.resume(self.balance(), now)
        self._collect(now)

    def balance(self):
        """The latest co-signed balance, for a resume: the channel state or the count of
        preimages given."""
        if self.channel is not None:
            return self.channel.latest().encode()
        if self.series is not None:
            return codec.dumps(self.series.rec.revealed)
        return b""

    def _same_balance(self, theirs, now):
        """A resume's balance against mine: the same, or one installment apart (the one in
        flight when the link dropped: its request, sent again before the resume, settles
        it). Anything else means one side lost or forged state: the session stops."""
        mine = self.balance()
        if theirs == mine:
            return True
        a, b = self._progress(mine), self._progress(theirs)
        if a is not None and b is not None and abs(a - b) == 1:
            return True
        self._note(now, "the peer resumes from another balance (%s, mine %s)" % (b, a))
        return False

    def _progress(self, balance):
        """How far a balance is: the channel state's seq (-1 before the channel) or the
        count of preimages given; None if it is neither."""
        channel = self.terms.mode == CHANNEL
        if not balance:
            return -1 if channel else 0
        try:
            if channel:
                return ChannelState.decode(balance, M.MAX_PROOF_BYTES).seq
            given = codec.loads(balance, "preimages given", 16)
        except DecodeError:
            return None
        return given if type(given) is int and given >= 0 else None

    # ---- consumer ------------------------------------------------------------------------

    def _deposit(self, peer_account, now):
        try:
            account = Account.decode(peer_account)
        except DecodeError as e:
            raise WalletError("the producer's account: %s" % e)
        check_account(self.wallet.ra_pubkeys, account, "producer")
        self.peer_account = account
        b = self.terms.budget()
        n = self.params.installments
        if self.terms.mode == CHANNEL:
            channel_id, raw = self.wallet.open_channel(account, b, n, self.terms.window, self.terms.fee)
            self.deposit = raw
            self._note(now, "opening channel %s: %d locked" % (channel_id.hex()[:16], b))
            self._submit(raw, self._opened, now)
        else:
            self.series = self.wallet.start_htlcs(account, b // n, n, self.terms.htlc_timeout)
            self._fund_next(now)

    def _opened(self, result, data, now):
        outcome = self.wallet.handle_result(data)
        if outcome != "confirmed":
            self._note(now, "channel open %s: %s %s" % (outcome, L.reason_name(result.reason), result.detail))
            self._stop(M.FAILED, now)
            return self._after_stop(now)  # (again, if the link had stopped already: now it can finish)
        self.channel = self.wallet.channel(L.decode_request(self.deposit).channel_id())
        self._signed(self.terms.paid_after(0), now)
        if self.stopped:  # the link ended while the open was on its way: close the channel now
            self._note(now, "the channel opened after the link stopped: closing it")
            return self._after_stop(now)
        self._pay(now)

    def _fund_next(self, now):
        raw = self.wallet.fund_htlc(self.series.series_id, self.funded, self.terms.fee)
        self._submit(raw, self._htlc_funded, now)

    def _htlc_funded(self, result, data, now):
        outcome = self.wallet.handle_result(data)
        if self.stopped:  # no more HTLCs once the link is over; the funded ones refund later
            return self._after_stop(now)
        if outcome != "confirmed":
            self._note(now, "HTLC %d: %s %s" % (self.funded, L.reason_name(result.reason), result.detail))
            return self._stop(M.FAILED, now)
        self.funded += 1
        if self.funded < self.params.installments:
            return self._fund_next(now)
        self._note(now, "%d HTLCs funded" % self.funded)
        self._pay(now)

    def _pay(self, now):
        """Send the installment that is due, if the machine wants one."""
        m = self.machine
        if self.producer or m.stop_code is not None or m.paused or m.phase not in (link.DEPOSIT, link.INSTALLMENT):
            return
        if m.installments_paid == 0 and (self.channel is None if self.terms.mode == CHANNEL
                                         else self.funded < self.params.installments):
            return  # the deposit goes once the ledger confirmed it
        k = m.installments_paid
        if self.cheat.stop_paying_at is not None and k >= self.cheat.stop_paying_at:
            self._note(now, "misbehaving: not paying installment %d" % k)
            return
        if self.terms.mode == CHANNEL:
            if k == 0:  # the channel id: the producer reads the rest from the ledger
                proof = self.channel.channel_id
            else:
                proof = self.channel.propose(self.terms.paid_after(k), self.params.due_wh(k), self.receipt)
                self._signed(self.terms.paid_after(k), now)
        else:
            preimage = self.series.reveal(k)
            proof = codec.dumps([compact_terms(self.series), preimage]) if k == 0 else preimage
            self._signed(self.terms.paid_after(k), now)
        m.send_installment(proof, now)
        self.installment_sent = (k, now)

    def _installment_accepted(self, k, proof, now):
        self.last_installment = (k, self.installment_sent[1], now)
        self.installment_log.append(self.last_installment)
        if self.terms.mode == CHANNEL and k > 0:
            self.channel.accept(proof, store=False)  # written with the next proposal, or by tick
            if self.save_at is None:
                self.save_at = now + ACCEPT_WRITE_MS
            if k == 1 and self.cheat.stale_close:
                self.stale = proof
        if self.meters and k > 0:
            self._start_chunk(now)

    def _energy(self, now):
        """While a chunk flows: let the board see the energy (a board that switches by
        polling opens at its limit) and tell the link when it advanced."""
        m = self.machine
        if m.phase != link.CHARGING or m.paused:
            return
        self.board.update(self._board_now())
        measured = self.board.measured_wh
        if measured != self.energy_seen:
            self.energy_seen = measured
            self.flow_at = now
            m.energy_flowed(now)

    # ---- initiator: checks and counter-signs the readings -----------------------------------

    def _reading_received(self, reading, now):
        self.board.update(self._board_now())
        measured = self.board.measured_wh
        tolerance = self.params.tolerance_wh
        due = self.params.due_wh(reading.index)
        if self.producer:  # it must credit what I delivered
            wrong = reading.cumulative_wh + tolerance < measured
        else:  # it must not bill more than I measured, nor have me measure less than due
            wrong = reading.cumulative_wh > measured + tolerance or measured + tolerance < due
        if wrong:
            self._note(now, "reading %d says %d Wh, measured %d Wh, %d Wh due" % (
                reading.index, reading.cumulative_wh, measured, due))
            return self._stop(M.FAILED_ReceiptMismatch, now)
        if self.producer:  # the meter took the chunk: no more flows until it is paid
            self.chunk = None
            self.board.stop_delivery(self._board_now())
        receipt = MeterReceipt(reading, b"")
        receipt.ev_sig = signing.sign(self.session_secret, receipt)
        self.receipt = receipt.digest()
        self.machine.send_receipt(receipt.ev_sig, now)
        self._track(now)
        self._pay(now)

    # ---- producer ------------------------------------------------------------------------

    def _installment_received(self, k, proof, now):
        if self.terms.mode == CHANNEL:
            if k == 0:
                if not isinstance(proof, bytes) or len(proof) != 32:
                    raise ChannelError("the deposit names no channel: %d bytes, not a 32-byte id" % len(proof))
                self.deposit = proof
                return self._query(channels.query(proof), self._channel_seen, now)
            try:
                state = ChannelState.decode(proof, M.MAX_PROOF_BYTES)
            except DecodeError as e:
                raise ChannelError("installment %d is not a channel state: %s" % (k, e))
            due = (self.terms.paid_after(k), self.params.due_wh(k), self.receipt)
            if (state.paid_to_producer, state.energy_wh, state.receipt_digest) != due:
                raise ChannelError("installment %d pays %d for %d Wh; %d for %d Wh against the last receipt is due"
                                   % (k, state.paid_to_producer, state.energy_wh, due[0], due[1]))
            full = self.channel.countersign(proof)
            self._accepted(k, full, now)
            return
        if k == 0:
            try:
                terms, preimage = codec.loads(proof, "htlc deposit", M.MAX_PROOF_BYTES)
            except (DecodeError, TypeError, ValueError) as e:
                raise HtlcError("the HTLC deposit: %s" % e)
            if not isinstance(terms, bytes) or not isinstance(preimage, bytes):
                raise HtlcError("the HTLC deposit is [terms, preimage]")
            self.series = self.wallet.accept_htlcs(expand_terms(terms, self.account), self.index)
            if self.series.count() != self.params.installments \
                    or self.series.rec.amount * self.series.count() != self.terms.budget():
                raise HtlcError("the series is not %d HTLCs of %d" % (
                    self.params.installments, self.terms.budget() // self.params.installments))
            if self.series.rec.timeout < self.terms.htlc_timeout:
                raise HtlcError("the HTLCs refund from block %d, before the agreed %d" % (
                    self.series.rec.timeout, self.terms.htlc_timeout))
        else:
            preimage = proof
        self.series.take_preimage(k, preimage)
        query = L.Query(L.QUERY_HTLC, self.series.htlc_id(k), 0).encode()
        self._query(query, lambda result, data, t: self._htlc_seen(k, result, data, t), now)

    def _channel_seen(self, result, data, now):
        """Producer: the ledger's answer about the channel the consumer named."""
        if self.stopped:
            return  # too late for the link: nothing of mine is in it yet
        missing = channels.channel_row(self.deposit, data) is None  # a malformed answer raises: FAILED
        if missing and self.deposit_looks < DEPOSIT_LOOKS:  # a replica behind the consumer's answer
            self.deposit_looks += 1
            return self._later(now + WATCH_MS, lambda t: self._query(channels.query(self.deposit), self._channel_seen, t))
        try:
            self.channel = self.wallet.accept_channel(self.deposit, data, self.index, self.terms.budget(),
                                                      self.params.installments, self.terms.window)
        except REFUSALS as e:
            self._note(now, "the deposit is not on the ledger as agreed: %s" % e)
            return self._stop(M.FAILED_UnpaidOverLimit, now)
        row = self.channel.ledger_row(data)
        if row[5] != L.STATUS_OPEN:
            self._note(now, "the channel is not open on the ledger: status %d" % row[5])
            return self._stop(M.FAILED_UnpaidOverLimit, now)
        self._accepted(0, b"", now)

    def _htlc_seen(self, k, result, data, now):
        row = self.series.ledger_row(k, data)
        if row is None or row[5] != L.STATUS_OPEN:
            self._note(now, "HTLC %d is not open on the ledger: %s" % (
                k, "not there" if row is None else "status %d" % row[5]))
            return self._stop(M.FAILED_UnpaidOverLimit, now)
        if not self.stopped:  # else the link is over, but the preimage I hold is still claimed
            self._accepted(k, b"", now)
        self.claims += 1
        self._submit(self.series.claim(k), lambda r, d, t: self._claimed(k, d, t), now)

    def _claimed(self, k, data, now):
        if self.wallet.settle_htlc(self.series.series_id, k, data) == "claimed":
            self.payout = (self.payout or 0) + self.series.rec.amount
        self.claims -= 1
        if self.stopped and self.claims == 0:
            self.finished = True

    def _accepted(self, k, proof, now):
        self._signed(self.terms.paid_after(k), now)
        self.machine.accept_installment(proof, now)
        if k > 0:
            self._start_chunk(now)

    # ---- energy: the producer's limit, the responder's meter ---------------------------------

    def _start_chunk(self, now):
        """Chunk k is paid for: the producer lets it flow, the responder meters it."""
        k = self.machine.readings + 1
        if self.producer and self.cheat.stop_delivering_after is not None and k > self.cheat.stop_delivering_after:
            self.board.stop_delivery(self._board_now())
            self._note(now, "misbehaving: not delivering chunk %d" % k)
            return
        due = self.params.due_wh(k)
        self.chunk = due if self.meters else due + self.params.tolerance_wh
        self.chunk_paused = self.machine.paused
        self.flow_at = now
        if not self.chunk_paused:  # else once the link resumes (``tick``)
            self.board.start_delivery(self._board_now(), self.chunk)
            self._read_meter(now)

    def _read_meter(self, now):
        """Responder: send reading k once the meter shows the chunk, or once the flow
        stopped short of it for ``STALL_MS`` but within the tolerance (the producer's own
        measurement reached its limit first: the initiator's check decides); energy stops
        until the next installment is paid."""
        m = self.machine
        if not self.meters or self.chunk is None or m.paused or m.phase != link.CHARGING:
            return
        self.board.update(self._board_now())
        shown = self.board.measured_wh
        if shown < self.chunk and (shown + self.params.tolerance_wh < self.chunk or now - self.flow_at < STALL_MS
                                   or self.board.time_to_reach_ms(self.chunk) is not None):
            return
        self.board.stop_delivery(self._board_now())
        self.chunk = None
        k = m.readings + 1
        self.timestamp += 1
        reading = self.board.meter.read(k, self.timestamp)
        self.machine.send_reading(reading, now)
        self._track(now)

    # ---- the end: closing and settling ----------------------------------------------------

    def _after_stop(self, now):
        """The link is over: stop energy, then settle the money (once)."""
        self.chunk = None
        self.board.stop_delivery(self._board_now())
        self._track(now)
        if self.closing_started or self.finished:
            return
        self.closing_started = True
        if self.channel is None:
            if not self.producer and self._waiting:
                self.closing_started = False  # the deposit is on its way: settled once answered
                return
            if self.series is not None and not self.producer:
                self._note(now, "%d of %d preimages revealed; the rest refund after block %d" % (
                    self.series.rec.revealed, self.series.count(), self.series.rec.timeout))
            self.finished = not self.producer or self.claims == 0
            return
        if self.producer:
            self._later(now + WATCH_MS, self._watch)  # the consumer's close, or its dispute
        elif self.stale is not None:
            self._stale_close(now)
        else:
            self._send_close(now)

    def _later(self, when, action):
        self.wake = when
        self.wake_action = action

    def _send_close(self, now):
        """Consumer: my signature on closing with the latest state, sent again every
        ``CLOSE_RESEND_MS`` up to ``CLOSE_TRIES`` times; then I close alone."""
        if self.closing is not None:
            return
        self.close_tries += 1
        if self.close_tries > CLOSE_TRIES:
            return self._dispute(now)
        self._out.append(self.channel.sign_close())
        if self.close_tries == 1:
            self._note(now, "sent a close on seq %d" % self.channel.latest().seq)
        self._later(now + CLOSE_RESEND_MS, self._send_close)

    def _watch(self, now):
        """Producer: look at the channel on the ledger while no close came: a consumer
        that closed alone with a stale state is answered with the latest one at once."""
        if self.closing is not None:
            return
        self.close_tries += 1
        self._query(self.channel.query(), self._watched, now)

    def _watched(self, result, data, now):
        if self.closing is not None:
            return
        row = self.channel.ledger_row(data)
        status = None if row is None else row[5]
        if status == L.STATUS_CLOSING:
            if row[6] < self.channel.latest().seq:
                self._note(now, "the consumer closed alone with seq %d: answering with seq %d" % (
                    row[6], self.channel.latest().seq))
                return self._dispute(now)
            self.closing = b"settle"
            return self._settle(now)
        if status is not None and status != L.STATUS_OPEN:
            return self._paid_out(result, data, now)
        if self.close_tries * WATCH_MS >= CLOSE_TRIES * CLOSE_RESEND_MS * 2:
            return self._dispute(now)
        self._later(now + WATCH_MS, self._watch)

    def _close_message(self, data, now):
        """The consumer's signed close (producer) or the completed close (consumer)."""
        try:
            op = L.decode_request(data)
        except (DecodeError, L.UnknownOp) as e:
            self._note(now, "dropped a bad close message: %s" % e)
            return
        if self.channel is None or not isinstance(op, L.ChannelClose) or self.closing is not None or not self.stopped:
            return
        if self.producer:
            try:
                full = self.channel.countersign_close(data)
            except ChannelError as e:
                self._note(now, "refused the close: %s" % e)
                return
            self._out.append(full)
            self._submit_close(full, now)
        elif op.sig_producer and op.sig_consumer and op.state.encode() == self.channel.latest().encode():
            self.closing = data  # the producer submits it: one submission, not one from each side
            self.closing_at = now
            self.wake = None
            self._later(now + WATCH_MS, self._await_close)
        self._collect(now)

    def _await_close(self, now):
        """Consumer: look for the close the producer completed; submit it myself only if the
        ledger still shows the channel open ``CLOSE_WAIT_MS`` after it came."""
        self._query(self.channel.query(), self._close_seen, now)

    def _close_seen(self, result, data, now):
        row = self.channel.ledger_row(data)
        if row is not None and row[5] == L.STATUS_OPEN:
            if now - self.closing_at < CLOSE_WAIT_MS:
                return self._later(now + WATCH_MS, self._await_close)
            self._note(now, "the producer did not submit the close: submitting it")
            return self._submit(self.closing, self._closed, now)
        self._paid_out(result, data, now)

    def _submit_close(self, raw, now):
        self.closing = raw
        self.wake = None
        self._note(now, "submitting the cooperative close on seq %d" % self.channel.latest().seq)
        self._submit(raw, self._closed, now)

    def _closed(self, result, data, now):
        if result.ok or result.reason in (L.DUPLICATE, L.CHANNEL_CLOSED):
            return self._finish(now)
        self._note(now, "close refused: %s %s" % (L.reason_name(result.reason), result.detail))
        self._dispute(now)

    def _dispute(self, now):
        """Close alone with my latest state (or answer a stale close with it)."""
        self._note(now, "closing alone with seq %d" % self.channel.latest().seq)
        self.disputed = True
        self.wake = None
        self.closing = self.channel.dispute()
        self._submit(self.closing, self._disputed, now)

    def _stale_close(self, now):
        """Misbehaviour: a unilateral close with the old state of seq 1, which pays the
        producer less; the producer must answer it within the window."""
        state = ChannelState.decode(self.stale)
        op = L.ChannelDispute(state, False, b"")
        op.closer_sig = signing.sign(self.wallet.keystore.secret(self.channel.rec.my_index), op)
        self._note(now, "misbehaving: closing alone with stale seq %d (latest %d)" % (
            state.seq, self.channel.latest().seq))
        self.closing = op.encode()
        self._submit(self.closing, self._disputed, now)

    def _disputed(self, result, data, now):
        if result.ok:
            self._note(now, "unilateral close recorded; settling after the %d-block window" % self.terms.window)
        elif result.reason not in (L.DUPLICATE, L.CHANNEL_STALE_STATE):
            self._note(now, "unilateral close refused: %s %s" % (L.reason_name(result.reason), result.detail))
            return self._finish(now)
        self._later(now + SETTLE_RETRY_MS, self._settle)

    def _settle(self, now):
        self._submit(self.channel.settle(), self._settled, now)

    def _settled(self, result, data, now):
        if result.reason == L.CHANNEL_TOO_EARLY:
            return self._later(now + SETTLE_RETRY_MS, self._settle)  # the window has not passed yet
        if not (result.ok or result.reason in (L.DUPLICATE, L.CHANNEL_CLOSED, L.CHANNEL_NOT_CLOSING)):
            self._note(now, "settle refused: %s %s" % (L.reason_name(result.reason), result.detail))
        self._finish(now)  # what the ledger shows decides

    def _finish(self, now):
        self._query(self.channel.query(), self._paid_out, now)

    def _paid_out(self, result, data, now):
        row = self.channel.ledger_row(data)
        if row is None:  # the open never confirmed: nothing is locked, nothing to pay out
            self._note(now, "the ledger has no channel %s: nothing to settle" % self.channel.channel_id.hex()[:16])
            self.payout = 0
            self.finished = True
            return
        if row[5] == L.STATUS_CLOSING:
            return self._later(now + SETTLE_RETRY_MS, self._settle)
        if row[5] == L.STATUS_OPEN:  # nobody closed it (a close or dispute was refused)
            if self.disputed:
                self._note(now, "the channel is still open after my unilateral close: giving up; the wallet keeps it")
                self.finished = True
                return
            return self._dispute(now)
        self.payout = self.wallet.finish_channel(self.channel.channel_id, data)
        self._note(now, "channel closed: %d to me" % self.payout)
        self.finished = True

    # ---- helpers -------------------------------------------------------------------------

    def _board_now(self):
        """The board's (simulated) clock: energy flows in its time, the link runs in real time."""
        return self.board.clock.now_ms()

    def _stop(self, code, now):
        if not self.stopped:
            self.machine.stop(code, now)
            self.stop_code = code
            self._note(now, "stopped the link: %s" % M.code_name(code))
            self._after_stop(now)

    def _signed(self, paid, now):
        if paid > self.paid_signed:
            self.paid_signed = paid
        self._track(now)

    def _track(self, now):
        e = self.exposure()
        if e > self.max_exposure:
            self.max_exposure = e
        energy = self.board.measured_wh
        self.exposure_log.append((now - self.started, e, energy, self.paid_signed))

    def _submit(self, raw, callback, now):
        self._send_ledger("submit", raw, callback)

    def _query(self, raw, callback, now):
        self._send_ledger("query", raw, callback)

    def _send_ledger(self, kind, raw, callback):
        digest = sha256(raw)
        self._waiting[digest] = callback
        self._asked[digest] = (kind, raw)
        self._ledger.append((kind, raw))

    def _note(self, now, text):
        self.log.append((now - self.started, text))

    def _collect(self, now):
        self.now = now
        self._out.extend(self.machine.messages_to_send())


def _is_ledger_op(data):
    """True for the closing exchange's bytes (a ledger op array) as opposed to a link
    message; the first CBOR item after the array header is the tag."""
    if not isinstance(data, (bytes, bytearray)) or len(data) < 2:
        return False
    return data[1] == L.TAG_CHANNEL_CLOSE
