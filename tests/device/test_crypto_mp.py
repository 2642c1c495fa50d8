"""Signatures and sealing under the real MicroPython with the pure-Python backends."""
import mpyunit
from plugpay.protocol import aead, aes, signing
from plugpay.protocol.port import sha256

N = signing.N
# Published secp256k1 RFC 6979 vectors (see tests/test_signing.py for the source).
VECTORS = [
    (1, b"Satoshi Nakamoto",
     "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d82442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5"),
    (N - 1, b"Satoshi Nakamoto",
     "fd567d121db66e382991534ada77a6bd3106f0a1098c231e47993447cd6af2d06b39cd0eb1bc8603e159ef5c20a5c8ad685a45b06ce9bebed3f153d10d93bed5"),
    (0xF8B8AF8CE3C7CCA5E300D33939540C10D45CE001B8F252BFBC57BA0342904181, b"Alan Turing",
     "7063ae83e7f62bbb171798131b4a0564b956930092b33b07b395615d9ec7e15c58dfcc1e00a35e1572f366ffe34ba0fc47db1e7189759b9fb233c5b05ab388ea"),
]


def test_the_ports_backends_are_picked():
    # No native secp256k1 in either port; AES from cryptolib where the port has it (the unix
    # port, an ESP32), else the pure one (the WebAssembly port).
    assert signing.BACKEND == "pure", signing.BACKEND
    try:
        import cryptolib  # noqa: F401
        expected = "cryptolib"
    except ImportError:
        expected = "pure"
    assert aead.BACKEND == expected, (aead.BACKEND, expected)


def test_published_vectors():
    mpyunit.step("start")
    for d, msg, sig_hex in VECTORS:
        secret = d.to_bytes(32, "big")
        digest = sha256(msg)
        sig = signing.sign_digest(secret, digest)
        assert sig.hex() == sig_hex, sig.hex()
        assert signing.verify_digest(signing.public_key(secret), digest, sig)
    mpyunit.step("3 vectors signed and verified")


def test_refusals():
    secret = sha256(b"k")
    digest = sha256(b"m")
    sig = signing.sign_digest(secret, digest)
    pub = signing.public_key(secret)
    s = int.from_bytes(sig[32:], "big")
    assert not signing.verify_digest(pub, digest, sig[:32] + (N - s).to_bytes(32, "big"))  # high S
    assert not signing.verify_digest(pub, digest, bytes(32) + sig[32:])  # r = 0
    assert not signing.verify_digest(pub, digest, N.to_bytes(32, "big") + sig[32:])  # r = n
    assert not signing.verify_digest(pub, sha256(b"other"), sig)
    assert not signing.verify_digest(b"\x02" + (5).to_bytes(32, "big"), digest, sig)  # off curve
    assert not signing.verify_digest(b"\x04" + pub[1:], digest, sig)
    try:
        signing.sign_digest(bytes(32), digest)
        raise AssertionError("zero key accepted")
    except signing.SignatureError:
        pass


def test_aes_fips197_vector():
    rk = aes.expand_key(bytes(range(32)))
    out = aes.encrypt_block(rk, bytes.fromhex("00112233445566778899aabbccddeeff"))
    assert out.hex() == "8ea2b7ca516745bfeafc49904b496089"


def test_seal_and_tamper():
    key = sha256(b"device key")
    blob = aead.seal(key, b"one-time key seed", b"aad")
    assert aead.unseal(key, blob, b"aad") == b"one-time key seed"
    for i in (0, 1, 17, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 1
        try:
            aead.unseal(key, bytes(bad), b"aad")
            raise AssertionError("tampered byte %d accepted" % i)
        except aead.AuthError:
            pass
