"""The crypto shim: every backend gives the same bytes and the same verdicts."""
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import ecdsa
import pytest
from coincurve import PrivateKey

from plugpay.protocol import signing, signing_cpython

N = signing.N
HALF_N = signing.HALF_N
BACKENDS = signing.available()
RNG = random.Random(2026)


@pytest.fixture(autouse=True)
def restore_backend():
    before = signing.BACKEND
    yield
    signing.use(before)


def rand32():
    return RNG.getrandbits(256).to_bytes(32, "big")


def rand_secret():
    while True:
        s = rand32()
        if 0 < int.from_bytes(s, "big") < N:
            return s


def with_backend(name, fn, *args):
    signing.use(name)
    return fn(*args)


def test_backends_present_on_cpython():
    assert BACKENDS[:2] == ["coincurve", "ecdsa"]
    assert "pure" in BACKENDS
    assert "native" not in BACKENDS  # only a module with the embedded API counts


# Published secp256k1 RFC 6979 (HMAC-SHA256) vectors, message hashed with SHA-256, low S:
# the deterministic-signature set that bitcoinjs-lib's ecdsa fixtures and many ports carry.
VECTORS = [
    (
        1,
        b"Satoshi Nakamoto",
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8",
        "2442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5",
    ),
    (
        1,
        b"All those moments will be lost in time, like tears in rain. Time to die...",
        "8600dbd41e348fe5c9465ab92d23e3db8b98b873beecd930736488696438cb6b",
        "547fe64427496db33bf66019dacbf0039c04199abb0122918601db38a72cfc21",
    ),
    (
        N - 1,
        b"Satoshi Nakamoto",
        "fd567d121db66e382991534ada77a6bd3106f0a1098c231e47993447cd6af2d0",
        "6b39cd0eb1bc8603e159ef5c20a5c8ad685a45b06ce9bebed3f153d10d93bed5",
    ),
    (
        0xF8B8AF8CE3C7CCA5E300D33939540C10D45CE001B8F252BFBC57BA0342904181,
        b"Alan Turing",
        "7063ae83e7f62bbb171798131b4a0564b956930092b33b07b395615d9ec7e15c",
        "58dfcc1e00a35e1572f366ffe34ba0fc47db1e7189759b9fb233c5b05ab388ea",
    ),
    (
        1,
        b"Everything should be made as simple as possible, but not simpler.",
        "33a69cd2065432a30f3d1ce4eb0d59b8ab58c74f27c41a7fdb5696ad4e6108c9",
        "6f807982866f785d3f6418d24163ddae117b7db4d5fdf0071de069fa54342262",
    ),
]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("d, msg, r, s", VECTORS)
def test_published_vectors(name, d, msg, r, s):
    signing.use(name)
    secret = d.to_bytes(32, "big")
    digest = hashlib.sha256(msg).digest()
    sig = signing.sign_digest(secret, digest)
    assert sig.hex() == r + s
    assert signing.verify_digest(signing.public_key(secret), digest, sig)


def test_all_backends_agree_on_random_cases():
    n = 300 if "pure" in BACKENDS else 1000
    for _ in range(n):
        secret, digest = rand_secret(), rand32()
        pubs = {b: with_backend(b, signing.public_key, secret) for b in BACKENDS}
        sigs = {b: with_backend(b, signing.sign_digest, secret, digest) for b in BACKENDS}
        assert len(set(pubs.values())) == 1
        assert len(set(sigs.values())) == 1
        sig, pub = sigs["coincurve"], pubs["coincurve"]
        bad = bytearray(sig)
        bad[RNG.randrange(64)] ^= 1 << RNG.randrange(8)
        other = rand32()
        for b in BACKENDS:
            signing.use(b)
            assert signing.verify_digest(pub, digest, sig)
            assert not signing.verify_digest(pub, other, sig)
            assert not signing.verify_digest(pub, digest, bytes(bad))


def test_shared_secret_is_the_same_at_both_ends_on_every_backend():
    for _ in range(20):
        a, b = rand_secret(), rand_secret()
        pa, pb = signing.public_key(a), signing.public_key(b)
        got = {(n, side): with_backend(n, signing.shared_secret, *side) for n in BACKENDS for side in ((a, pb), (b, pa))}
        assert len(set(got.values())) == 1 and len(got[(BACKENDS[0], (a, pb))]) == 32
    for n in BACKENDS:
        signing.use(n)
        with pytest.raises(signing.SignatureError):
            signing.shared_secret(rand_secret(), b"\x02" + bytes(32))  # x = 0: off the curve
        with pytest.raises(signing.SignatureError):
            signing.shared_secret(bytes(32), signing.public_key(rand_secret()))


def test_thousands_against_python_ecdsa_reference():
    # The shim on its fastest backend against python-ecdsa used directly, not via the shim.
    signing.use("coincurve")
    for _ in range(2000):
        secret, digest = rand_secret(), rand32()
        sk = ecdsa.SigningKey.from_string(secret, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256)
        ref = sk.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=ecdsa.util.sigencode_string_canonize)
        assert signing.sign_digest(secret, digest) == ref
        assert signing.public_key(secret) == sk.get_verifying_key().to_string("compressed")


def high_s(sig):
    s = int.from_bytes(sig[32:], "big")
    return sig[:32] + (N - s).to_bytes(32, "big")


@pytest.mark.parametrize("name", BACKENDS)
def test_high_s_is_rejected_by_the_shim_on_every_backend(name):
    secret, digest = rand_secret(), rand32()
    signing.use(name)
    sig = signing.sign_digest(secret, digest)
    pub = signing.public_key(secret)
    malleated = high_s(sig)
    # python-ecdsa alone accepts it; that is exactly the disagreement the shim removes.
    vk = ecdsa.VerifyingKey.from_string(pub, curve=ecdsa.SECP256k1)
    assert vk.verify_digest(malleated, digest, sigdecode=ecdsa.util.sigdecode_string)
    assert not signing.verify_digest(pub, digest, malleated)


def bad_signatures(sig):
    r = sig[:32]
    s = sig[32:]
    zero = bytes(32)
    n = N.to_bytes(32, "big")
    return {
        "r=0": zero + s,
        "s=0": r + zero,
        "r=n": n + s,
        "s=n": r + n,
        "r=2^256-1": b"\xff" * 32 + s,
        "short": sig[:63],
        "long": sig + b"\x00",
        "not bytes": sig.hex(),
    }


def bad_keys(pub):
    x_not_on_curve = None
    for x in range(5, 100):  # x = 5: x^3 + 7 = 132 is a non-residue mod p
        if pow(x**3 + 7, (signing.P - 1) // 2, signing.P) != 1:
            x_not_on_curve = x
            break
    return {
        "prefix 04": b"\x04" + pub[1:],
        "prefix 00": b"\x00" + pub[1:],
        "x >= p": b"\x02" + signing.P.to_bytes(32, "big"),
        "x off curve": b"\x02" + x_not_on_curve.to_bytes(32, "big"),
        "uncompressed": PrivateKey(b"\x01" * 32).public_key.format(compressed=False),
        "short": pub[:32],
    }


@pytest.mark.parametrize("name", BACKENDS)
def test_malformed_signatures_and_keys_are_refused(name):
    signing.use(name)
    secret, digest = rand_secret(), rand32()
    sig = signing.sign_digest(secret, digest)
    pub = signing.public_key(secret)
    for label, bad in bad_signatures(sig).items():
        assert not signing.verify_digest(pub, digest, bad), label
    for label, bad in bad_keys(pub).items():
        assert not signing.verify_digest(bad, digest, sig), label
        assert not signing.valid_public_key(bad), label
    assert signing.valid_public_key(pub)
    assert not signing.verify_digest(pub, digest[:31], sig)


def edge_cases():
    """Wycheproof-style cases on which a backend's arithmetic reaches its edges: well-formed
    keys and signatures that verify nowhere. ``(label, pubkey, digest, signature)``."""
    digest = hashlib.sha256(b"wycheproof edge").digest()
    e = int.from_bytes(digest, "big") % N
    one = (1).to_bytes(32, "big")
    g = signing.public_key(one)
    cases = []
    # u1*G + u2*Q at infinity: Q = G and r = -e, any s; Q = k*G and r = -e/k (so u1 + u2*k = 0).
    for s in (1, 2, 7, HALF_N):
        cases.append(("infinity, Q=G, s=%d" % s, g, digest, ((N - e) % N).to_bytes(32, "big") + s.to_bytes(32, "big")))
    k = 3
    r = (N - e) * pow(k, -1, N) % N
    cases.append(("infinity, Q=3G", signing.public_key(k.to_bytes(32, "big")), digest,
                  r.to_bytes(32, "big") + (5).to_bytes(32, "big")))
    # A key sharing its x with the generator, both parities, against a signature by G's key.
    sig = signing.sign_digest(one, digest)
    cases.append(("key -G (x of G)", bytes([g[0] ^ 1]) + g[1:], digest, sig))
    cases.append(("r = x of G", g, digest, g[1:] + (1).to_bytes(32, "big")))
    return cases


@pytest.mark.parametrize("name", BACKENDS)
def test_edge_cases_verify_false_and_never_raise(name):
    signing.use(name)
    for label, pub, digest, sig in edge_cases():
        assert signing.verify_digest(pub, digest, sig) is False, label


@pytest.mark.parametrize("bad", [b"", bytes(32), N.to_bytes(32, "big"), b"\xff" * 32, b"\x01" * 31])
def test_bad_secrets_raise(bad):
    with pytest.raises(signing.SignatureError):
        signing.sign_digest(bad, bytes(32))
    with pytest.raises(signing.SignatureError):
        signing.public_key(bad)


def test_new_secret_is_random_and_in_range():
    a, b = signing.new_secret(), signing.new_secret()
    assert a != b and 0 < int.from_bytes(a, "big") < N


def test_native_module_is_picked_first_when_present():
    fakes = Path(__file__).parent / "fakes"
    code = (
        "import secp256k1, hashlib\n"
        "from plugpay.protocol import signing\n"
        "assert signing.BACKEND == 'native', signing.BACKEND\n"
        "d = (1).to_bytes(32, 'big'); h = hashlib.sha256(b'Satoshi Nakamoto').digest()\n"
        "sig = signing.sign_digest(d, h)\n"
        "assert sig.hex().startswith('934b1ea10a4b3c17'), sig.hex()\n"
        "assert signing.verify_digest(signing.public_key(d), h, sig)\n"
        "assert not signing.verify_digest(signing.public_key(d), h, sig[:32] + (signing.N - int.from_bytes(sig[32:], 'big')).to_bytes(32, 'big'))\n"
        "assert {'ecdsa_sign', 'ecdsa_verify', 'ec_pubkey_create'} <= set(secp256k1.calls)\n"
        "print('native ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(fakes))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "native ok" in out.stdout


def test_message_digest_is_domain_separated():
    secret = rand_secret()
    digest = signing.message_digest(b"plugpay/test/v1", b"payload")
    assert digest == hashlib.sha256(b"plugpay/test/v1payload").digest()
    assert digest != signing.message_digest(b"plugpay/other/v1", b"payload")
    assert signing.verify_digest(signing.public_key(secret), digest, signing.sign_digest(secret, digest))


@pytest.mark.skipif("coincurve" not in signing.available(), reason="coincurve backend only")
def test_coincurve_parsed_key_cache_is_bounded_and_never_holds_a_bad_key(monkeypatch):
    backend = signing._load("coincurve")
    monkeypatch.setattr(signing, "_backend", backend)
    monkeypatch.setattr(signing_cpython, "MAX_PARSED_KEYS", 3)
    monkeypatch.setattr(backend, "keys", {})
    digest = hashlib.sha256(b"cache").digest()
    secrets = [hashlib.sha256(b"cache key %d" % i).digest() for i in range(5)]
    keys = [signing.public_key(s) for s in secrets]
    sigs = [signing.sign_digest(s, digest) for s in secrets]
    # a well-formed key whose x has no point on the curve (x = 5: 5**3 + 7 is no square mod p)
    off_curve = b"\x02" + (5).to_bytes(32, "big")
    assert not signing.valid_public_key(off_curve)
    for _ in range(2):
        assert not signing.verify_digest(off_curve, digest, sigs[0])
    assert off_curve not in backend.keys
    for i in range(3):
        assert signing.verify_digest(keys[i], digest, sigs[i])
        assert signing.verify_digest(keys[i], digest, sigs[i])  # the second from the cache
    assert set(backend.keys) == set(keys[:3])
    assert not signing.verify_digest(keys[0], digest, sigs[1])  # a cached key, a wrong signature
    assert signing.verify_digest(keys[3], digest, sigs[3])  # full: cleared, then the new key
    assert set(backend.keys) == {keys[3]}
    assert not signing.verify_digest(keys[4], digest, sigs[3]) and signing.verify_digest(keys[4], digest, sigs[4])
    assert len(backend.keys) <= 3
