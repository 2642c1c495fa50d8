"""The pure-Python secp256k1 backend against published vectors, libsecp256k1 (coincurve) and
python-ecdsa, byte for byte."""
import hashlib
import random

import ecdsa
import pytest
from coincurve import PrivateKey, PublicKey
from ecdsa.rfc6979 import generate_k
from ecdsa.util import sigdecode_der, sigencode_der, sigencode_string_canonize

from plugpay.protocol import secp256k1 as S
from plugpay.tools import gen_secp256k1_table as gen

N = S.N
P = S.P
CURVE = ecdsa.SECP256k1
GPT = CURVE.generator


def sha(msg):
    return hashlib.sha256(msg).digest()


def b32(i):
    return i.to_bytes(32, "big")


def compact(r, s):
    return b32(r) + b32(s)


def cc_sign(secret, digest):
    r, s = sigdecode_der(PrivateKey(secret).sign(digest, hasher=None), N)
    return compact(r, s)


def ecdsa_sign(secret, digest):
    sk = ecdsa.SigningKey.from_string(secret, curve=CURVE)
    return sk.sign_digest_deterministic(digest, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize)


def cc_verify(pub, digest, sig):
    """libsecp256k1's verdict (it rejects high S itself)."""
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    try:
        key = PublicKey(pub)
    except ValueError:
        return False
    return key.verify(sigencode_der(r, s, N), digest, hasher=None)


def low_s(sig):
    s = int.from_bytes(sig[32:], "big")
    return sig[:32] + b32(N - s) if s > N // 2 else sig


# --- published vectors -----------------------------------------------------------------

# RFC 6979 has no secp256k1 vectors. These are the community ones for secp256k1, SHA-256:
# source: https://bitcointalk.org/index.php?topic=285142.msg3150733#msg3150733 (also in
# btclib's test_rfc6979.py and Zenroom's tests). (secret, message, k, r||s before low-S)
BITCOINTALK = [
    (
        0x1,
        b"Satoshi Nakamoto",
        0x8F8A276C19F4149656B280621E358CCE24F5F52542772691EE69063B74F15D15,
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8"
        "dbbd3162d46e9f9bef7feb87c16dc13b4f6568a87f4e83f728e2443ba586675c",
    ),
    (
        0x1,
        b"All those moments will be lost in time, like tears in rain. Time to die...",
        0x38AA22D72376B4DBC472E06C3BA403EE0A394DA63FC58D88686C611ABA98D6B3,
        "8600dbd41e348fe5c9465ab92d23e3db8b98b873beecd930736488696438cb6b"
        "ab8019bbd8b6924cc4099fe625340ffb1eaac34bf4477daa39d0835429094520",
    ),
    (
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140,
        b"Satoshi Nakamoto",
        0x33A19B60E25FB6F4435AF53A3D42D493644827367E6453928554F43E49AA6F90,
        "fd567d121db66e382991534ada77a6bd3106f0a1098c231e47993447cd6af2d0"
        "94c632f14e4379fc1ea610a3df5a375152549736425ee17cebe10abbc2a2826c",
    ),
    (
        0xF8B8AF8CE3C7CCA5E300D33939540C10D45CE001B8F252BFBC57BA0342904181,
        b"Alan Turing",
        0x525A82B70E67874398067543FD84C83D30C175FDC45FDEEE082FE13B1D7CFDF1,
        "7063ae83e7f62bbb171798131b4a0564b956930092b33b07b395615d9ec7e15c"
        "a72033e1ff5ca1ea8d0c99001cb45f0272d3be7525d3049c0d9e98dc7582b857",
    ),
]

# Haskoin's RFC 6979 secp256k1 vectors, also trezor-crypto tests/test_check.c
# (test_rfc6979 / test_sign_speed) and CoreBitcoin; signatures already low-S.
HASKOIN = [
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        b"Everything should be made as simple as possible, but not simpler.",
        "33a69cd2065432a30f3d1ce4eb0d59b8ab58c74f27c41a7fdb5696ad4e6108c9"
        "6f807982866f785d3f6418d24163ddae117b7db4d5fdf0071de069fa54342262",
    ),
    (
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
        b"Equations are more important to me, because politics is for the present,"
        b" but an equation is something for eternity.",
        "54c4a33c6423d689378f160a7ff8b61330444abb58fb470f96ea16d99d4a2fed"
        "07082304410efa6b2943111b6a4e0aaa7b7db55a07e9861d1fb3cb1f421044a5",
    ),
    (
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140",
        b"Not only is the Universe stranger than we think, it is stranger than we can think.",
        "ff466a9f1b7b273e2f4c3ffe032eb2e814121ed18ef84665d0f515360dab3dd0"
        "6fc95f5132e5ecfdc8e5e6e616cc77151455d46ed48f5589b7db7771a332b283",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        b"How wonderful that we have met with a paradox. Now we have some hope of making progress.",
        "c0dafec8251f1d5010289d210232220b03202cba34ec11fec58b3e93a85b91d3"
        "75afdc06b7d6322a590955bf264e7aaa155847f614d80078a90292fe205064d3",
    ),
    (
        "69ec59eaa1f4f2e36b639716b7c30ca86d9a5375c7b38d8918bd9c0ebc80ba64",
        b"Computer science is no more about computers than astronomy is about telescopes.",
        "7186363571d65e084e7f02b0b77c3ec44fb1b257dee26274c38c928986fea45d"
        "0de0b38e06807e46bda1f1e293f4f6323e854c86d58abdd00c46c16441085df6",
    ),
    (
        "00000000000000000000000000007246174ab1e92e9149c6e446fe194d072637",
        b"...if you aren't, at any given time, scandalized by code you wrote five or even three"
        b" years ago, you're not learning anywhere near enough",
        "fbfe5076a15860ba8ed00e75e9bd22e05d230f02a936b653eb55b61c99dda487"
        "0e68880ebb0050fe4312b1b1eb0899e1b82da89baa5b895f612619edf34cbd37",
    ),
    (
        "000000000000000000000000000000000000000000056916d0f9b31dc9b637f3",
        b"The question of whether computers can think is like the question of whether submarines can swim.",
        "cde1302d83f8dd835d89aef803c74a119f561fbaef3eb9129e45f30de86abbf9"
        "06ce643f5049ee1f27890467b77a6a8e11ec4661cc38cd8badf90115fbd03cef",
    ),
]

# Public keys of small secrets (SEC 2 generator, and the well-known 2G, 3G).
SMALL_PUBKEYS = {
    1: "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    2: "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
    3: "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9",
}


@pytest.mark.parametrize("d, msg, k, sig", BITCOINTALK)
def test_bitcointalk_vectors(d, msg, k, sig):
    digest = sha(msg)
    assert next(S._rfc6979(b32(d), digest)) == k  # digest < N here, so bits2octets = digest
    expected = low_s(bytes.fromhex(sig))
    assert expected != bytes.fromhex(sig)  # all four were published with high S
    got = S.sign(b32(d), digest)
    assert got == expected
    assert got == cc_sign(b32(d), digest) == ecdsa_sign(b32(d), digest)
    pub = S.public_key(b32(d))
    assert S.verify(pub, digest, got)
    assert not S.verify(pub, digest, bytes.fromhex(sig))  # the published high-S form is rejected


@pytest.mark.parametrize("secret, msg, sig", HASKOIN)
def test_haskoin_trezor_vectors(secret, msg, sig):
    secret = bytes.fromhex(secret)
    digest = sha(msg)
    got = S.sign(secret, digest)
    assert got.hex() == sig
    assert got == cc_sign(secret, digest) == ecdsa_sign(secret, digest)
    assert S.verify(S.public_key(secret), digest, got)


def test_small_public_keys():
    for d, pub in SMALL_PUBKEYS.items():
        assert S.public_key(b32(d)).hex() == pub
        assert S.decompress(bytes.fromhex(pub)) == S.decompress(PrivateKey(b32(d)).public_key.format())


# --- randomised cross-checks -----------------------------------------------------------


def test_multiply_against_libsecp256k1():
    rnd = random.Random(0xEC0D4)
    edges = [1, 2, N - 1, N - 2, (N - 1) // 2]
    for i in range(200):
        d = edges[i] if i < len(edges) else rnd.randrange(1, N)
        q = PrivateKey(b32(rnd.randrange(1, N))).public_key
        assert S.multiply(q.format(), b32(d)) == q.multiply(b32(d)).format()
    with pytest.raises(ValueError):
        S.multiply(b"\x02" + b32(5), b32(7))  # x = 5 is not on the curve
    with pytest.raises(ValueError):
        S.multiply(PrivateKey().public_key.format(), b32(N))


def test_random_sign_verify_against_libsecp256k1_and_python_ecdsa():
    rnd = random.Random(0x5EC9256)
    for i in range(2000):
        secret = rnd.randbytes(32)
        if not 0 < int.from_bytes(secret, "big") < N:
            continue
        digest = rnd.randbytes(32) if i % 50 else b"\xff" * 31 + bytes([i & 0xFF])  # some >= N
        pub = S.public_key(secret)
        assert pub == PrivateKey(secret).public_key.format(compressed=True)
        sig = S.sign(secret, digest)
        assert sig == cc_sign(secret, digest), i
        assert sig == ecdsa_sign(secret, digest), i
        assert S.verify(pub, digest, sig)
        if i % 4 == 0:  # tampering: both must reject
            bad_digest = bytearray(digest)
            bad_digest[rnd.randrange(32)] ^= 1 << rnd.randrange(8)
            assert not S.verify(pub, bytes(bad_digest), sig)
            assert not cc_verify(pub, bytes(bad_digest), sig)
            bad_sig = bytearray(sig)
            bad_sig[rnd.randrange(64)] ^= 1 << rnd.randrange(8)
            assert S.verify(pub, digest, bytes(bad_sig)) == cc_verify(pub, digest, bytes(bad_sig)) == False  # noqa: E712
            other = S.public_key(b32(rnd.randrange(1, N)))
            assert not S.verify(other, digest, sig)
        # the high-S twin is valid ECDSA (python-ecdsa accepts it) but rejected here and by libsecp256k1
        s = int.from_bytes(sig[32:], "big")
        high = sig[:32] + b32(N - s)
        assert not S.verify(pub, digest, high)
        assert not cc_verify(pub, digest, high)
        if i % 100 == 0:
            vk = ecdsa.VerifyingKey.from_string(pub, curve=CURVE)
            assert vk.verify_digest(high, digest)


def test_out_of_range_r_s_rejected():
    secret = b32(0xC0FFEE)
    digest = sha(b"plugpay")
    pub = S.public_key(secret)
    sig = S.sign(secret, digest)
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    assert S.verify(pub, digest, sig)
    for bad_r in (0, N, N + 1, r + N if r + N < 2**256 else N + 2, 2**256 - 1):
        assert not S.verify(pub, digest, compact(bad_r, s))
    for bad_s in (0, N, N + 1, N - s, N // 2 + 1, 2**256 - 1):
        assert not S.verify(pub, digest, compact(r, bad_s))
    # wrong lengths never raise
    assert not S.verify(pub, digest, sig[:63])
    assert not S.verify(pub, digest, sig + b"\x00")
    assert not S.verify(pub, digest[:31], sig)
    assert not S.verify(pub, b"", sig)


def test_verify_never_raises_on_malformed_input():
    secret = b32(99)
    digest = sha(b"m")
    pub = S.public_key(secret)
    sig = S.sign(secret, digest)
    for args in [
        (None, digest, sig),
        (3, digest, sig),
        (pub, None, sig),
        (pub, "x" * 32, sig),
        (pub, digest, None),
        (pub, digest, 12345),
        ("02" * 33, digest, sig),
    ]:
        assert S.verify(*args) is False
    assert S.verify(bytearray(pub), bytearray(digest), bytearray(sig)) is True
    assert S.verify(memoryview(pub), digest, memoryview(sig)) is True


def _not_on_curve_x():
    x = 5
    while True:
        c = (x**3 + 7) % P
        if pow(c, (P - 1) // 2, P) != 1:
            return x
        x += 1


def test_bad_public_keys():
    secret = b32(12345)
    digest = sha(b"x")
    sig = S.sign(secret, digest)
    good = S.public_key(secret)
    x_off = _not_on_curve_x()
    bad = [
        b"\x04" + good[1:],
        b"\x00" + good[1:],
        b"\x05" + good[1:],
        b"\x01" + good[1:],
        good[:32],
        good + b"\x00",
        b"",
        b"\x02" + b32(x_off),
        b"\x03" + b32(x_off),
        b"\x02" + b32(P),
        b"\x03" + b32(P + 1),
        b"\x02" + b32(2**256 - 1),
    ]
    for pub in bad:
        with pytest.raises(ValueError):
            S.decompress(pub)
        assert S.verify(pub, digest, sig) is False
        with pytest.raises(Exception):
            PublicKey(pub)
    assert S.verify(good, digest, sig)


def test_x_at_or_above_p_rejected_even_if_reduced_point_exists():
    # a valid x, re-encoded as x + P (still < 2**256): must not be reduced silently
    x = 1
    while pow((x**3 + 7) % P, (P - 1) // 2, P) != 1:
        x += 1
    S.decompress(b"\x02" + b32(x))
    with pytest.raises(ValueError):
        S.decompress(b"\x02" + b32(x + P))


def test_decompress_compress_round_trip():
    rnd = random.Random(3)
    for _ in range(100):
        secret = rnd.randbytes(32)
        pk = PrivateKey(secret)
        full = pk.public_key.format(compressed=False)
        x, y = S.decompress(pk.public_key.format(compressed=True))
        assert (x, y) == (int.from_bytes(full[1:33], "big"), int.from_bytes(full[33:], "big"))
        assert S.compress(x, y) == pk.public_key.format(compressed=True)


EDGE_SCALARS = sorted(
    set(
        [1, 2, 3, 4, 7, 8, 15, 16, 17, 255, 256, N - 1, N - 2, N - 3, N // 2, N // 2 + 1, N // 3, S.LAMBDA, N - S.LAMBDA]
        + [1 << k for k in range(256)]
        + [(1 << k) - 1 for k in range(2, 257) if (1 << k) - 1 < N]
        + [((1 << 256) - 1) ^ ((1 << k) - 1) for k in range(129, 256)]  # long runs of ones then zeros
        + [((1 << k) - 1) << (256 - k) for k in range(1, 128)]
        + [(1 << 128) + d for d in (-1, 0, 1)]
        + [0x5555555555555555555555555555555555555555555555555555555555555555, int("aa" * 32, 16) % N]
        + [int("ff" * 16 + "00" * 16, 16), int("00" * 16 + "ff" * 16, 16), int("ff00" * 16, 16), int("0f" * 32, 16)]
        + [(S._A1 * k) % N for k in (1, 2, 3)]
        + [(-S._B1 * k) % N for k in (1, 2)]
    )
)


def test_public_key_edge_scalars():
    for d in EDGE_SCALARS:
        if not 0 < d < N:
            continue
        assert S.public_key(b32(d)) == PrivateKey(b32(d)).public_key.format(), hex(d)


def test_public_key_random():
    rnd = random.Random(11)
    for _ in range(300):
        d = rnd.randrange(1, N)
        assert S.public_key(b32(d)) == PrivateKey(b32(d)).public_key.format()


def test_invalid_secrets():
    for bad in (b32(0), b32(N), b32(N + 1), b"\xff" * 32, b"\x01" * 31, b"\x01" * 33, b""):
        with pytest.raises(ValueError):
            S.public_key(bad)
        with pytest.raises(ValueError):
            S.sign(bad, b"\x00" * 32)
    with pytest.raises(ValueError):
        S.sign(b32(1), b"\x00" * 31)


def test_edge_digests():
    for d in (1, 2, N - 1, 0xDEADBEEF):
        for digest in (b"\x00" * 32, b"\xff" * 32, b32(N), b32(N - 1), b32(1)):
            sig = S.sign(b32(d), digest)
            assert sig == cc_sign(b32(d), digest) == ecdsa_sign(b32(d), digest)
            assert S.verify(S.public_key(b32(d)), digest, sig)


def test_rfc6979_retries_match_python_ecdsa():
    rnd = random.Random(5)
    for _ in range(5):
        d = rnd.randrange(1, N)
        digest = rnd.randbytes(32)
        gen_k = S._rfc6979(b32(d), b32(int.from_bytes(digest, "big") % N))
        for retry in range(3):
            assert next(gen_k) == generate_k(N, d, hashlib.sha256, digest, retry_gen=retry)


# --- arithmetic internals ----------------------------------------------------------------


def test_glv_split_bounds():
    # The rounded split errs by at most 1/2 per basis vector (b2 = a1): the halves stay
    # within 128 bits, so their wNAF digits sit below bit 130 (secp256k1._streams).
    bound = max((abs(S._A1) + abs(S._A2)) // 2, (abs(S._B1) + abs(S._A1)) // 2) + 1
    assert bound < 2**128
    assert pow(S.BETA, 3, P) == 1 and pow(S.LAMBDA, 3, N) == 1
    lg = PrivateKey(b32(S.LAMBDA)).public_key.format(compressed=False)
    assert int.from_bytes(lg[1:33], "big") == S.BETA * S.GX % P
    rnd = random.Random(9)
    ks = [rnd.randrange(N) for _ in range(3000)] + EDGE_SCALARS + [0, N - 1]
    for k in ks:
        k %= N
        k1, k2 = S._split(k)
        assert (k1 + k2 * S.LAMBDA - k) % N == 0
        assert abs(k1) <= bound and abs(k2) <= bound


def test_inverse_and_sqrt():
    rnd = random.Random(2)
    for m in (P, N):
        for _ in range(200):
            a = rnd.randrange(1, m)
            assert S._inv(a, m) * a % m == 1
        assert S._inv(1, m) == 1
        assert S._inv(m - 1, m) == m - 1
    for _ in range(200):
        a = rnd.randrange(P)
        r = S._sqrt(a * a % P)
        assert r * r % P == a * a % P


def test_verify_x_coordinate_at_least_n():
    """R.x in [N, P): r = R.x - N, the r + N < P branch (libsecp256k1 accepts it too)."""
    t = 1
    while pow(((N + t) ** 3 + 7) % P, (P - 1) // 2, P) != 1:
        t += 1
    x = N + t
    y = pow((x**3 + 7) % P, (P + 1) // 4, P)
    R = ecdsa.ellipticcurve.PointJacobi(CURVE.curve, x, y, 1, N)
    r, s = t, 0x1234567
    z = int.from_bytes(sha(b"x >= n"), "big")
    w = pow(s, -1, N)
    u1, u2 = z * w % N, r * w % N
    Q = (R + (-(GPT * u1))) * pow(u2, -1, N)
    pub = S.compress(Q.x(), Q.y())
    sig = compact(r, s)
    digest = b32(z)
    assert S.verify(pub, digest, sig)
    assert cc_verify(pub, digest, sig)
    assert not S.verify(pub, digest, compact(r + 1, s))


def test_verify_exceptional_additions(monkeypatch):
    """Q = G with u1 = u2 makes the four-stream chain add a point to itself (doubling path);
    Q = -G with u1 = u2 sums to infinity (rejected)."""
    calls = []
    real = S._jadd
    monkeypatch.setattr(S, "_jadd", lambda *a: calls.append(1) or real(*a))
    rnd = random.Random(21)
    for _ in range(5):
        k = rnd.randrange(1, N)
        R = GPT * k
        r = R.x() % N
        z = r  # u1 = z/s = r/s = u2
        s = pow(k, -1, N) * (z + r) % N
        s = min(s, N - s)
        pub = S.public_key(b32(1))
        assert S.verify(pub, b32(z), compact(r, s))
        assert cc_verify(pub, b32(z), compact(r, s))
        pub_neg = S.public_key(b32(N - 1))
        assert not S.verify(pub_neg, b32(z), compact(r, s))
        assert not cc_verify(pub_neg, b32(z), compact(r, s))
    assert calls  # the special-case path really ran


def test_verify_digest_zero():
    secret = b32(77)
    sig = S.sign(secret, b32(0))
    assert S.verify(S.public_key(secret), b32(0), sig)
    assert S.verify(S.public_key(secret), b32(N), S.sign(secret, b32(N)))


# --- the generated table -------------------------------------------------------------------


def test_table_is_fresh():
    assert gen.main(["--check"]) == 0
    with open(gen.TARGET) as f:
        assert f.read() == gen.render()


def test_table_entries_are_multiples_of_g():
    from plugpay.protocol import secp256k1_table as T

    # Loaded from a .mpy file the table is heap: it stays small (see the module's docstring).
    assert len(T.GODD_TABLE) == 64 << (T.GODD_W - 2) <= 2048
    for j in range(1 << (T.GODD_W - 2)):
        full = PrivateKey(b32(2 * j + 1)).public_key.format(compressed=False)
        assert T.GODD_TABLE[64 * j : 64 * j + 64] == full[1:]
