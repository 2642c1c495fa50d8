"""Link messages: stable codes and kinds, strict payloads, the envelope, per-session topics."""
import pytest

from plugpay.protocol import codec, link, topics
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.structures import MeterReading

SESSION = bytes(range(16))
KEY = bytes([2]) + bytes(range(32))
READING = MeterReading(SESSION, 1, 500, 350, 1, bytes(32), 1790000000, bytes([1]) * 64)
PARAMS = M.ChargeParameters(2000, 100, 200, 11000, 350, 4, 5)


def samples():
    return [
        M.SessionSetupReq(KEY, b"", b""),
        M.SessionSetupRes(M.OK, KEY, KEY, bytes(105)),
        M.SessionSetupRes(M.FAILED, b"", b"", b""),
        M.ServicePaymentSelectionReq(M.MODE_HTLC, M.ROLE_CONSUMER),
        M.ServicePaymentSelectionRes(M.FAILED_PaymentSelectionInvalid),
        M.ChargeParameterDiscoveryReq(PARAMS),
        M.ChargeParameterDiscoveryRes(M.OK),
        M.PowerDeliveryReq(True),
        M.PowerDeliveryRes(M.OK),
        M.ChargingStatus(READING),
        M.MeteringReceipt(M.OK, bytes(32), bytes([3]) * 64),
        M.InstallmentReq(0, b"deposit"),
        M.InstallmentRes(M.OK, 0, b"co-signed"),
        M.PauseReq(),
        M.PauseRes(M.OK),
        M.ResumeReq(b"balance"),
        M.ResumeRes(M.OK, b"balance"),
        M.SessionStopReq(M.FAILED_Timeout),
        M.SessionStopRes(M.OK),
        M.Notice(M.FAILED_SequenceError, 7),
    ]


def test_codes_are_stable_numbers_with_iso_names():
    expected = {
        "OK": 0, "FAILED": 1, "FAILED_SequenceError": 2, "FAILED_UnknownSession": 3,
        "FAILED_SignatureError": 4, "FAILED_MeteringSignatureNotValid": 5,
        "FAILED_WrongChargeParameter": 6, "FAILED_Timeout": 7, "FAILED_ServiceSelectionInvalid": 8,
        "FAILED_PaymentSelectionInvalid": 9, "FAILED_PaymentOverdue": 10,
        "FAILED_UnpaidOverLimit": 11, "FAILED_ReceiptMismatch": 12,
    }
    for name, number in expected.items():
        assert getattr(M, name) == number
        assert M.code_name(number) == name
    assert M.code_name(99) == "UNKNOWN_99"
    assert M.code_name(True) == "UNKNOWN_True"


def test_kinds_are_tags_in_the_link_range_and_unique():
    tags = [cls.TAG for cls in M.PAYLOADS]
    assert len(set(tags)) == len(tags) == 19
    assert all(64 <= t <= 95 for t in tags)
    requests = [cls for cls in M.PAYLOADS if cls.RESPONSE is not None]
    assert len(requests) == 9
    for cls in requests:
        assert cls.RESPONSE.FIELDS[0][0] == "code"  # every response starts with its code


@pytest.mark.parametrize("payload", samples(), ids=lambda p: p.NAME)
def test_every_payload_round_trips_in_an_envelope(payload):
    data = M.encode_message(SESSION, 5, payload)
    envelope, back = M.decode_message(data)
    assert (envelope.session_id, envelope.seq, envelope.kind) == (SESSION, 5, payload.TAG)
    assert back == payload and type(back) is type(payload)
    assert M.encode_message(SESSION, 5, back) == data


def test_a_charging_status_is_small():
    assert len(M.encode_message(SESSION, 5, M.ChargingStatus(READING))) < 200


def test_kind_and_payload_tag_must_agree():
    value = codec.loads(M.encode_message(SESSION, 1, M.PauseRes(M.OK)))
    value[4] = M.TAG_SESSION_STOP_RES  # same shape, other kind
    with pytest.raises(DecodeError) as e:
        M.decode_message(codec.dumps(value))
    assert "type tag" in e.value.reason


def test_unknown_kind_and_oversize_are_refused():
    value = codec.loads(M.encode_message(SESSION, 1, M.PauseReq()))
    value[4] = 95
    with pytest.raises(DecodeError) as e:
        M.decode_message(codec.dumps(value))
    assert e.value.field == "link_message.kind"
    big = M.encode_message(SESSION, 1, M.ResumeReq(b"x" * M.MAX_PROOF_BYTES))
    assert len(big) < M.MAX_LINK_BYTES
    with pytest.raises(DecodeError):
        M.decode_message(big + bytes(M.MAX_LINK_BYTES))


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: M.ServicePaymentSelectionReq(3, M.ROLE_PRODUCER), "payment_mode"),
        (lambda: M.ServicePaymentSelectionReq(M.MODE_HTLC, 0), "initiator_role"),
        (lambda: M.SessionSetupReq(bytes([4]) + bytes(32), b"", b""), "session_key"),
        (lambda: M.SessionSetupRes(M.OK, b"", b"", b""), "session_key"),
        (lambda: M.ChargeParameters(3, 100, 200, 11000, 350, 4, 0), "installments"),
        (lambda: M.ChargeParameters(2000, 200, 200, 11000, 350, 4, 0), "window_end"),
        (lambda: M.ChargeParameters(2000, 100, 200, 0, 350, 4, 0), "max_power_w"),
        (lambda: M.InstallmentReq(0, b"x" * (M.MAX_PROOF_BYTES + 1)), "proof"),
        (lambda: M.PowerDeliveryReq(1), "start"),
    ],
)
def test_payload_fields_are_checked(build, field):
    with pytest.raises(DecodeError) as e:
        build()
    assert e.value.field.endswith(field)


def test_due_energy_is_integer_and_reaches_the_total():
    params = M.ChargeParameters(1000, 100, 200, 11000, 350, 3, 0)
    assert [params.due_wh(k) for k in range(4)] == [0, 333, 666, 1000]


def test_link_topics_are_per_session_and_per_direction():
    a = link.new_session_id()
    b = link.new_session_id()
    assert a != b and len(a) == 16
    to_responder, to_initiator = topics.link_topics(a)
    assert to_responder != to_initiator
    assert to_responder == "plugpay/link/" + a.hex() + "/to-responder"
    assert set(topics.link_topics(a)).isdisjoint(topics.link_topics(b))
    assert topics.parse(to_responder) is None  # not a gateway topic
    with pytest.raises(ValueError):
        topics.link_topics(b"short")
