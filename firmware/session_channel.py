"""A session paid through one state channel (``payment.Payment`` for ``firmware.session``).

Installment 0 is the confirmed ``ChannelOpen`` locking the budget b (whose seq 0 already
gives the producer b/N); installment k (1..N-1) is the consumer-signed state of seq k
paying ``b * (k + 1) // N`` for ``due_wh(k)`` against the receipt of reading k, and the
producer's answer is that state countersigned. The producer checks that each state pays
exactly what is due, for the energy and receipt of that reading. The wallet stores a state
before its signature leaves the device (``channels.Channel``); the consumer's copy of the
countersigned answer is written with its next proposal, or ``ACCEPT_WRITE_MS`` later.

The deposit the producer is shown is the channel id alone: it reads the channel's terms
from the ledger and never sees the open's inputs. At the end the consumer signs a
cooperative ``ChannelClose`` on the latest state, sent beside the link on the session
topic; the producer countersigns and submits it (on-chain: open and close), and the
consumer submits the same bytes only if the ledger does not show the channel closed
``CLOSE_WAIT_MS`` later. A producer that gets no close disputes with its latest state and
settles after the window; so does a consumer whose peer vanished.
"""
from plugpay.protocol import signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.structures import ChannelState

from . import channels
from .channels import ChannelError
from .payment import Payment
from .session import REFUSALS

CLOSE_RESEND_MS = 500  # the consumer sends its signed close again this often
CLOSE_TRIES = 4  # then it closes alone (dispute), as does a producer that got none
CLOSE_WAIT_MS = 2000  # the consumer gives the producer this long to submit the completed close
# The consumer's acceptance of installment k waits this long for its proposal k+1 (when
# energy flows fast, the next reading is already on its way) so one write stores both.
# Losing it to a power cut in between loses nothing: the producer holds the same state.
ACCEPT_WRITE_MS = 5
WATCH_MS = 250  # the producer looks at the channel on the ledger this often while it waits
DEPOSIT_LOOKS = 3  # a channel the consumer named but the ledger does not show yet is looked for again
SETTLE_RETRY_MS = 200


class ChannelPayment(Payment):
    """One side's channel in a session: ``channel`` is the wallet's ``Channel`` once open."""

    NAME = "state channel"

    def __init__(self, session):
        Payment.__init__(self, session)
        self.channel = None
        self.deposit_bytes = None  # consumer: the ChannelOpen it submitted; producer: the channel id it was shown
        self.deposit_looks = 0  # producer: queries of that channel the ledger answered NOT_FOUND
        self.stale = None  # misbehaving consumer: the fully signed state of seq 1
        self.save_at = None  # consumer: when an acceptance still in memory is written
        self.closing = None  # the close (or dispute) request on its way to the ledger
        self.closing_started = False
        self.closing_at = None  # consumer: when the close the producer completed came back
        self.close_tries = 0
        self.disputed = False  # a unilateral close (or the answer to one) went to the ledger
        self.wake = None  # when wake_action runs next (the deposit's look, closing and settling)
        self.wake_action = None

    # ---- consumer ------------------------------------------------------------------------

    def deposit(self, producer_account, now):
        s = self.s
        b = s.terms.budget()
        channel_id, raw = s.wallet.open_channel(producer_account, b, s.params.installments, s.terms.window,
                                                s.terms.fee)
        self.deposit_bytes = raw
        s.note(now, "opening channel %s: %d locked" % (channel_id.hex()[:16], b))
        s.submit(raw, self._opened)

    def _opened(self, result, data, now):
        s = self.s
        outcome = s.wallet.handle_result(data)
        if outcome != "confirmed":
            s.note(now, "channel open %s: %s %s" % (outcome, L.reason_name(result.reason), result.detail))
            s.stop(M.FAILED, now)
            return s.after_stop(now)  # (again, if the link had stopped already: now it can finish)
        self.channel = s.wallet.channel(L.decode_request(self.deposit_bytes).channel_id())
        s.signed(s.terms.paid_after(0), now)
        if s.stopped:  # the link ended while the open was on its way: close the channel now
            s.note(now, "the channel opened after the link stopped: closing it")
            return s.after_stop(now)
        s.pay(now)

    def ready(self):
        return self.channel is not None

    def pay(self, k, now):
        if k == 0:  # the channel id: the producer reads the rest from the ledger
            return self.channel.channel_id
        s = self.s
        proof = self.channel.propose(s.terms.paid_after(k), s.params.due_wh(k), s.receipt)
        s.signed(s.terms.paid_after(k), now)
        return proof

    def paid(self, k, answer, now):
        if k == 0:
            return
        self.channel.accept(answer, store=False)  # written with the next proposal, or by tick
        if self.save_at is None:
            self.save_at = now + ACCEPT_WRITE_MS
        if k == 1 and self.s.cheat.stale_close:
            self.stale = answer

    # ---- producer ------------------------------------------------------------------------

    def accept(self, k, proof, now):
        s = self.s
        if k == 0:
            if not isinstance(proof, bytes) or len(proof) != 32:
                raise ChannelError("the deposit names no channel: %d bytes, not a 32-byte id" % len(proof))
            self.deposit_bytes = proof
            return s.query(channels.query(proof), self._channel_seen)
        try:
            state = ChannelState.decode(proof, M.MAX_PROOF_BYTES)
        except DecodeError as e:
            raise ChannelError("installment %d is not a channel state: %s" % (k, e))
        due = (s.terms.paid_after(k), s.params.due_wh(k), s.receipt)
        if (state.paid_to_producer, state.energy_wh, state.receipt_digest) != due:
            raise ChannelError("installment %d pays %d for %d Wh; %d for %d Wh against the last receipt is due"
                               % (k, state.paid_to_producer, state.energy_wh, due[0], due[1]))
        s.accepted(k, self.channel.countersign(proof), now)

    def _channel_seen(self, result, data, now):
        """Producer: the ledger's answer about the channel the consumer named."""
        s = self.s
        if s.stopped:
            return  # too late for the link: nothing of mine is in it yet
        missing = channels.channel_row(self.deposit_bytes, data) is None  # a malformed answer raises: FAILED
        if missing and self.deposit_looks < DEPOSIT_LOOKS:  # a replica behind the consumer's answer
            self.deposit_looks += 1
            query = channels.query(self.deposit_bytes)
            return self._later(now + WATCH_MS, lambda t: s.query(query, self._channel_seen))
        try:
            self.channel = s.wallet.accept_channel(self.deposit_bytes, data, s.index, s.terms.budget(),
                                                   s.params.installments, s.terms.window)
        except REFUSALS as e:
            s.note(now, "the deposit is not on the ledger as agreed: %s" % e)
            return s.stop(M.FAILED_UnpaidOverLimit, now)
        row = self.channel.ledger_row(data)
        if row[5] != L.STATUS_OPEN:
            s.note(now, "the channel is not open on the ledger: status %d" % row[5])
            return s.stop(M.FAILED_UnpaidOverLimit, now)
        s.accepted(0, b"", now)

    # ---- resumes ---------------------------------------------------------------------------

    def balance(self):
        return b"" if self.channel is None else self.channel.latest().encode()

    def progress(self, balance):
        """The state's seq (-1 before the channel)."""
        if not balance:
            return -1
        try:
            return ChannelState.decode(balance, M.MAX_PROOF_BYTES).seq
        except DecodeError:
            return None

    # ---- timers ------------------------------------------------------------------------------

    def tick(self, now):
        if self.wake is not None and now >= self.wake:
            action, self.wake = self.wake_action, None
            action(now)
        if self.save_at is not None and now >= self.save_at:
            self.save_at = None
            self.channel.save()  # nothing if the next proposal wrote it already

    def next_deadline(self):
        t = self.wake
        if self.save_at is not None and self.channel.unsaved and (t is None or self.save_at < t):
            t = self.save_at
        return t

    def _later(self, when, action):
        self.wake = when
        self.wake_action = action

    # ---- the end: closing and settling ----------------------------------------------------

    def close(self, now):
        s = self.s
        if self.closing_started:
            return
        if self.channel is None:
            if not s.producer and s.awaiting_ledger():
                return  # the open is on its way: settled once answered
            self.closing_started = True
            s.finished = True  # nothing was locked for me
            return
        self.closing_started = True
        if s.producer:
            self._later(now + WATCH_MS, self._watch)  # the consumer's close, or its dispute
        elif self.stale is not None:
            self._stale_close(now)
        else:
            self._send_close(now)

    def _send_close(self, now):
        """Consumer: my signature on closing with the latest state, sent again every
        ``CLOSE_RESEND_MS`` up to ``CLOSE_TRIES`` times; then I close alone."""
        if self.closing is not None:
            return
        self.close_tries += 1
        if self.close_tries > CLOSE_TRIES:
            return self._dispute(now)
        self.s.send(self.channel.sign_close())
        if self.close_tries == 1:
            self.s.note(now, "sent a close on seq %d" % self.channel.latest().seq)
        self._later(now + CLOSE_RESEND_MS, self._send_close)

    def _watch(self, now):
        """Producer: look at the channel on the ledger while no close came: a consumer
        that closed alone with a stale state is answered with the latest one at once."""
        if self.closing is not None:
            return
        self.close_tries += 1
        self.s.query(self.channel.query(), self._watched)

    def _watched(self, result, data, now):
        if self.closing is not None:
            return
        row = self.channel.ledger_row(data)
        status = None if row is None else row[5]
        if status == L.STATUS_CLOSING:
            if row[6] < self.channel.latest().seq:
                self.s.note(now, "the consumer closed alone with seq %d: answering with seq %d" % (
                    row[6], self.channel.latest().seq))
                return self._dispute(now)
            self.closing = b"settle"
            return self._settle(now)
        if status is not None and status != L.STATUS_OPEN:
            return self._paid_out(result, data, now)
        if self.close_tries * WATCH_MS >= CLOSE_TRIES * CLOSE_RESEND_MS * 2:
            return self._dispute(now)
        self._later(now + WATCH_MS, self._watch)

    def close_message(self, op, data, now):
        """The consumer's signed close (producer) or the completed close (consumer)."""
        if self.closing is not None:
            return
        s = self.s
        if s.producer:
            try:
                full = self.channel.countersign_close(data)
            except ChannelError as e:
                s.note(now, "refused the close: %s" % e)
                return
            s.send(full)
            self._submit_close(full, now)
        elif op.sig_producer and op.sig_consumer and op.state.encode() == self.channel.latest().encode():
            self.closing = data  # the producer submits it: one submission, not one from each side
            self.closing_at = now
            self.wake = None
            self._later(now + WATCH_MS, self._await_close)

    def _await_close(self, now):
        """Consumer: look for the close the producer completed; submit it myself only if the
        ledger still shows the channel open ``CLOSE_WAIT_MS`` after it came."""
        self.s.query(self.channel.query(), self._close_seen)

    def _close_seen(self, result, data, now):
        row = self.channel.ledger_row(data)
        if row is not None and row[5] == L.STATUS_OPEN:
            if now - self.closing_at < CLOSE_WAIT_MS:
                return self._later(now + WATCH_MS, self._await_close)
            self.s.note(now, "the producer did not submit the close: submitting it")
            return self.s.submit(self.closing, self._closed)
        self._paid_out(result, data, now)

    def _submit_close(self, raw, now):
        self.closing = raw
        self.wake = None
        self.s.note(now, "submitting the cooperative close on seq %d" % self.channel.latest().seq)
        self.s.submit(raw, self._closed)

    def _closed(self, result, data, now):
        if result.ok or result.reason in (L.DUPLICATE, L.CHANNEL_CLOSED):
            return self._finish(now)
        self.s.note(now, "close refused: %s %s" % (L.reason_name(result.reason), result.detail))
        self._dispute(now)

    def _dispute(self, now):
        """Close alone with my latest state (or answer a stale close with it)."""
        self.s.note(now, "closing alone with seq %d" % self.channel.latest().seq)
        self.disputed = True
        self.wake = None
        self.closing = self.channel.dispute()
        self.s.submit(self.closing, self._disputed)

    def _stale_close(self, now):
        """Misbehaviour: a unilateral close with the old state of seq 1, which pays the
        producer less; the producer must answer it within the window."""
        s = self.s
        state = ChannelState.decode(self.stale)
        op = L.ChannelDispute(state, False, b"")
        op.closer_sig = signing.sign(s.wallet.keystore.secret(self.channel.rec.my_index), op)
        s.note(now, "misbehaving: closing alone with stale seq %d (latest %d)" % (
            state.seq, self.channel.latest().seq))
        self.closing = op.encode()
        s.submit(self.closing, self._disputed)

    def _disputed(self, result, data, now):
        if result.ok:
            self.s.note(now, "unilateral close recorded; settling after the %d-block window" % self.s.terms.window)
        elif result.reason not in (L.DUPLICATE, L.CHANNEL_STALE_STATE):
            self.s.note(now, "unilateral close refused: %s %s" % (L.reason_name(result.reason), result.detail))
            return self._finish(now)
        self._later(now + SETTLE_RETRY_MS, self._settle)

    def _settle(self, now):
        self.s.submit(self.channel.settle(), self._settled)

    def _settled(self, result, data, now):
        if result.reason == L.CHANNEL_TOO_EARLY:
            return self._later(now + SETTLE_RETRY_MS, self._settle)  # the window has not passed yet
        if not (result.ok or result.reason in (L.DUPLICATE, L.CHANNEL_CLOSED, L.CHANNEL_NOT_CLOSING)):
            self.s.note(now, "settle refused: %s %s" % (L.reason_name(result.reason), result.detail))
        self._finish(now)  # what the ledger shows decides

    def _finish(self, now):
        self.s.query(self.channel.query(), self._paid_out)

    def _paid_out(self, result, data, now):
        s = self.s
        row = self.channel.ledger_row(data)
        if row is None:  # the open never confirmed: nothing is locked, nothing to pay out
            s.note(now, "the ledger has no channel %s: nothing to settle" % self.channel.channel_id.hex()[:16])
            s.payout = 0
            s.finished = True
            return
        if row[5] == L.STATUS_CLOSING:
            return self._later(now + SETTLE_RETRY_MS, self._settle)
        if row[5] == L.STATUS_OPEN:  # nobody closed it (a close or dispute was refused)
            if self.disputed:
                s.note(now, "the channel is still open after my unilateral close: giving up; the wallet keeps it")
                s.finished = True
                return
            return self._dispute(now)
        s.payout = s.wallet.finish_channel(self.channel.channel_id, data)
        s.note(now, "channel closed: %d to me" % s.payout)
        s.finished = True
