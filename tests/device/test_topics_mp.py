"""Gateway topics and the faucet request under the real MicroPython: what a device builds."""
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import topics
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError


def test_topics_build_and_parse():
    t = topics.topic(topics.LEDGER_SUBMIT, "ev-42")
    assert t == "plugpay/ledger/submit/ev-42"
    assert topics.parse(t) == (topics.LEDGER_SUBMIT, "ev-42")
    assert topics.parse(b"plugpay/host/sealed-reply/ev-42") == (topics.HOST_SEALED_REPLY, "ev-42")  # umqtt: bytes
    assert topics.reply_topic(topics.HOST_SEALED, "ev-42") == "plugpay/host/sealed-reply/ev-42"
    assert topics.parse("plugpay/ra/register/ev-42") is None and topics.parse("plugpay/faucet/request/ev") is None
    for bad in ("plugpay/ledger/submit/", "plugpay/ledger/submit/a b", "plugpay/x/ev", "other/ledger/submit/ev",
                "plugpay/ledger/submit/" + "x" * 41, b"plugpay/ledger/submit/\xff"):
        assert topics.parse(bad) is None, bad
    try:
        topics.topic(topics.LEDGER_SUBMIT, "a/b")
        raise AssertionError("built a topic with a '/' in the client id")
    except ValueError:
        pass


def test_faucet_request_round_trips_and_is_no_ledger_op():
    account = S.Account(bytes([2]) + bytes([7]) * 32, 0, bytes([7]) * 64)
    request = L.FaucetRequest(5, [S.TxOutput(account, 1000)])
    raw = request.encode()
    assert L.FaucetRequest.decode(raw) == request and codec.loads(raw)[0] == L.TAG_FAUCET_REQUEST
    try:
        L.decode_request(raw)
        raise AssertionError("a faucet request decoded as a ledger operation")
    except L.UnknownOp:
        pass
    try:
        L.FaucetRequest(5, [S.TxOutput(account, 1)] * (L.MAX_FAUCET_OUTPUTS + 1))
        raise AssertionError("accepted too many outputs")
    except DecodeError:
        pass
