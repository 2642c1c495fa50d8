"""Sealed requests (``protocol.sealed``) under the real MicroPython, with the pure backends and
the JS random source of the WebAssembly port: the device seals what CPython opens and opens
what CPython sealed (the vector in sealed_vector.py, which tests/test_sealed.py checks on
CPython; tests/test_cross_runtime.py does the same with fresh random keys)."""
import mpyunit
import sealed_vector as V
from plugpay.protocol import aead, sealed, signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

HOST_SECRET = sha256(b"the host of the MicroPython sealed test")


def _secret_for(epoch):
    return HOST_SECRET if epoch == 3 else None


def _refused(code, call, *args):
    try:
        call(*args)
    except sealed.SealedRefused as e:
        assert e.code == code, e
        return e
    raise AssertionError("not refused")


def test_the_device_seals_what_cpython_opens_and_opens_what_cpython_sealed():
    new_secret, urandom = signing.new_secret, aead.urandom
    signing.new_secret = lambda: V.EPHEMERAL_SECRET
    aead.urandom = V.request_nonce
    try:
        request, reply_key = sealed.seal_request(V.INNER, V.EPOCH, signing.public_key(V.HOST_SECRET))
    finally:
        signing.new_secret, aead.urandom = new_secret, urandom
    mpyunit.step("sealed the vector's request")
    assert request == V.REQUEST  # byte for byte what CPython sealed, so CPython opens it
    assert sealed.open_reply(reply_key, V.REPLY) == V.INNER_REPLY
    inner, _ = sealed.open_request(V.REQUEST, lambda epoch: V.HOST_SECRET if epoch == V.EPOCH else None)
    assert inner == V.INNER


def test_round_trip_with_fresh_random_keys_and_padded_sizes():
    host_pubkey = signing.public_key(HOST_SECRET)
    sizes = []
    for inner in (b"", b"x" * 255, b"y" * 256, bytes(range(256)) * 3):
        request, reply_key = sealed.seal_request(inner, 3, host_pubkey)
        opened, host_key = sealed.open_request(request, _secret_for)
        assert opened == inner
        reply = sealed.seal_reply(host_key, inner + b"!")
        assert sealed.open_reply(reply_key, reply) == inner + b"!"
        sizes.append(len(sealed.SealedRequest.decode(request).box) - aead.OVERHEAD)
    assert sizes == [256, 256, 512, 1024], sizes
    mpyunit.step("4 round trips")


def test_tampering_wrong_epoch_and_refusals():
    request, reply_key = sealed.seal_request(b"registration", 3, signing.public_key(HOST_SECRET))
    flipped = request[:-5] + bytes([request[-5] ^ 1]) + request[-4:]
    _refused(sealed.CANNOT_OPEN, sealed.open_request, flipped, _secret_for)
    _refused(sealed.UNKNOWN_EPOCH, sealed.open_request, request, lambda epoch: None)
    _refused(sealed.CANNOT_OPEN, sealed.open_request, request, lambda epoch: sha256(b"another key"))
    _refused(sealed.MALFORMED, sealed.open_request, request[:-1], _secret_for)
    refusal = sealed.refusal(request, sealed.CANNOT_OPEN, "does not open")
    e = _refused(sealed.CANNOT_OPEN, sealed.open_reply, reply_key, refusal)
    assert e.text == "does not open" and e.reason() == "CANNOT_OPEN"
    other_request, _ = sealed.seal_request(b"other", 3, signing.public_key(HOST_SECRET))
    try:
        sealed.open_reply(reply_key, sealed.refusal(other_request, sealed.MALFORMED, "x"))
        raise AssertionError("opened the answer to another request")
    except DecodeError:
        pass
