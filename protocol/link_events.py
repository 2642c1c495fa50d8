"""What the link state machines report to the application (the wallet and role layer).

``receive()`` and ``tick()`` return a list of these; the application answers the ones that
need a payment decision through the machine's methods (named in each docstring). Local
calls return nothing: the application already knows what it did.
"""
from .link_messages import code_name


class Event:
    FIELDS = ()

    def __repr__(self):
        parts = []
        for name in self.FIELDS:
            v = getattr(self, name)
            parts.append(name + "=" + (v.hex() if isinstance(v, bytes) else repr(v)))
        return type(self).__name__ + "(" + ", ".join(parts) + ")"


class TermsAgreed(Event):
    """Setup is done: both sides agree on mode, roles and charge parameters. The consumer
    now locks its deposit and answers with ``send_installment(proof)`` (installment 0)."""

    FIELDS = ("payment_mode", "role", "parameters", "peer_session_key", "peer_meter_key", "peer_account")

    def __init__(self, payment_mode, role, parameters, peer_session_key, peer_meter_key, peer_account=b""):
        self.payment_mode = payment_mode
        self.role = role
        self.parameters = parameters
        self.peer_session_key = peer_session_key
        self.peer_meter_key = peer_meter_key
        self.peer_account = peer_account


class InstallmentReceived(Event):
    """Producer: installment ``index`` arrived. Answer ``accept_installment(proof)`` after
    the wallet checked it, or ``stop(code)``."""

    FIELDS = ("index", "proof")

    def __init__(self, index, proof):
        self.index = index
        self.proof = proof


class InstallmentAccepted(Event):
    """Consumer: the producer accepted installment ``index``; ``proof`` is its
    counter-signature (a channel's co-signed state), to keep as the latest balance."""

    FIELDS = ("index", "proof")

    def __init__(self, index, proof):
        self.index = index
        self.proof = proof


class PowerDeliveryStarted(Event):
    """The producer may now deliver the first e/N of energy."""


class PowerDeliveryStopped(Event):
    """All N readings are receipted: energy stops, the session ends next."""


class MeterReadingReceived(Event):
    """Consumer: a reading whose signature, chain, price and due energy the link checked.
    Compare it with your own measurement, then ``send_receipt(ev_sig)`` or ``stop(code)``."""

    FIELDS = ("reading", "due_wh")

    def __init__(self, reading, due_wh):
        self.reading = reading
        self.due_wh = due_wh


class ReceiptReceived(Event):
    """Producer: the consumer's verified counter-signature of the last reading."""

    FIELDS = ("receipt",)

    def __init__(self, receipt):
        self.receipt = receipt


class Paused(Event):
    """The peer paused the session: no energy and no payment until a resume."""

    FIELDS = ("by_peer",)

    def __init__(self, by_peer):
        self.by_peer = by_peer


class ResumeRequested(Event):
    """The peer wants to resume and names its latest co-signed balance. Answer
    ``accept_resume(own_balance)`` if it matches the wallet's, else ``stop(code)``."""

    FIELDS = ("balance",)

    def __init__(self, balance):
        self.balance = balance


class Resumed(Event):
    """The peer accepted our resume; ``balance`` is its latest co-signed balance."""

    FIELDS = ("balance",)

    def __init__(self, balance):
        self.balance = balance


class Timeout(Event):
    """Nothing came in time; a ``SessionStopped`` with ``code`` follows."""

    FIELDS = ("code", "waiting_for")

    def __init__(self, code, waiting_for):
        self.code = code
        self.waiting_for = waiting_for

    def __repr__(self):
        return "Timeout(%s, waiting_for=%s)" % (code_name(self.code), self.waiting_for)


class SessionStopped(Event):
    """The session is over: ``code`` is OK for a normal end, else the reason;
    ``by_peer`` tells whether the peer ended it."""

    FIELDS = ("code", "by_peer")

    def __init__(self, code, by_peer):
        self.code = code
        self.by_peer = by_peer

    def __repr__(self):
        return "SessionStopped(%s, by_peer=%r)" % (code_name(self.code), self.by_peer)


class MessageRefused(Event):
    """Input refused and not acted on (a ``Notice`` with ``code`` went back).
    ``seq`` is the refused sequence number (0 if unknown), ``reason`` says why."""

    FIELDS = ("code", "seq", "reason")

    def __init__(self, code, seq, reason):
        self.code = code
        self.seq = seq
        self.reason = reason

    def __repr__(self):
        return "MessageRefused(%s, seq=%d, %s)" % (code_name(self.code), self.seq, self.reason)


class PeerRefused(Event):
    """The peer's ``Notice``: it refused our message ``seq`` with ``code``. Unsequenced
    and unauthenticated, so informational only."""

    FIELDS = ("code", "seq")

    def __init__(self, code, seq):
        self.code = code
        self.seq = seq
