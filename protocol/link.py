"""Sans-IO state machines of the charging link: ``Initiator`` (EVCC) and ``Responder`` (SECC).

In the style of h11 and hyper-h2: a machine never touches a socket or a clock. The transport
feeds it ``receive(data, now)`` and ``tick(now)`` (``now`` in monotonic milliseconds), sends
whatever ``messages_to_send()`` returns (one MQTT publish each) and calls ``tick`` again by
``next_deadline()``. Both return events (``link_events``); the application answers the ones
that need a payment decision through explicit calls. Producer and consumer are roles of
their own, so G2V, V2G and V2V run through the same two classes.

Energy is metered by the responder's meter (the charger's; in V2V the responding vehicle
acts as the charger), whoever produces: the responder sends each signed reading and the
initiator (the vehicle) checks it against its own measurement and counter-signs it. That
receipt is what the next installment pays for.

Message sequence (I initiator, R responder, P producer, C consumer; N installments)::

    I -> R  SessionSetupReq(session key, meter key, payee account)
    R -> I  SessionSetupRes(OK, session key, meter key, payee account)
    I -> R  ServicePaymentSelectionReq(payment mode, initiator's role)
    R -> I  ServicePaymentSelectionRes(OK)
    I -> R  ChargeParameterDiscoveryReq(energy, window, power, price, N, tolerance)
    R -> I  ChargeParameterDiscoveryRes(OK)              both: TermsAgreed
    C -> P  InstallmentReq(0, deposit proof)              P: InstallmentReceived
    P -> C  InstallmentRes(OK, 0, proof)                  C: InstallmentAccepted
    I -> R  PowerDeliveryReq(start)
    R -> I  PowerDeliveryRes(OK)                          both: PowerDeliveryStarted
    for k = 1 .. N:                                       (P delivers e/N first)
        R -> I  ChargingStatus(reading k)                 I: MeterReadingReceived
        I -> R  MeteringReceipt(OK, digest, signature)    R: ReceiptReceived
        if k < N:
            C -> P  InstallmentReq(k, proof)              P: InstallmentReceived
            P -> C  InstallmentRes(OK, k, proof)          C: InstallmentAccepted
    I -> R  PowerDeliveryReq(stop)
    R -> I  PowerDeliveryRes(OK)                          both: PowerDeliveryStopped
    I -> R  SessionStopReq(OK)                            both: SessionStopped(OK)
    R -> I  SessionStopRes(OK)
    any time after setup, either side:
        PauseReq -> PauseRes(OK)                          peer: Paused
        ResumeReq(balance) -> ResumeRes(OK, balance)      ResumeRequested, Resumed
        SessionStopReq(code) -> SessionStopRes(OK)        SessionStopped(code)

The producer is paid one installment ahead (deposit first), so it never delivers energy it
was not paid for, and the consumer never has more than one installment outstanding.

Reliability and refusals. Each direction numbers its messages 1, 2, 3...; every request is
re-sent unchanged every ``retransmit`` ms until its response comes, and a duplicate request
is answered with the cached response (and the open requests that followed it), so drops,
duplicates and reordering of an honest exchange heal themselves. Bytes that cannot be acted
on (malformed, another session, a used or skipped sequence number, a message out of order)
are answered with a ``Notice`` carrying the code (sequence number 0, never answered) and
change nothing: no state, no sequence number. Well-formed messages in order whose content
is wrong (a bad meter signature, a broken reading chain, other charge parameters, a bad
receipt) end the session: the refusal is the request's response with the code, or a
``SessionStopReq`` when no request is waiting. Two exceptions to strict order, both about
the end: a message that ends the session (a ``SessionStopReq``, a FAILED response) may skip
a gap, since a side that stopped abandons its open requests and their numbers never come;
and once stopped, a machine answers any later request with its stop code, so a peer that
missed the end (a dropped connection) learns it. Link messages are not authenticated
themselves (the meter readings, receipts and payment proofs are signed), so whoever can
publish on a session's topics can end the session, which is no more than dropping its
messages could do; it cannot forge what the signatures cover (a reading, a receipt, a
payment proof checked by the wallet).

Timeouts (``Timeouts``): a request unanswered after ``response`` ms, the peer's next request
not there after ``sequence`` ms, a due installment not there after ``payment`` ms
(FAILED_PaymentOverdue), a paid chunk whose energy stopped advancing for ``sequence`` ms
before its reading came (both sides tell ``energy_flowed`` when they measure progress; the
responder waits for the energy, the initiator for the reading) and a pause longer than
``pause`` ms each give a ``Timeout`` event
and a stop. While paused only the pause timeout runs; requests are still re-sent, so they
arrive once a dropped connection is back. A resume exchanges the latest co-signed balances.
"""
from . import link_events as E
from . import link_messages as M
from . import signing
from .codec import DecodeError
from .port import const, urandom
from .structures import MeterReceipt

# Phases: where in the sequence above the session is.
SETUP = const(0)
SELECTION = const(1)
DISCOVERY = const(2)
DEPOSIT = const(3)  # the consumer's deposit (installment 0) is due
INSTALLMENT_ACK = const(4)  # an installment was sent, the producer decides
POWER_START = const(5)
CHARGING = const(6)  # the producer delivers e/N and sends the next reading
RECEIPT = const(7)  # a reading was sent, the consumer decides
INSTALLMENT = const(8)  # the receipt is in, the next installment is due
POWER_STOP = const(9)
SESSION_STOP = const(10)
STOPPED = const(11)
PHASES = (
    "setup", "selection", "discovery", "deposit", "installment_ack", "power_start",
    "charging", "receipt", "installment", "power_stop", "session_stop", "stopped",
)

RECEIVED_KEPT = const(8)  # received messages remembered to tell duplicates from replays
ZERO_DIGEST = bytes(32)

_REQUEST_OF = {}  # response kind -> request kind
_RESPONSE_NAME = {}  # request kind -> name of its response
for _cls in M.PAYLOADS:
    if _cls.RESPONSE is not None:
        _REQUEST_OF[_cls.RESPONSE.TAG] = _cls.TAG
        _RESPONSE_NAME[_cls.TAG] = _cls.RESPONSE.NAME


def new_session_id():
    """A fresh random session id: the only thing a session's topics are built from."""
    return urandom(M.SESSION_ID_BYTES)


class LocalProtocolError(Exception):
    """The application called something the session does not allow now (never raised
    because of input from the network)."""


class Timeouts:
    """Milliseconds: see the module docstring."""

    def __init__(self, response=2000, retransmit=500, sequence=60000, payment=5000, pause=120000):
        self.response = response
        self.retransmit = retransmit
        self.sequence = sequence
        self.payment = payment
        self.pause = pause


class LinkConfig:
    """One side's terms, fixed before the session (from the market commit).

    ``session_id``: the random id both sides know (it names the topics). ``role``:
    ``ROLE_PRODUCER`` or ``ROLE_CONSUMER``. ``session_key``: this side's one-time public key
    (the initiator's signs receipts). ``meter_key``: the public key of the meter this side
    signs readings with: the responder's, ``b""`` for the initiator. ``parameters``: the agreed
    ``ChargeParameters``. ``payment_modes``: the initiator proposes the first, the
    responder accepts any of them. ``account``: the producer's encoded payee ``Account``
    (the wallet checks the peer's), ``b""`` for the consumer.
    """

    def __init__(self, session_id, role, session_key, parameters, payment_modes, meter_key=b"", timeouts=None,
                 account=b""):
        if not isinstance(session_id, bytes) or len(session_id) != M.SESSION_ID_BYTES:
            raise ValueError("a session id is %d bytes" % M.SESSION_ID_BYTES)
        if role not in (M.ROLE_PRODUCER, M.ROLE_CONSUMER):
            raise ValueError("unknown role %r" % (role,))
        if not isinstance(parameters, M.ChargeParameters):
            raise ValueError("parameters must be ChargeParameters")
        if not payment_modes:
            raise ValueError("no payment mode")
        self.session_id = session_id
        self.role = role
        self.session_key = M.PUBKEY.check(session_key, "session_key")
        self.meter_key = M.OPTIONAL_PUBKEY.check(meter_key, "meter_key")
        self.account = M.ACCOUNT.check(account, "account")
        self.parameters = parameters
        self.payment_modes = tuple(payment_modes)
        self.timeouts = timeouts or Timeouts()


class _Link:
    """What both ends share: sequencing, duplicates, timers and the charging loop."""

    INITIATOR = False

    def __init__(self, config, now):
        self.config = config
        self.session_id = config.session_id
        self.role = config.role
        self.producer = config.role == M.ROLE_PRODUCER
        self.meters = not self.INITIATOR  # this side signs the readings, the other receipts
        self.parameters = config.parameters
        self.payment_mode = None
        self.peer_session_key = None
        self.peer_meter_key = None
        self.peer_account = None
        self.phase = SETUP
        self.paused = False
        self.stop_code = None
        self.readings = 0  # meter readings sent (responder) or accepted (initiator)
        self.installments_paid = 0  # accepted installments, the deposit included
        self.tx_seq = 0  # the last sequence number sent
        self.rx_seq = 0  # the last sequence number accepted from the peer
        self._received = []  # [seq, bytes, our response or None] of the last messages
        self._unacked = []  # [kind, bytes, first sent, last sent] of our open requests
        self._owed = []  # [entry, request]: peer requests the application answers
        self._reading = None  # the last reading sent or accepted
        self._chain = ZERO_DIGEST  # its digest: the next reading's prev_digest
        self._out = []
        self._events = None  # collects events during receive() and tick()
        self._now = now
        self._since = now  # when the current phase, pause or resume began
        self._ran = 0  # how long the phase had run when the pause began

    # ---- transport side -------------------------------------------------------------

    def receive(self, data, now):
        """Process one message from the peer; return the events it caused. Never raises
        because of ``data``."""
        events = self._events = []
        self._now = now
        self._receive(data)
        self._events = None
        return events

    def tick(self, now):
        """Re-send open requests and fire timeouts that are due; return the events."""
        events = self._events = []
        self._now = now
        deadline = self.waiting()
        if deadline is not None and now >= deadline[0]:
            if self.phase == STOPPED:
                self._unacked = []  # the peer never confirmed our stop: give up
            else:
                self._events.append(E.Timeout(deadline[1], deadline[2]))
                self._halt(deadline[1])
        retransmit = self.config.timeouts.retransmit
        for u in self._unacked:
            if now - u[3] >= retransmit:
                self._resend_unacked()
                break
        self._events = None
        return events

    def messages_to_send(self):
        """The messages to publish, in order; each call hands them over once."""
        out = self._out
        self._out = []
        return out

    def next_deadline(self):
        """When ``tick`` has something to do next (ms), or None."""
        deadline = self.waiting()
        t = None if deadline is None else deadline[0]
        retransmit = self.config.timeouts.retransmit
        for u in self._unacked:
            if t is None or u[3] + retransmit < t:
                t = u[3] + retransmit
        return t

    def waiting(self):
        """What the link waits for now and when it gives up: ``(time in ms, the stop code it
        then gives, what it waits for)``, or None. ``what`` is the name of a message
        (``"charging_status"``, ``"installment_req"``, a response's name), ``"energy"`` (the
        responder, for the paid chunk to flow), ``"resume"`` (paused) or ``"the peer's next
        request"``. Progress reports announce it (``firmware.progress``)."""
        t = self.config.timeouts
        if self.phase == STOPPED:
            return (self._unacked[0][2] + t.response, M.FAILED_Timeout, "session_stop_res") if self._unacked else None
        if self.paused:
            return (self._since + t.pause, M.FAILED_Timeout, "resume")
        if self._unacked:
            u = self._unacked[0]
            return (u[2] + t.response, M.FAILED_Timeout, _RESPONSE_NAME[u[0]])
        if self.phase == CHARGING:  # a paid chunk flows, then the responder's meter reads it
            return (self._since + t.sequence, M.FAILED_Timeout, "energy" if self.meters else "charging_status")
        if not self._peer_turn():
            return None
        if self.producer and self.phase in (DEPOSIT, INSTALLMENT):
            return (self._since + t.payment, M.FAILED_PaymentOverdue, "installment_req")
        return (self._since + t.sequence, M.FAILED_Timeout, "the peer's next request")

    @property
    def state(self):
        return PHASES[self.phase]

    @property
    def resuming(self):
        """True while our ``ResumeReq`` waits for its answer."""
        return self._pending(M.TAG_RESUME_REQ) is not None

    @property
    def owes_resume(self):
        """True while the peer's ``ResumeReq`` waits for ``accept_resume``."""
        return self._owes(M.TAG_RESUME_REQ)

    # ---- application side ----------------------------------------------------------

    def send_reading(self, reading, now):
        """Responder: once its meter shows the next e/N, send the meter's signed reading."""
        self._now = now
        self._require(self.meters and self.phase == CHARGING and not self.paused, "send a reading")
        k = self.readings + 1
        if reading.session_id != self.session_id or reading.index != k or reading.installment != k or reading.prev_digest != self._chain:
            raise LocalProtocolError("the reading does not continue this session's chain at index %d" % k)
        self._reading = reading
        self._chain = reading.digest()
        self.readings = k
        self._request(M.ChargingStatus(reading))
        self._enter(RECEIPT)

    def send_receipt(self, ev_sig, now):
        """Initiator: counter-sign the last reading (``ev_sig`` signs
        ``MeterReceipt(reading, b"")`` with the session key)."""
        self._now = now
        entry = self._take_owed(M.TAG_CHARGING_STATUS, "send a receipt")
        self._respond(entry, M.MeteringReceipt(M.OK, self._chain, ev_sig))
        self._after_receipt()

    def send_installment(self, proof, now):
        """Consumer: pay the installment that is due (0, the deposit, after TermsAgreed)."""
        self._now = now
        self._require(not self.producer and self.phase in (DEPOSIT, INSTALLMENT) and not self.paused, "pay an installment")
        self._request(M.InstallmentReq(self.installments_paid, proof))
        self._enter(INSTALLMENT_ACK)

    def accept_installment(self, proof, now):
        """Producer: the wallet accepted the installment; ``proof`` goes back (for a
        channel the counter-signed state, else ``b""``)."""
        self._now = now
        entry = self._take_owed(M.TAG_INSTALLMENT_REQ, "accept an installment")
        self._respond(entry, M.InstallmentRes(M.OK, self.installments_paid, proof))
        self._installment_settled()

    def energy_flowed(self, now):
        """The application measured the paid chunk's energy advancing: the wait for its
        reading starts again, however slowly the energy comes."""
        if self.phase == CHARGING and not self.paused:
            self._since = now

    def pause(self, now):
        """Stop energy and payments until a resume; the peer is told."""
        self._now = now
        self._require(self._established() and not self.paused, "pause")
        self._request(M.PauseReq())
        self._begin_pause()

    def connection_lost(self, now):
        """The transport lost its connection: pause without telling (it cannot). Before
        setup and after the end there is nothing to pause: retransmission and timeouts
        cover those."""
        self._now = now
        if self._established() and not self.paused:
            self._begin_pause()

    def resume(self, balance, now):
        """Resume a pause (after a dropped connection too), naming the latest co-signed
        balance. Open requests go out again first, in order."""
        self._now = now
        self._require(self.paused and self._pending(M.TAG_RESUME_REQ) is None, "resume")
        self._resend_unacked()
        self._request(M.ResumeReq(balance))

    def accept_resume(self, balance, now):
        """Answer the peer's resume with our latest co-signed balance."""
        self._now = now
        entry = self._take_owed(M.TAG_RESUME_REQ, "accept a resume")
        self._respond(entry, M.ResumeRes(M.OK, balance))
        self.paused = False
        self._restart_timers()
        self._resend_unacked()

    def stop(self, code, now):
        """End the session with ``code`` (OK, or why: e.g. FAILED_UnpaidOverLimit)."""
        self._now = now
        self._require(self.phase != STOPPED, "stop")
        if type(code) is not int or not 0 <= code <= 0xFFFF:
            raise LocalProtocolError("not a response code: %r" % (code,))
        self._halt(code)

    # ---- input ---------------------------------------------------------------------

    def _receive(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return self._refuse(M.FAILED, 0, "not bytes")
        data = bytes(data)
        try:
            envelope, payload = M.decode_message(data)
        except DecodeError as e:
            return self._refuse(M.FAILED, 0, str(e))
        kind = envelope.kind
        seq = envelope.seq
        if envelope.session_id != self.session_id:
            if kind != M.TAG_NOTICE:
                self._refuse(M.FAILED_UnknownSession, seq, "unknown session", envelope.session_id)
            return
        if kind == M.TAG_NOTICE:  # never answered; only an unsequenced one is reported
            if seq == 0:
                self._events.append(E.PeerRefused(payload.code, payload.refused_seq))
            return
        if seq <= self.rx_seq:
            for entry in self._received:
                if entry[0] == seq and entry[1] == data:
                    if entry[2] is not None:  # our answer was lost: send it, and what followed it
                        self._out.append(entry[2])
                        self._resend_unacked()
                    return  # a duplicate: answered again, never acted on twice
            return self._refuse(M.FAILED_SequenceError, seq, "sequence number %d was used" % seq)
        # What ends the session may skip a gap (the peer abandoned its open requests when it
        # stopped, so their numbers never come), as may anything once the session is over.
        ended = self.phase == STOPPED
        ending = kind == M.TAG_SESSION_STOP_REQ or (kind in _REQUEST_OF and payload.code != M.OK)
        if seq != self.rx_seq + 1 and not (ended or ending):
            return self._refuse(M.FAILED_SequenceError, seq, "expected sequence number %d" % (self.rx_seq + 1))
        handler = self._handler(kind, payload)
        if handler is None:
            code = M.FAILED_UnknownSession if ended else M.FAILED_SequenceError
            return self._refuse(code, seq, "%s not expected in phase %s" % (M.kind_name(kind), self.state))
        self.rx_seq = seq
        entry = [seq, data, None]
        received = self._received
        received.append(entry)
        if len(received) > RECEIVED_KEPT:
            received.pop(0)
        handler(payload, entry)

    def _handler(self, kind, p):
        """The handler for message ``p`` of ``kind`` if it may come now, else None."""
        phase = self.phase
        request = _REQUEST_OF.get(kind)
        if request is not None:  # a response: only to a request of ours that is open
            if self._pending(request) is None:
                return None
            if kind == M.TAG_INSTALLMENT_RES and p.index != self.installments_paid:
                return None
            return self._on_response
        if kind == M.TAG_SESSION_STOP_REQ:
            return self._on_stop_req
        if phase == STOPPED:
            return self._on_request_after_stop if p.RESPONSE is not None else None
        if kind == M.TAG_PAUSE_REQ:
            return self._on_pause_req if self._established() else None
        if kind == M.TAG_RESUME_REQ:
            if self._established() and not self._owes(M.TAG_RESUME_REQ):
                return self._on_resume_req
            return None
        if kind == M.TAG_CHARGING_STATUS:
            return self._on_charging_status if not self.meters and phase == CHARGING else None
        if kind == M.TAG_INSTALLMENT_REQ:
            if self.producer and phase in (DEPOSIT, INSTALLMENT) and p.index == self.installments_paid:
                return self._on_installment_req
            return None
        if self.INITIATOR:
            return None
        if kind == M.TAG_SESSION_SETUP_REQ:
            return self._on_setup_req if phase == SETUP else None
        if kind == M.TAG_SERVICE_PAYMENT_SELECTION_REQ:
            return self._on_selection_req if phase == SELECTION else None
        if kind == M.TAG_CHARGE_PARAMETER_DISCOVERY_REQ:
            return self._on_discovery_req if phase == DISCOVERY else None
        if kind == M.TAG_POWER_DELIVERY_REQ:
            if (phase == POWER_START and p.start) or (phase == POWER_STOP and not p.start):
                return self._on_power_delivery_req
        return None

    # ---- requests from the peer ------------------------------------------------------

    def _on_setup_req(self, p, entry):
        self.peer_session_key = p.session_key
        self.peer_meter_key = p.meter_key
        self.peer_account = p.account
        self._respond(entry, M.SessionSetupRes(M.OK, self.config.session_key, self.config.meter_key,
                                               self.config.account))
        self._enter(SELECTION)

    def _on_selection_req(self, p, entry):
        if p.payment_mode not in self.config.payment_modes:
            return self._refuse_request(entry, p, M.FAILED_PaymentSelectionInvalid)
        if p.initiator_role == self.role:
            return self._refuse_request(entry, p, M.FAILED_ServiceSelectionInvalid)
        self.payment_mode = p.payment_mode
        self._respond(entry, M.ServicePaymentSelectionRes(M.OK))
        self._enter(DISCOVERY)

    def _on_discovery_req(self, p, entry):
        if p.parameters != self.parameters:
            return self._refuse_request(entry, p, M.FAILED_WrongChargeParameter)
        self._respond(entry, M.ChargeParameterDiscoveryRes(M.OK))
        self._terms_agreed()

    def _on_power_delivery_req(self, p, entry):
        self._respond(entry, M.PowerDeliveryRes(M.OK))
        if p.start:
            self._events.append(E.PowerDeliveryStarted())
            self._enter(CHARGING)
        else:
            self._events.append(E.PowerDeliveryStopped())
            self._enter(SESSION_STOP)

    def _on_charging_status(self, p, entry):
        reading = p.reading
        code = self._reading_problem(reading)
        if code != M.OK:
            return self._refuse_request(entry, p, code)
        self.readings += 1
        self._reading = reading
        self._chain = reading.digest()
        self._owed.append([entry, p])
        self._enter(RECEIPT)
        self._events.append(E.MeterReadingReceived(reading, self.parameters.due_wh(self.readings)))

    def _reading_problem(self, r):
        """The initiator's checks of reading k, cheapest first; OK or the refusal code. (Its
        own measurement is the application's check.)"""
        k = self.readings + 1
        if r.session_id != self.session_id or r.index != k or r.installment != k or r.prev_digest != self._chain:
            return M.FAILED_MeteringSignatureNotValid  # not the next link of this session's chain
        if not signing.verify(self.peer_meter_key, r, r.meter_sig):
            return M.FAILED_MeteringSignatureNotValid
        if r.unit_price != self.parameters.unit_price:
            return M.FAILED_WrongChargeParameter
        if self._reading is not None and r.cumulative_wh < self._reading.cumulative_wh:
            return M.FAILED_MeteringSignatureNotValid  # a meter never runs backwards
        if r.cumulative_wh + self.parameters.tolerance_wh < self.parameters.due_wh(k):
            return M.FAILED_ReceiptMismatch  # less energy than was paid for
        return M.OK

    def _on_installment_req(self, p, entry):
        self._owed.append([entry, p])
        self._enter(INSTALLMENT_ACK)
        self._events.append(E.InstallmentReceived(p.index, p.proof))

    def _on_pause_req(self, p, entry):
        self._respond(entry, M.PauseRes(M.OK))
        if not self.paused:
            self._begin_pause()
            self._events.append(E.Paused(True))

    def _on_resume_req(self, p, entry):
        self._owed.append([entry, p])
        self._events.append(E.ResumeRequested(p.balance))

    def _on_stop_req(self, p, entry):
        self._respond(entry, M.SessionStopRes(M.OK))
        if self.phase != STOPPED:
            self._owed = []
            self._end(p.code, True)

    def _on_request_after_stop(self, p, entry):
        """A peer that missed the end learns it: its request is refused with our stop code."""
        code = self.stop_code if self.stop_code != M.OK else M.FAILED_UnknownSession
        self._respond(entry, p.RESPONSE.refusal(code, p))

    # ---- responses to our requests ---------------------------------------------------

    def _on_response(self, p, entry):
        kind = p.TAG
        self._unacked.pop(self._pending(_REQUEST_OF[kind]))
        if kind == M.TAG_SESSION_STOP_RES:
            return
        if p.code != M.OK:
            self._owed = []
            return self._end(p.code, True)
        if kind == M.TAG_METERING_RECEIPT:
            self._on_receipt(p)
        elif kind == M.TAG_INSTALLMENT_RES:
            self._events.append(E.InstallmentAccepted(p.index, p.proof))
            self._installment_settled()
        elif kind == M.TAG_RESUME_RES:
            self.paused = False
            self._restart_timers()
            self._events.append(E.Resumed(p.balance))
        elif kind == M.TAG_SESSION_SETUP_RES:
            self.peer_session_key = p.session_key
            self.peer_meter_key = p.meter_key
            self.peer_account = p.account
            if len(p.meter_key) != 33:  # a responder that cannot meter cannot serve
                return self._halt(M.FAILED_ServiceSelectionInvalid)
            self._request(M.ServicePaymentSelectionReq(self.config.payment_modes[0], self.role))
            self._enter(SELECTION)
        elif kind == M.TAG_SERVICE_PAYMENT_SELECTION_RES:
            self.payment_mode = self.config.payment_modes[0]
            self._request(M.ChargeParameterDiscoveryReq(self.parameters))
            self._enter(DISCOVERY)
        elif kind == M.TAG_CHARGE_PARAMETER_DISCOVERY_RES:
            self._terms_agreed()
        elif kind == M.TAG_POWER_DELIVERY_RES:
            if self.phase == POWER_START:
                self._events.append(E.PowerDeliveryStarted())
                self._enter(CHARGING)
            else:
                self._events.append(E.PowerDeliveryStopped())
                self._request(M.SessionStopReq(M.OK))
                self._end(M.OK, False)
        # PauseRes: nothing to do, the pause began when it was asked for.

    def _on_receipt(self, p):
        if p.reading_digest != self._chain:
            return self._halt(M.FAILED_ReceiptMismatch)
        receipt = MeterReceipt(self._reading, p.ev_sig)
        if not signing.verify(self.peer_session_key, receipt, receipt.ev_sig):
            return self._halt(M.FAILED_SignatureError)
        self._events.append(E.ReceiptReceived(receipt))
        self._after_receipt()

    # ---- shared steps --------------------------------------------------------------

    def _terms_agreed(self):
        self._enter(DEPOSIT)
        self._events.append(E.TermsAgreed(self.payment_mode, self.role, self.parameters, self.peer_session_key,
                                          self.peer_meter_key, self.peer_account))

    def _after_receipt(self):
        self._enter(INSTALLMENT if self.installments_paid < self.parameters.installments else POWER_STOP)

    def _installment_settled(self):
        self.installments_paid += 1
        self._enter(POWER_START if self.installments_paid == 1 else CHARGING)

    def _enter(self, phase):
        """Move to ``phase``; the initiator asks for power delivery start and stop itself."""
        self.phase = phase
        self._since = self._now
        if self.INITIATOR and phase in (POWER_START, POWER_STOP):
            self._request(M.PowerDeliveryReq(phase == POWER_START))

    def _refuse_request(self, entry, request, code):
        """Answer a peer request with a FAILED code: that ends the session."""
        self._respond(entry, request.RESPONSE.refusal(code, request))
        self._end(code, False)

    def _halt(self, code):
        """End the session from this side. A failure answers the requests the application
        still owed with ``code``; otherwise (nothing owed, or a normal end, which must not
        answer them OK) the peer gets a SessionStopReq."""
        owed = self._owed if code != M.OK else []
        self._owed = []
        for entry, request in owed:
            self._respond(entry, request.RESPONSE.refusal(code, request))
        if not owed:
            self._request(M.SessionStopReq(code))
        self._end(code, False)

    def _end(self, code, by_peer):
        self.phase = STOPPED
        self.stop_code = code
        self.paused = False
        self._unacked = [u for u in self._unacked if u[0] == M.TAG_SESSION_STOP_REQ]
        if self._events is not None:
            self._events.append(E.SessionStopped(code, by_peer))

    def _established(self):
        return self.phase != SETUP and self.phase != STOPPED

    def _peer_turn(self):
        """True when the next request is the peer's (and none of ours is open); CHARGING
        has its own timer."""
        phase = self.phase
        if phase in (DEPOSIT, INSTALLMENT):
            return self.producer
        if phase in (RECEIPT, INSTALLMENT_ACK):
            return False  # one side waits for its response, the other for its application
        return not self.INITIATOR

    def _begin_pause(self):
        """The pause timeout runs from now; the phase's own timer stops where it was."""
        self.paused = True
        self._ran = self._now - self._since
        self._since = self._now

    def _restart_timers(self):
        """After a resume the phase's timer goes on from where the pause stopped it, so
        pausing again and again cannot put off a payment; requests get a fresh response
        timer (they were re-sent)."""
        now = self._now
        self._since = now - self._ran
        self._ran = 0
        for u in self._unacked:
            u[2] = now

    def _resend_unacked(self):
        for u in self._unacked:
            self._out.append(u[1])
            u[3] = self._now

    # ---- output --------------------------------------------------------------------

    def _request(self, payload):
        self.tx_seq += 1
        data = M.encode_message(self.session_id, self.tx_seq, payload)
        self._unacked.append([payload.TAG, data, self._now, self._now])
        self._out.append(data)

    def _respond(self, entry, payload):
        self.tx_seq += 1
        data = M.encode_message(self.session_id, self.tx_seq, payload)
        entry[2] = data
        self._out.append(data)

    def _refuse(self, code, seq, reason, session_id=None):
        """Answer input that is not acted on with a Notice; nothing else changes."""
        self._out.append(M.encode_message(session_id or self.session_id, 0, M.Notice(code, seq)))
        self._events.append(E.MessageRefused(code, seq, reason))

    def _pending(self, kind):
        """Index of our open request of ``kind`` in ``_unacked``, or None."""
        for i, u in enumerate(self._unacked):
            if u[0] == kind:
                return i
        return None

    def _owes(self, kind):
        for entry, request in self._owed:
            if request.TAG == kind:
                return True
        return False

    def _take_owed(self, kind, what):
        for i, item in enumerate(self._owed):
            if item[1].TAG == kind:
                self._owed.pop(i)
                return item[0]
        raise LocalProtocolError("cannot %s now: nothing to answer (phase %s)" % (what, self.state))

    def _require(self, allowed, what):
        if not allowed:
            raise LocalProtocolError("cannot %s in phase %s%s" % (what, self.state, " (paused)" if self.paused else ""))


class Initiator(_Link):
    """The EVCC end: it opens the session (its SessionSetupReq is queued at once) and asks
    for power delivery start and stop and the normal session stop."""

    INITIATOR = True

    def __init__(self, config, now):
        _Link.__init__(self, config, now)
        self._request(M.SessionSetupReq(config.session_key, config.meter_key, config.account))


class Responder(_Link):
    """The SECC end: it meters, answers setup with its own terms and refuses others'; its
    sequence timeout runs from ``now``."""

    def __init__(self, config, now):
        if len(config.meter_key) != 33:
            raise ValueError("the responder meters: its meter key is needed")
        _Link.__init__(self, config, now)
