"""The messages of the charging link: kinds, payloads and response codes.

Every link message is a ``structures.LinkMessage`` envelope (session id, per-direction
sequence number, kind, payload). The payload is one of the structures below; its type tag
*is* the message kind, so the envelope's kind and the payload's tag must agree.

Tags 64-95 are the link's (kinds 64-82 are used). Elsewhere: 1-7 signed structures,
16-31 ledger requests and results, 40-42 RA messages.

Requests and their responses follow ISO 15118-2's names where one exists; every response
starts with a response code. Unlike ISO 15118, where the EVCC always asks, the charging loop
is driven by the meter and the roles: the responder (SECC, the charger) sends each reading
of its meter (``ChargingStatus``), the initiator (the vehicle) answers with its
counter-signature (``MeteringReceipt``), and the consumer pays with an ``InstallmentReq``
that the producer answers. Payment proofs (a signed channel state, an
HTLC preimage) and balances are opaque bytes here: the wallet checks them, not the link.
"""
from . import codec
from .codec import DecodeError
from .ledger_ops import MAX_INSTALLMENTS
from .port import const
from .schema import BOOL, SIG, U16, U64, U8, Bytes, Nested, Record, Struct, UInt
from .structures import HASH, SESSION_ID, TAG_LINK_MESSAGE, LinkMessage, MeterReading

MAX_LINK_BYTES = const(12800)
# A fully signed ChannelState is ~230 bytes and an HTLC's r 32, but an HTLC series' deposit
# carries 96 bytes of terms per HTLC (hashlock and payer signature): up to ~120 HTLCs.
MAX_PROOF_BYTES = const(12288)
SESSION_ID_BYTES = SESSION_ID.max

# Response codes: stable numbers, they are on the wire.
OK = const(0)
FAILED = const(1)  # malformed bytes, or a refusal with no more specific code
FAILED_SequenceError = const(2)  # out of order, replayed, or a gap in sequence numbers
FAILED_UnknownSession = const(3)
FAILED_SignatureError = const(4)  # a counter-signature (receipt) that does not verify
FAILED_MeteringSignatureNotValid = const(5)  # bad meter signature or broken reading chain
FAILED_WrongChargeParameter = const(6)
FAILED_Timeout = const(7)
FAILED_ServiceSelectionInvalid = const(8)  # the roles do not fit (both producer, no meter)
FAILED_PaymentSelectionInvalid = const(9)  # payment mode not offered
FAILED_PaymentOverdue = const(10)  # an installment did not come in time
FAILED_UnpaidOverLimit = const(11)  # the unpaid amount exceeds what was agreed
FAILED_ReceiptMismatch = const(12)  # reading and receipt (or measurement) disagree

_CODE_NAMES = (
    "OK",
    "FAILED",
    "FAILED_SequenceError",
    "FAILED_UnknownSession",
    "FAILED_SignatureError",
    "FAILED_MeteringSignatureNotValid",
    "FAILED_WrongChargeParameter",
    "FAILED_Timeout",
    "FAILED_ServiceSelectionInvalid",
    "FAILED_PaymentSelectionInvalid",
    "FAILED_PaymentOverdue",
    "FAILED_UnpaidOverLimit",
    "FAILED_ReceiptMismatch",
)


def code_name(code):
    """The ISO 15118-style name of a response code (``UNKNOWN_<n>`` for others)."""
    if type(code) is int and 0 <= code < len(_CODE_NAMES):
        return _CODE_NAMES[code]
    return "UNKNOWN_%r" % (code,)


MODE_STATE_CHANNEL = const(1)
MODE_HTLC = const(2)
ROLE_PRODUCER = const(1)
ROLE_CONSUMER = const(2)

CODE = U16
PUBKEY = Bytes(33)
OPTIONAL_PUBKEY = Bytes(max=33)  # empty when the side has no meter, or in a refusal
ACCOUNT = Bytes(max=128)  # the producer's encoded payee Account; empty from the consumer
PROOF = Bytes(max=MAX_PROOF_BYTES)

TAG_SESSION_SETUP_REQ = const(64)
TAG_SESSION_SETUP_RES = const(65)
TAG_SERVICE_PAYMENT_SELECTION_REQ = const(66)
TAG_SERVICE_PAYMENT_SELECTION_RES = const(67)
TAG_CHARGE_PARAMETER_DISCOVERY_REQ = const(68)
TAG_CHARGE_PARAMETER_DISCOVERY_RES = const(69)
TAG_POWER_DELIVERY_REQ = const(70)
TAG_POWER_DELIVERY_RES = const(71)
TAG_CHARGING_STATUS = const(72)
TAG_METERING_RECEIPT = const(73)
TAG_INSTALLMENT_REQ = const(74)
TAG_INSTALLMENT_RES = const(75)
TAG_PAUSE_REQ = const(76)
TAG_PAUSE_RES = const(77)
TAG_RESUME_REQ = const(78)
TAG_RESUME_RES = const(79)
TAG_SESSION_STOP_REQ = const(80)
TAG_SESSION_STOP_RES = const(81)
TAG_NOTICE = const(82)


def _check_key(value, path):
    if len(value) and value[0] not in (2, 3):
        raise DecodeError(path, "not a compressed public key (prefix 02 or 03)")


class ChargeParameters(Record):
    """What both sides agreed in the market: energy, time window (Unix seconds), the
    producer's maximum power, unit price per kWh, number of installments N and the metering
    tolerance in Wh. Reading k is due ``k * energy_wh // N`` Wh."""

    NAME = "charge_parameters"
    FIELDS = (
        ("energy_wh", U64),
        ("window_start", U64),
        ("window_end", U64),
        ("max_power_w", U64),
        ("unit_price", U64),
        ("installments", UInt(MAX_INSTALLMENTS)),
        ("tolerance_wh", U64),
    )

    def validate(self, path):
        if self.installments < 1 or self.installments > self.energy_wh:
            raise DecodeError(path + ".installments", "must be 1..energy_wh")
        if self.window_start >= self.window_end:
            raise DecodeError(path + ".window_end", "the window ends before it starts")
        if self.max_power_w < 1:
            raise DecodeError(path + ".max_power_w", "must be at least 1 W")

    def due_wh(self, k):
        """Cumulative energy the k-th reading must reach."""
        return k * self.energy_wh // self.installments


class _Payload(Struct):
    """A link payload. ``RESPONSE`` is the response class of a request, None otherwise."""

    RESPONSE = None


# Responses first: each request names its response class.


class SessionSetupRes(_Payload):
    """The responder's one-time session key, its meter key if it meters, and its payee
    account if it produces."""

    NAME = "session_setup_res"
    TAG = TAG_SESSION_SETUP_RES
    FIELDS = (("code", CODE), ("session_key", OPTIONAL_PUBKEY), ("meter_key", OPTIONAL_PUBKEY), ("account", ACCOUNT))

    def validate(self, path):
        _check_key(self.session_key, path + ".session_key")
        _check_key(self.meter_key, path + ".meter_key")
        if self.code == OK and len(self.session_key) != 33:
            raise DecodeError(path + ".session_key", "an accepted setup names the session key")

    @classmethod
    def refusal(cls, code, request):
        return cls(code, b"", b"", b"")


class _CodeOnly(_Payload):
    FIELDS = (("code", CODE),)

    @classmethod
    def refusal(cls, code, request):
        return cls(code)


class ServicePaymentSelectionRes(_CodeOnly):
    NAME = "service_payment_selection_res"
    TAG = TAG_SERVICE_PAYMENT_SELECTION_RES


class ChargeParameterDiscoveryRes(_CodeOnly):
    NAME = "charge_parameter_discovery_res"
    TAG = TAG_CHARGE_PARAMETER_DISCOVERY_RES


class PowerDeliveryRes(_CodeOnly):
    NAME = "power_delivery_res"
    TAG = TAG_POWER_DELIVERY_RES


class PauseRes(_CodeOnly):
    NAME = "pause_res"
    TAG = TAG_PAUSE_RES


class SessionStopRes(_CodeOnly):
    NAME = "session_stop_res"
    TAG = TAG_SESSION_STOP_RES


class MeteringReceipt(_Payload):
    """The initiator's answer to a reading: the reading's digest and its signature over
    ``MeterReceipt(reading, b"")``. The responder, who sent the reading, rebuilds the
    full ``MeterReceipt`` from these; a refusal carries zeros and no signature."""

    NAME = "metering_receipt"
    TAG = TAG_METERING_RECEIPT
    FIELDS = (("code", CODE), ("reading_digest", HASH), ("ev_sig", SIG))

    @classmethod
    def refusal(cls, code, request):
        return cls(code, bytes(32), b"")


class InstallmentRes(_Payload):
    """The producer's answer to installment ``index``: on OK its proof (for a channel, the
    counter-signed state: the latest co-signed balance), empty for an HTLC."""

    NAME = "installment_res"
    TAG = TAG_INSTALLMENT_RES
    FIELDS = (("code", CODE), ("index", UInt(MAX_INSTALLMENTS)), ("proof", PROOF))

    @classmethod
    def refusal(cls, code, request):
        return cls(code, request.index, b"")


class ResumeRes(_Payload):
    """The answering side's latest co-signed balance, for its peer to compare."""

    NAME = "resume_res"
    TAG = TAG_RESUME_RES
    FIELDS = (("code", CODE), ("balance", PROOF))

    @classmethod
    def refusal(cls, code, request):
        return cls(code, b"")


class SessionSetupReq(_Payload):
    """The initiator's one-time session key (it signs receipts if the initiator consumes),
    its meter key (empty if it does not meter) and its payee account (an encoded
    ``Account``, empty unless it produces: the consumer's deposit pays it)."""

    NAME = "session_setup_req"
    TAG = TAG_SESSION_SETUP_REQ
    FIELDS = (("session_key", PUBKEY), ("meter_key", OPTIONAL_PUBKEY), ("account", ACCOUNT))
    RESPONSE = SessionSetupRes

    def validate(self, path):
        _check_key(self.session_key, path + ".session_key")
        _check_key(self.meter_key, path + ".meter_key")


class ServicePaymentSelectionReq(_Payload):
    """Payment mode (state channel or HTLC series) and the role the initiator plays; the
    responder plays the other one, whoever produces (G2V, V2G, V2V)."""

    NAME = "service_payment_selection_req"
    TAG = TAG_SERVICE_PAYMENT_SELECTION_REQ
    FIELDS = (("payment_mode", U8), ("initiator_role", U8))
    RESPONSE = ServicePaymentSelectionRes

    def validate(self, path):
        if self.payment_mode not in (MODE_STATE_CHANNEL, MODE_HTLC):
            raise DecodeError(path + ".payment_mode", "unknown payment mode %d" % self.payment_mode)
        if self.initiator_role not in (ROLE_PRODUCER, ROLE_CONSUMER):
            raise DecodeError(path + ".initiator_role", "unknown role %d" % self.initiator_role)


class ChargeParameterDiscoveryReq(_Payload):
    NAME = "charge_parameter_discovery_req"
    TAG = TAG_CHARGE_PARAMETER_DISCOVERY_REQ
    FIELDS = (("parameters", Nested(ChargeParameters)),)
    RESPONSE = ChargeParameterDiscoveryRes


class PowerDeliveryReq(_Payload):
    NAME = "power_delivery_req"
    TAG = TAG_POWER_DELIVERY_REQ
    FIELDS = (("start", BOOL),)
    RESPONSE = PowerDeliveryRes


class ChargingStatus(_Payload):
    """The responder's meter reading after each e/N of energy, signed by the meter."""

    NAME = "charging_status"
    TAG = TAG_CHARGING_STATUS
    FIELDS = (("reading", Nested(MeterReading)),)
    RESPONSE = MeteringReceipt


class InstallmentReq(_Payload):
    """Installment ``index`` (0 is the deposit) with its payment proof."""

    NAME = "installment_req"
    TAG = TAG_INSTALLMENT_REQ
    FIELDS = (("index", UInt(MAX_INSTALLMENTS)), ("proof", PROOF))
    RESPONSE = InstallmentRes


class PauseReq(_Payload):
    NAME = "pause_req"
    TAG = TAG_PAUSE_REQ
    FIELDS = ()
    RESPONSE = PauseRes


class ResumeReq(_Payload):
    """Resumes a paused session; carries the sender's latest co-signed balance."""

    NAME = "resume_req"
    TAG = TAG_RESUME_REQ
    FIELDS = (("balance", PROOF),)
    RESPONSE = ResumeRes


class SessionStopReq(_Payload):
    """Ends the session, OK for a normal end, else the reason."""

    NAME = "session_stop_req"
    TAG = TAG_SESSION_STOP_REQ
    FIELDS = (("code", CODE),)
    RESPONSE = SessionStopRes


class Notice(_Payload):
    """A refusal of bytes that were never acted on (malformed, unknown session, out of
    order, replayed). Sent with sequence number 0, outside both sequences, and never
    answered, so two machines cannot refuse each other in a loop."""

    NAME = "notice"
    TAG = TAG_NOTICE
    FIELDS = (("code", CODE), ("refused_seq", U64))


PAYLOADS = (
    SessionSetupReq,
    SessionSetupRes,
    ServicePaymentSelectionReq,
    ServicePaymentSelectionRes,
    ChargeParameterDiscoveryReq,
    ChargeParameterDiscoveryRes,
    PowerDeliveryReq,
    PowerDeliveryRes,
    ChargingStatus,
    MeteringReceipt,
    InstallmentReq,
    InstallmentRes,
    PauseReq,
    PauseRes,
    ResumeReq,
    ResumeRes,
    SessionStopReq,
    SessionStopRes,
    Notice,
)
_BY_KIND = {}
for _cls in PAYLOADS:
    _BY_KIND[_cls.TAG] = _cls


def kind_name(kind):
    cls = _BY_KIND.get(kind)
    return cls.NAME if cls is not None else "kind_%r" % (kind,)


def encode_message(session_id, seq, payload):
    """The bytes of one link message (the envelope built directly, without a
    ``LinkMessage`` object: one list and one encode per message)."""
    return codec.dumps([TAG_LINK_MESSAGE, LinkMessage.VERSION, session_id, seq, payload.TAG, payload.to_value()])


def decode_message(data):
    """Strictly decode untrusted bytes into ``(envelope, payload)`` or raise ``DecodeError``."""
    envelope = LinkMessage.from_value(codec.loads(data, "link_message", MAX_LINK_BYTES))
    cls = _BY_KIND.get(envelope.kind)
    if cls is None:
        raise DecodeError("link_message.kind", "unknown message kind %d" % envelope.kind)
    return envelope, cls.from_value(envelope.payload, "link_message.payload")
