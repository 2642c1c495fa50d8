"""Sealed requests and replies (``protocol.sealed``): the documented construction on every
ECDSA backend, and every byte untrusted (tampering, wrong epoch or key, truncation, bad
padding, oversized input)."""
import hashlib
import hmac
import importlib.util
import os
import re
from pathlib import Path

import pytest

from plugpay.protocol import aead, codec, sealed, signing
from plugpay.protocol.codec import DecodeError

HOST_SECRET = hashlib.sha256(b"plugpay sealed test host").digest()
HOST_PUBKEY = signing.public_key(HOST_SECRET)
EPOCH = 2


def secret_for(epoch):
    return HOST_SECRET if epoch == EPOCH else None


def refused(code, data, secret_for_epoch=secret_for):
    with pytest.raises(sealed.SealedRefused) as info:
        sealed.open_request(data, secret_for_epoch)
    assert info.value.code == code, info.value
    return info.value


def reencode(request_bytes, index, value):
    """The request with field ``index`` of its CBOR array replaced (tag 0, version 1, ...)."""
    fields = codec.loads(request_bytes)
    fields[index] = value
    return codec.dumps(fields)


@pytest.fixture
def backend():
    before = signing.BACKEND
    yield signing.use
    signing.use(before)


@pytest.mark.parametrize("name", signing.available())
def test_round_trip_on_every_backend(backend, name):
    backend(name)
    request, reply_key = sealed.seal_request(b"register these keys", EPOCH, HOST_PUBKEY)
    inner, host_key = sealed.open_request(request, secret_for)
    assert inner == b"register these keys"
    assert host_key.request_digest == reply_key.request_digest == hashlib.sha256(request).digest()
    assert host_key.key == reply_key.key and reply_key.key.hex() not in repr(reply_key)
    reply = sealed.seal_reply(host_key, b"signed")
    assert sealed.open_reply(reply_key, reply) == b"signed"


def test_the_construction_is_the_documented_one(monkeypatch):
    """ECDH x coordinate, HMAC key schedule, AEAD over the padded inner with the header as
    associated data: recomputed here from the description, not from the module."""
    ephemeral_secret = hashlib.sha256(b"a fixed ephemeral").digest()
    monkeypatch.setattr(signing, "new_secret", lambda: ephemeral_secret)
    request, reply_key = sealed.seal_request(b"inner", EPOCH, HOST_PUBKEY)
    tag, version, epoch, ephemeral, box = codec.loads(request)
    assert (tag, version, epoch, ephemeral) == (48, 1, EPOCH, signing.public_key(ephemeral_secret))
    shared = signing.shared_secret(ephemeral_secret, HOST_PUBKEY)
    prk = hmac.digest(b"plugpay/sealed/v1", shared + ephemeral + HOST_PUBKEY, "sha256")
    k_req, k_rep = hmac.digest(prk, b"request", "sha256"), hmac.digest(prk, b"reply", "sha256")
    header = codec.dumps([tag, version, epoch, ephemeral])
    assert aead.unseal(k_req, box, header) == b"inner\x80" + bytes(250)
    assert reply_key.key == k_rep
    reply = codec.loads(sealed.seal_reply(sealed.ReplyKey(k_rep, reply_key.request_digest), b"answer"))
    assert reply[:5] == [49, 1, hashlib.sha256(request).digest(), 0, ""]
    assert aead.unseal(k_rep, reply[5], reply_key.request_digest) == b"answer\x80" + bytes(249)


def test_sizes_move_in_256_byte_steps():
    boxes = {}
    for n in (0, 1, 254, 255, 256, 257, 511, 512, sealed.MAX_INNER):
        request, _ = sealed.seal_request(os.urandom(n), EPOCH, HOST_PUBKEY)
        boxes[n] = len(codec.loads(request)[4]) - aead.OVERHEAD
        assert sealed.open_request(request, secret_for)[0] is not None
    assert boxes == {0: 256, 1: 256, 254: 256, 255: 256, 256: 512, 257: 512, 511: 512, 512: 768,
                     sealed.MAX_INNER: sealed.MAX_PADDED}
    request, _ = sealed.seal_request(bytes(sealed.MAX_INNER), EPOCH, HOST_PUBKEY)
    assert len(request) <= codec.MAX_BYTES


def test_oversized_input_is_refused_on_both_sides():
    with pytest.raises(ValueError, match="exceed"):
        sealed.seal_request(bytes(sealed.MAX_INNER + 1), EPOCH, HOST_PUBKEY)
    _, host_key = sealed.open_request(sealed.seal_request(b"x", EPOCH, HOST_PUBKEY)[0], secret_for)
    with pytest.raises(ValueError, match="exceed"):
        sealed.seal_reply(host_key, bytes(sealed.MAX_INNER + 1))
    assert "65537 bytes exceed" in refused(sealed.TOO_LARGE, bytes(codec.MAX_BYTES + 1)).text
    with pytest.raises(ValueError):
        sealed.seal_request("text, not bytes", EPOCH, HOST_PUBKEY)
    with pytest.raises(signing.SignatureError):
        sealed.seal_request(b"x", EPOCH, b"\x02" + bytes(32))  # no point on the curve


def test_tampering_with_each_field_is_refused():
    request, _ = sealed.seal_request(b"identity and keys", EPOCH, HOST_PUBKEY)
    other_point = signing.public_key(hashlib.sha256(b"another point").digest())
    # epoch: unknown here, or known (a host answering every epoch) but not what the box is bound to
    refused(sealed.UNKNOWN_EPOCH, reencode(request, 2, EPOCH + 1))
    refused(sealed.CANNOT_OPEN, reencode(request, 2, EPOCH + 1), lambda epoch: HOST_SECRET)
    refused(sealed.CANNOT_OPEN, reencode(request, 3, other_point))
    off_curve = b"\x02" + (5).to_bytes(32, "big")
    assert "not a point" in refused(sealed.CANNOT_OPEN, reencode(request, 3, off_curve)).text
    refused(sealed.MALFORMED, reencode(request, 3, b"\x04" + other_point[1:]))
    refused(sealed.MALFORMED, reencode(request, 0, 40))  # a registration request's tag
    refused(sealed.MALFORMED, reencode(request, 1, 2))
    box = codec.loads(request)[4]
    for i in (0, 1, 17, 40, len(box) - 33, len(box) - 1):  # version, nonce, ciphertext, tag
        flipped = box[:i] + bytes([box[i] ^ 0x40]) + box[i + 1:]
        refused(sealed.CANNOT_OPEN, reencode(request, 4, flipped))
    refused(sealed.MALFORMED, reencode(request, 4, box[:-256]))  # a whole block short: below one block
    refused(sealed.MALFORMED, reencode(request, 4, box + bytes(1)))  # not whole blocks
    refused(sealed.CANNOT_OPEN, reencode(request, 4, box + bytes(256)))
    refused(sealed.MALFORMED, request + b"\x00")
    refused(sealed.MALFORMED, codec.dumps(codec.loads(request) + [b""]))


def test_wrong_key_and_truncation_are_refused():
    request, _ = sealed.seal_request(b"x" * 300, EPOCH, HOST_PUBKEY)
    refused(sealed.CANNOT_OPEN, request, lambda epoch: hashlib.sha256(b"not the RA").digest())
    for cut in (0, 1, 5, 40, 41, len(request) // 2, len(request) - 1):
        refused(sealed.MALFORMED, request[:cut])
    for junk in (b"", b"\xff", b"\x80", "text", None):
        refused(sealed.MALFORMED, junk)


def test_bad_padding_is_refused_after_authentication(monkeypatch):
    ephemeral_secret = hashlib.sha256(b"padding test").digest()
    monkeypatch.setattr(signing, "new_secret", lambda: ephemeral_secret)
    template, _ = sealed.seal_request(b"", EPOCH, HOST_PUBKEY)
    ephemeral = signing.public_key(ephemeral_secret)
    prk = hmac.digest(b"plugpay/sealed/v1", signing.shared_secret(ephemeral_secret, HOST_PUBKEY) + ephemeral
                      + HOST_PUBKEY, "sha256")
    k_req = hmac.digest(prk, b"request", "sha256")
    header = codec.dumps(codec.loads(template)[:4])
    for padded in (bytes(256),  # no 0x80
                   b"abc" + bytes(253),  # no 0x80 either
                   b"abc\x80" + bytes(251) + b"\x01",  # something after the zeros
                   b"\x80" + bytes(511),  # a whole block of zeros: not the shortest padding
                   b"x" * 255 + b"\x81"):  # not 0x80
        forged = reencode(template, 4, aead.seal(k_req, padded, header))
        assert "padding" in refused(sealed.MALFORMED, forged).text
    good = reencode(template, 4, aead.seal(k_req, b"abc\x80" + bytes(252), header))
    assert sealed.open_request(good, secret_for)[0] == b"abc"


def test_replies_are_bound_to_their_request_and_strict():
    request, reply_key = sealed.seal_request(b"faucet please", EPOCH, HOST_PUBKEY)
    _, host_key = sealed.open_request(request, secret_for)
    reply = sealed.seal_reply(host_key, b"minted")
    other, other_key = sealed.seal_request(b"faucet please", EPOCH, HOST_PUBKEY)
    with pytest.raises(DecodeError, match="another request"):
        sealed.open_reply(other_key, reply)
    with pytest.raises(aead.AuthError):  # the right digest, another request's key
        sealed.open_reply(sealed.ReplyKey(other_key.key, reply_key.request_digest), reply)
    fields = codec.loads(reply)
    fields[5] = fields[5][:-1] + bytes([fields[5][-1] ^ 1])
    with pytest.raises(aead.AuthError):
        sealed.open_reply(reply_key, codec.dumps(fields))
    for bad in (reply[:-1], reply + b"\x00", b"", b"\xa0"):
        with pytest.raises(DecodeError):
            sealed.open_reply(reply_key, bad)
    assert sealed.reply_digest(reply) == reply_key.request_digest
    assert sealed.reply_digest(reply[:37]) is None and sealed.reply_digest(b"\x80" * 40) is None
    # an OK without a box, a refusal with one, an OK with a text: not replies
    digest = reply_key.request_digest
    for value in ([49, 1, digest, 0, "", b""], [49, 1, digest, 4, "no", fields[5]], [49, 1, digest, 0, "hm", fields[5]]):
        with pytest.raises(DecodeError):
            sealed.SealedReply.decode(codec.dumps(value))


def test_refusals_are_clear_clipped_and_raise_on_the_device():
    request, reply_key = sealed.seal_request(b"x", EPOCH, HOST_PUBKEY)
    long_text = "\u00e9" * 150  # 300 bytes of UTF-8: cut at 200, between two characters
    refusal = sealed.refusal(request, sealed.UNKNOWN_KIND, long_text)
    with pytest.raises(sealed.SealedRefused) as info:
        sealed.open_reply(reply_key, refusal)
    assert (info.value.code, info.value.reason(), info.value.text) == (sealed.UNKNOWN_KIND, "UNKNOWN_KIND", "\u00e9" * 100)
    assert str(info.value).startswith("UNKNOWN_KIND: ")
    with pytest.raises(ValueError):
        sealed.refusal(request, sealed.OK, "fine")
    assert [sealed.reason_name(c) for c in range(7)] == ["OK", "MALFORMED", "TOO_LARGE", "UNKNOWN_EPOCH",
                                                         "CANNOT_OPEN", "UNKNOWN_KIND", "UNAVAILABLE"]
    assert sealed.reason_name(99) == "UNKNOWN_REASON_99"


def test_no_two_structures_share_a_tag():
    root = Path(__file__).resolve().parent.parent
    tags = {}
    for folder in ("protocol", "firmware"):
        for path in sorted((root / folder).glob("*.py")):
            for name, number in re.findall(r"^(TAG_\w+) = const\((\d+)\)", path.read_text(), re.M):
                assert number not in tags, "%s and %s are both %s" % (tags[number], name, number)
                tags[number] = name
    assert (tags["48"], tags["49"]) == ("TAG_SEALED_REQUEST", "TAG_SEALED_REPLY")


def test_the_cpython_vector_the_device_test_reproduces(monkeypatch):
    """tests/device/test_sealed_mp.py seals the same request on MicroPython and opens this
    reply: here CPython makes both and opens them."""
    spec = importlib.util.spec_from_file_location("sealed_vector", Path(__file__).parent / "device" / "sealed_vector.py")
    vector = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vector)
    monkeypatch.setattr(signing, "new_secret", lambda: vector.EPHEMERAL_SECRET)
    monkeypatch.setattr(aead, "urandom", vector.request_nonce)
    request, reply_key = sealed.seal_request(vector.INNER, vector.EPOCH, signing.public_key(vector.HOST_SECRET))
    assert request == vector.REQUEST
    inner, host_key = sealed.open_request(request, lambda epoch: vector.HOST_SECRET if epoch == vector.EPOCH else None)
    assert inner == vector.INNER
    monkeypatch.setattr(aead, "urandom", vector.reply_nonce)
    assert sealed.seal_reply(host_key, vector.INNER_REPLY) == vector.REPLY
    assert sealed.open_reply(reply_key, vector.REPLY) == vector.INNER_REPLY
