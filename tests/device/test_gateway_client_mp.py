"""The device's request bookkeeping (``gateway_client.Requests``) and blocking client under
the real MicroPython: topics, keys, matching answers, opening sealed ones, dropping bad ones,
re-sending. The ledger, gateway and RA are host code (tests/test_device_mqtt.py runs them
for real); here their answers are the structures they send, sealed as the host seals them."""
from plugpay.firmware.gateway_client import GatewayClient, GatewayError, GatewayRefused, Requests, newest_ra_key
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import sealed, signing, topics
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256

DEVICE_SECRET = sha256(b"device key of the gateway client test")
RA_SECRET = sha256(b"the test RA")
RA_PUBKEYS = {0: signing.public_key(sha256(b"the RA's old key")), 1: signing.public_key(RA_SECRET)}


def _ra_secret(epoch):
    return RA_SECRET if epoch == 1 else None


def _registration(count):
    pubkeys = [signing.public_key(sha256(bytes([i]))) for i in range(count)]
    return ra.make_request(bytes(16), DEVICE_SECRET, pubkeys)


def test_random_client_ids_and_reply_topics():
    a, b = Requests(), Requests()
    assert a.cid != b.cid and topics.valid_client_id(a.cid)
    assert sorted(a.subscriptions()) == ["plugpay/host/sealed-reply/" + a.cid, "plugpay/ledger/result/" + a.cid]
    for bad in ("", "a/b", "x" * 41):
        try:
            Requests(bad)
            raise AssertionError("accepted client id %r" % bad)
        except ValueError:
            pass


def test_ledger_requests_are_keyed_by_digest_and_answered_once():
    r = Requests("ev-1")
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    topic, payload, key = r.query(query)
    assert (topic, payload, key) == ("plugpay/ledger/query/ev-1", query, sha256(query))
    assert r.submit(b"\x83\x02")[0] == "plugpay/ledger/submit/ev-1"
    assert len(r.pending()) == 2
    answer = L.Result(sha256(query), False, L.NOT_FOUND, "no such tx", None)
    got = r.on_message(b"plugpay/ledger/result/ev-1", answer.encode())  # umqtt gives bytes topics
    assert got[0] == key and got[1] == answer
    assert r.on_message("plugpay/ledger/result/ev-1", answer.encode()) is None  # only once
    assert r.dropped["not_awaited"] == 1 and r.answered == 1 and len(r.pending()) == 1
    r.cancel(sha256(b"\x83\x02"))
    assert r.pending() == []


def test_sealed_requests_are_keyed_by_digest_and_opened_with_their_key():
    r = Requests("ev-2")
    request = _registration(2)
    epoch, pubkey = newest_ra_key(RA_PUBKEYS)
    topic, payload, key = r.sealed(request.encode(), epoch, pubkey)
    assert topic == "plugpay/host/sealed/ev-2" and key == sha256(payload) and epoch == 1
    assert request.encode() not in payload and r.pending() == [(topic, payload, key)]  # re-sent as is
    inner, host_key = sealed.open_request(payload, _ra_secret)
    assert inner == request.encode()
    sigs = [signing.sign(RA_SECRET, S.Account(pk, 1, b"")) for pk in request.pubkeys]
    response = ra.RegistrationResponse(request.nonce, 1, sigs).encode()
    reply = sealed.seal_reply(host_key, response)
    # on the wrong reply topic, forged, or for another request: dropped, still waiting
    assert r.on_message("plugpay/ledger/result/ev-2", reply) is None
    forged = sealed.seal_reply(sealed.ReplyKey(sha256(b"a guess"), key), b"forged")
    assert r.on_message("plugpay/host/sealed-reply/ev-2", forged) is None
    stranger = sealed.refusal(b"another request", sealed.MALFORMED, "x")
    assert r.on_message("plugpay/host/sealed-reply/ev-2", stranger) is None
    assert r.dropped == {"malformed": 2, "not_awaited": 1, "other_topic": 0} and len(r.pending()) == 1
    assert r.on_message("plugpay/host/sealed-reply/ev-2", reply) == (key, response)
    assert r.pending() == []


def test_a_clear_refusal_answers_the_sealed_request_as_a_refusal():
    r = Requests("ev-3")
    _, payload, key = r.sealed(b"inner", *newest_ra_key(RA_PUBKEYS))
    got = r.on_message("plugpay/host/sealed-reply/ev-3", sealed.refusal(payload, sealed.UNKNOWN_EPOCH, "old key"))
    assert got[0] == key and isinstance(got[1], sealed.SealedRefused) and got[1].code == sealed.UNKNOWN_EPOCH
    try:
        newest_ra_key({})
        raise AssertionError("sealed to no key")
    except ValueError:
        pass


def test_bad_answers_are_counted_and_dropped():
    r = Requests("ev-4")
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    r.query(query)
    good = L.Result(sha256(query), True, L.OK, "", [1, 2]).encode()
    for topic, payload in (("plugpay/ledger/result/ev-4", b""), ("plugpay/ledger/result/ev-4", b"\xff\x00"),
                           ("plugpay/ledger/result/ev-4", good[:-1]), ("plugpay/ledger/result/ev-4", b"\xa0"),
                           ("plugpay/host/sealed-reply/ev-4", b"junk")):
        assert r.on_message(topic, payload) is None
    for topic in ("plugpay/ledger/result/ev-5", "plugpay/ledger/submit/ev-4", "elsewhere", b"\xff\xfe"):
        assert r.on_message(topic, good) is None
    # nothing sealed waits: a sealed reply is not awaited, whatever it holds
    assert r.dropped == {"malformed": 4, "other_topic": 4, "not_awaited": 1}
    assert len(r.pending()) == 1
    assert r.on_message("plugpay/ledger/result/ev-4", good)[1].data == [1, 2]


class _Host:
    """An ``Mqtt`` stand-in with the gateway behind it: the first poll loses the connection
    (a reconnect), and each sealed request is answered by ``serve(inner) -> inner reply``
    once it was sent twice, so the answer shows the re-sent bytes were the same."""

    url = "mqtt://fake:1883"
    client_id = "fake-device-1"
    connected = True

    def __init__(self, serve):
        self.serve = serve
        self.connects = 1
        self.sent = []
        self.polls = 0

    def subscribe(self, topic, qos=0):
        pass

    def publish(self, topic, payload, qos=0):
        self.sent.append((topic, payload))
        return True

    def poll(self, ms):
        self.polls += 1
        if self.polls == 1:
            self.connects += 1
            return []
        topic, payload = self.sent[-1]
        if len(self.sent) < 2 or self.sent[-2] != (topic, payload):
            return []
        inner, host_key = sealed.open_request(payload, _ra_secret)
        answer = self.serve(inner)
        reply = sealed.refusal(payload, answer.code, answer.text) if isinstance(answer, sealed.SealedRefused) \
            else sealed.seal_reply(host_key, answer)
        return [(topics.topic(topics.HOST_SEALED_REPLY, topic.rsplit("/", 1)[1]), reply)]


def test_the_client_resends_the_same_sealed_bytes_after_a_reconnect():
    request = _registration(1).encode()
    host = _Host(lambda inner: b"the RA's answer to " + inner)
    client = GatewayClient(host, cid="ev-6", resend_ms=60000)
    assert client.register(request, RA_PUBKEYS, timeout_ms=5000) == b"the RA's answer to " + request
    assert len(host.sent) == 2 and host.sent[0] == host.sent[1] and host.sent[0][0] == "plugpay/host/sealed/ev-6"
    assert client.requests.pending() == []

    account = S.Account(signing.public_key(DEVICE_SECRET), 1, bytes(64))

    def mint(inner):
        ask = L.FaucetRequest.decode(inner)
        return L.Result(sha256(inner), True, L.OK, "", [sha256(bytes([i])) for i in range(len(ask.outputs))]).encode()

    result = GatewayClient(_Host(mint), resend_ms=60000).faucet([S.TxOutput(account, 5)] * 2, RA_PUBKEYS, 5000)
    assert result.ok and result.data == [sha256(b"\x00"), sha256(b"\x01")]
    try:
        GatewayClient(_Host(lambda inner: sealed.SealedRefused(sealed.UNKNOWN_KIND, "no faucet here")),
                      resend_ms=60000).faucet([S.TxOutput(account, 5)], RA_PUBKEYS, 5000)
        raise AssertionError("a refusal came back as an answer")
    except GatewayRefused as e:
        assert e.refusal.code == sealed.UNKNOWN_KIND and "faucet request" in str(e) and "no faucet here" in str(e)
    try:
        GatewayClient(_Host(lambda inner: L.Result(sha256(inner), True, L.OK, "", [b"short"]).encode()),
                      resend_ms=60000).faucet([S.TxOutput(account, 5)], RA_PUBKEYS, 5000)
        raise AssertionError("took a txhash that is no txhash")
    except GatewayError as e:
        assert "one 32-byte txhash per output" in str(e), e
