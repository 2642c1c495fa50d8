"""The device's request bookkeeping (``gateway_client.Requests``) under the real MicroPython:
topics, keys, matching answers, and dropping bad ones. The ledger, gateway and RA are host
code (tests/test_device_mqtt.py runs them for real); here their answers are the structures
they send."""
from plugpay.firmware.gateway_client import Requests
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import signing, topics
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256

DEVICE_SECRET = sha256(b"device key of the gateway client test")
RA_SECRET = sha256(b"the test RA")


def _registration(count):
    pubkeys = [signing.public_key(sha256(bytes([i]))) for i in range(count)]
    return ra.make_request(bytes(16), DEVICE_SECRET, pubkeys)


def test_random_client_ids_and_reply_topics():
    a, b = Requests(), Requests()
    assert a.cid != b.cid and topics.valid_client_id(a.cid)
    assert sorted(a.subscriptions()) == ["plugpay/ledger/result/" + a.cid, "plugpay/ra/reply/" + a.cid]
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
    faucet = L.FaucetRequest(7, [S.TxOutput(S.Account(bytes([2]) + bytes(32), 0, bytes(64)), 5)]).encode()
    assert r.faucet(faucet)[0] == "plugpay/faucet/request/ev-1"
    assert r.submit(b"\x83\x02")[0] == "plugpay/ledger/submit/ev-1"
    assert len(r.pending()) == 3
    answer = L.Result(sha256(query), False, L.NOT_FOUND, "no such tx", None)
    got = r.on_message(b"plugpay/ledger/result/ev-1", answer.encode())  # umqtt gives bytes topics
    assert got[0] == key and got[1] == answer
    assert r.on_message("plugpay/ledger/result/ev-1", answer.encode()) is None  # only once
    assert r.dropped["not_awaited"] == 1 and r.answered == 1 and len(r.pending()) == 2
    r.cancel(sha256(faucet))
    assert [p[2] for p in r.pending()] == [sha256(b"\x83\x02")]


def test_registrations_are_keyed_by_nonce():
    r = Requests("ev-2")
    request = _registration(2)
    topic, payload, key = r.register(request.encode())
    assert topic == "plugpay/ra/register/ev-2" and key == request.nonce
    sigs = [signing.sign(RA_SECRET, S.Account(pk, 0, b"")) for pk in request.pubkeys]
    response = ra.RegistrationResponse(request.nonce, 0, sigs)
    # an answer on the wrong reply topic answers nothing
    assert r.on_message("plugpay/ledger/result/ev-2", response.encode()) is None
    assert r.dropped["malformed"] == 1
    got = r.on_message("plugpay/ra/reply/ev-2", response.encode())
    assert got == (request.nonce, response)
    try:
        r.register(b"\x80")
        raise AssertionError("registered bytes that are no request")
    except ValueError:
        pass


def test_an_undecodable_request_error_answers_the_sole_registration():
    r = Requests("ev-3")
    first = _registration(1)
    r.register(first.encode())
    error = ra.RegistrationError(b"", ra.MALFORMED, "bad bytes")
    assert r.on_message("plugpay/ra/reply/ev-3", error.encode()) == (first.nonce, error)
    r.register(_registration(1).encode())
    r.register(_registration(1).encode())
    assert r.on_message("plugpay/ra/reply/ev-3", error.encode()) is None  # two wait: whose?
    assert r.dropped["not_awaited"] == 1


def test_bad_answers_are_counted_and_dropped():
    r = Requests("ev-4")
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    r.query(query)
    good = L.Result(sha256(query), True, L.OK, "", [1, 2]).encode()
    for topic, payload in (("plugpay/ledger/result/ev-4", b""), ("plugpay/ledger/result/ev-4", b"\xff\x00"),
                           ("plugpay/ledger/result/ev-4", good[:-1]), ("plugpay/ledger/result/ev-4", b"\xa0"),
                           ("plugpay/ra/reply/ev-4", b"junk")):
        assert r.on_message(topic, payload) is None
    for topic in ("plugpay/ledger/result/ev-5", "plugpay/ledger/submit/ev-4", "elsewhere", b"\xff\xfe"):
        assert r.on_message(topic, good) is None
    assert r.dropped == {"malformed": 5, "other_topic": 4, "not_awaited": 0}
    assert len(r.pending()) == 1
    assert r.on_message("plugpay/ledger/result/ev-4", good)[1].data == [1, 2]
