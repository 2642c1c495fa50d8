"""Compact pure-Python secp256k1 ECDSA: the backend of boards without a native module.

Same bytes as libsecp256k1 (coincurve) and python-ecdsa: 33-byte compressed public keys,
64-byte compact ``r || s`` signatures with RFC 6979 (HMAC-SHA256) nonces over a 32-byte
digest and low S. ``verify`` rejects high S, ``r``/``s`` outside 1..n-1 and bad keys by
returning False. Runs unchanged on CPython and MicroPython.

Speed and heap (a board without the native module; there a field multiplication and
reduction ``a * b % P`` is a few microseconds and everything else is interpreter overhead):

* k*G (sign, public_key) and u1*G + u2*Q (verify) split each scalar with the GLV
  endomorphism (lambda*(x, y) = (beta*x, y)) into halves of at most 128 bits and run one
  doubling chain of ~129 steps over their wNAF digit streams (Shamir's trick): two streams
  for k*G, four for verify. The odd multiples of G come from ``secp256k1_table`` (1 KB);
  those of Q are made affine with one batched inversion. The x coordinate is compared as
  r * Z**2 == X, so no final inversion.
* Why no bigger table: loaded from a .mpy file, a table is heap (a board without PSRAM has
  ~110 KB); the 35 KB fixed-base table signing used before made k*G ~1.8x faster and cost a
  third of that heap.
* Jacobian coordinates specialised for a = 0, mixed Jacobian + affine additions, lazy
  reductions, hot loops inlined with globals hoisted into locals.

Not constant-time (big integers are not): see ``signing``.
"""
from .port import const, hmac_sha256
from .secp256k1_table import GODD_TABLE, GODD_W

P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8
G = (GX, GY)
HALF_N = N >> 1

# GLV endomorphism: lambda * (x, y) = (BETA * x, y), LAMBDA**3 == 1 mod N, BETA**3 == 1 mod P.
BETA = 0x7AE96A2B657C07106E64479EAC3434E99CF0497512F58995C1396C28719501EE
LAMBDA = 0x5363AD4CC05C30E0A5261C028812645A122E22EA20816678DF02967C1B23BD72
_A1 = 0x3086D221A7D46BCDE86C90E49284EB15
_B1 = -0xE4437ED6010E88286F547FA90ABFE4C3
_A2 = 0x114CA50F7A8E2F3F657C1108D9D44CFD8
_ROUND = N >> 1

_WQ = const(5)  # wNAF width for Q in verify: odd multiples 1..15


def _inv(a, m):
    """a**-1 mod m for 0 < a < m, m prime (extended Euclid: ~4x cheaper than pow on MicroPython)."""
    r0 = m
    r1 = a
    t0 = 0
    t1 = 1
    while r1:
        q, r2 = divmod(r0, r1)
        r0 = r1
        r1 = r2
        t2 = t0 - q * t1
        t0 = t1
        t1 = t2
    if r0 != 1:
        raise ValueError("not invertible")
    return t0 % m


def _sqrt(a):
    """A square root of a mod P (P = 3 mod 4: a**((P+1)/4)), addition chain of libsecp256k1."""
    p = P
    x2 = a * a % p * a % p
    x3 = x2 * x2 % p * a % p
    t = x3
    for _ in range(3):
        t = t * t % p
    x6 = t * x3 % p
    t = x6
    for _ in range(3):
        t = t * t % p
    x9 = t * x3 % p
    t = x9
    for _ in range(2):
        t = t * t % p
    x11 = t * x2 % p
    t = x11
    for _ in range(11):
        t = t * t % p
    x22 = t * x11 % p
    t = x22
    for _ in range(22):
        t = t * t % p
    x44 = t * x22 % p
    t = x44
    for _ in range(44):
        t = t * t % p
    x88 = t * x44 % p
    t = x88
    for _ in range(88):
        t = t * t % p
    x176 = t * x88 % p
    t = x176
    for _ in range(44):
        t = t * t % p
    x220 = t * x44 % p
    t = x220
    for _ in range(3):
        t = t * t % p
    x223 = t * x3 % p
    t = x223
    for _ in range(23):
        t = t * t % p
    t = t * x22 % p
    for _ in range(6):
        t = t * t % p
    t = t * x2 % p
    t = t * t % p
    return t * t % p


def compress(x, y):
    """33-byte SEC1 compressed encoding of the affine point (x, y)."""
    return bytes((2 + (y & 1),)) + x.to_bytes(32, "big")


def decompress(pubkey33):
    """(x, y) of a 33-byte compressed point; ValueError if it is not one on the curve."""
    if len(pubkey33) != 33:
        raise ValueError("compressed public key must be 33 bytes")
    prefix = pubkey33[0]
    if prefix != 2 and prefix != 3:
        raise ValueError("bad public key prefix")
    p = P
    x = int.from_bytes(pubkey33[1:], "big")
    if x >= p:
        raise ValueError("public key x >= p")
    c = (x * x % p * x + 7) % p
    y = _sqrt(c)
    if y * y % p != c:
        raise ValueError("public key x not on the curve")
    if (y & 1) != (prefix & 1):
        y = p - y
    return x, y


def _jdouble(X, Y, Z):
    """2 * (X, Y, Z) in Jacobian coordinates, a = 0 (no point of order 2 exists)."""
    p = P
    b = Y * Y % p
    d = (X * b << 2) % p
    e = X * X % p * 3
    X3 = (e * e - (d << 1)) % p
    return X3, (e * (d - X3) - (b * b << 3)) % p, (Y * Z << 1) % p


def _jadd(X1, Y1, Z1, X2, Y2, Z2):
    """Sum of two Jacobian points, Z = 0 meaning infinity; all special cases handled."""
    if not Z1:
        return X2, Y2, Z2
    if not Z2:
        return X1, Y1, Z1
    p = P
    z1z1 = Z1 * Z1 % p
    z2z2 = Z2 * Z2 % p
    u1 = X1 * z2z2 % p
    h = X2 * z1z1 % p - u1
    s1 = Y1 * (Z2 * z2z2 % p) % p
    r = Y2 * (Z1 * z1z1 % p) % p - s1
    if not h:
        if r:
            return 0, 1, 0
        return _jdouble(X1, Y1, Z1)
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    X3 = (r * r - hhh - (v << 1)) % p
    return X3, (r * (v - X3) - s1 * hhh) % p, Z1 * Z2 % p * h % p


def _split(k):
    """GLV: (k1, k2) with k = k1 + k2 * LAMBDA mod N and |k1|, |k2| < 2**128."""
    c1 = (_A1 * k + _ROUND) // N
    c2 = (-_B1 * k + _ROUND) // N
    return k - c1 * _A1 - c2 * _A2, -c1 * _B1 - c2 * _A1


def _streams(ks, qxs, qys):
    """The additions of u1*G + u2*Q (or k*G) as ``ev``: ev[i] lists the affine points
    (x, y, x, y, ...) to add after the doubling at bit i. ``ks`` holds GLV halves: two over
    G (from GODD_TABLE, the second times lambda) and, for verify, two over Q (odd multiples
    ``qxs``, ``qys``)."""
    p = P
    ev = [None] * 140
    tbl = GODD_TABLE
    beta = BETA
    for src in range(len(ks)):
        k = ks[src]
        sgn = k < 0
        if sgn:
            k = -k
        digits = _wnaf(k, GODD_W if src < 2 else _WQ)
        for t in range(0, len(digits), 2):
            d = digits[t + 1]
            neg = (d < 0) != sgn
            if d < 0:
                d = -d
            j = d >> 1
            if src < 2:
                o = j * 64
                x = int.from_bytes(tbl[o : o + 32], "big")
                y = int.from_bytes(tbl[o + 32 : o + 64], "big")
                if src:
                    x = x * beta % p
            else:
                x = qxs[j] if src == 2 else qxs[j] * beta % p
                y = qys[j]
            if neg:
                y = p - y
            i = digits[t]
            e = ev[i]
            if e is None:
                ev[i] = [x, y]
            else:
                e.append(x)
                e.append(y)
    return ev


def _chain(ev):
    """Sum of the points of ``_streams`` by one doubling chain (Shamir's trick): Jacobian
    (X, Y, Z), Z = 0 for infinity."""
    p = P
    top = len(ev) - 1
    while top >= 0 and ev[top] is None:
        top -= 1
    inf = True
    X = Y = Z = 0
    for i in range(top, -1, -1):
        if not inf:
            b = Y * Y % p
            d = (X * b << 2) % p
            e = X * X % p * 3
            Z = (Y * Z << 1) % p
            X = (e * e - (d << 1)) % p
            Y = (e * (d - X) - (b * b << 3)) % p
        e = ev[i]
        if e is not None:
            ev[i] = None  # free the points as they are used
            j = 0
            le = len(e)
            while j < le:
                x2 = e[j]
                y2 = e[j + 1]
                j += 2
                if inf:
                    X = x2
                    Y = y2
                    Z = 1
                    inf = False
                    continue
                zz = Z * Z % p
                h = x2 * zz % p - X
                rr = y2 * (zz * Z % p) % p - Y
                if not h:
                    X, Y, Z = _jadd(X, Y, Z, x2, y2, 1)
                    inf = not Z
                    continue
                hh = h * h % p
                hhh = h * hh  # left unreduced: only subtracted and multiplied once
                v = X * hh
                X = (rr * rr - hhh - (v << 1)) % p
                Y = (rr * (v - X) - Y * hhh) % p
                Z = Z * h % p
    if inf:
        return 0, 1, 0
    return X, Y, Z


def _mul_g(k):
    """k * G as Jacobian (X, Y, Z), Z = 0 for infinity; 0 <= k < N."""
    return _chain(_streams(_split(k), None, None))


def _to_affine(X, Y, Z):
    p = P
    zi = _inv(Z, p)
    zi2 = zi * zi % p
    return X * zi2 % p, Y * zi2 % p * zi % p


def _secret(secret):
    if len(secret) != 32:
        raise ValueError("secret must be 32 bytes")
    d = int.from_bytes(secret, "big")
    if not 0 < d < N:
        raise ValueError("secret out of range")
    return d


def public_key(secret):
    """33-byte compressed public key of a 32-byte secret (1 <= d < N, else ValueError)."""
    X, Y, Z = _mul_g(_secret(secret))
    x, y = _to_affine(X, Y, Z)
    return compress(x, y)


def multiply(pubkey33, secret):
    """33-byte compressed d * Q for a secret d and a compressed point Q: the point of an
    ECDH shared secret. Plain double-and-add (ECDH runs once per session, not per message).
    ValueError for a bad key or secret."""
    d = _secret(secret)
    x, y = decompress(pubkey33)
    X, Y, Z = 0, 1, 0  # infinity
    for bit in range(255, -1, -1):  # MicroPython's int has no bit_length; doubling infinity is cheap
        X, Y, Z = _jdouble(X, Y, Z)
        if (d >> bit) & 1:
            X, Y, Z = _jadd(X, Y, Z, x, y, 1)
    x, y = _to_affine(X, Y, Z)  # never infinity: 0 < d < N, the order of every point
    return compress(x, y)


def _rfc6979(x, h1):
    """RFC 6979 section 3.2 nonces (HMAC-SHA256, qlen = hlen = 256) for the 32-byte secret x
    and h1 = bits2octets(digest); yields candidates 1 <= k < N, retrying as 3.2.h says."""
    V = b"\x01" * 32
    K = hmac_sha256(b"\x00" * 32, V + b"\x00" + x + h1)
    V = hmac_sha256(K, V)
    K = hmac_sha256(K, V + b"\x01" + x + h1)
    V = hmac_sha256(K, V)
    while True:
        V = hmac_sha256(K, V)
        k = int.from_bytes(V, "big")
        if 0 < k < N:
            yield k
        K = hmac_sha256(K, V + b"\x00")
        V = hmac_sha256(K, V)


def sign(secret, digest):
    """64-byte compact low-S signature r || s of a 32-byte digest, RFC 6979 nonce."""
    d = _secret(secret)
    if len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    n = N
    p = P
    z = int.from_bytes(digest, "big")
    # bits2int(h1) = int(h1) for a 256-bit hash; bits2octets(h1) = int(h1) mod q, 32 bytes
    for k in _rfc6979(bytes(secret), (z % n).to_bytes(32, "big")):
        X, _, Z = _mul_g(k)
        zi = _inv(Z, p)
        r = X * (zi * zi % p) % p % n
        if r:
            s = _inv(k, n) * (z + r * d) % n
            if s:  # r = 0 or s = 0: next nonce, as libsecp256k1 and python-ecdsa do
                if s > HALF_N:
                    s = n - s
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _wnaf(k, w):
    """Width-w wNAF of k >= 0 as a flat list [pos, digit, pos, digit, ...] (odd digits, |digit| < 2**(w-1))."""
    full = 1 << w
    half = full >> 1
    mask = full - 1
    out = []
    i = 0
    while k:
        if k & 1:
            d = k & mask
            if d >= half:
                d -= full
            k -= d
            out.append(i)
            out.append(d)
            k >>= w
            i += w
        else:
            k >>= 1
            i += 1
    return out


def verify(pubkey33, digest, sig64):
    """True iff sig64 is a valid low-S compact signature of digest under pubkey33."""
    n = N
    try:
        if len(sig64) != 64 or len(digest) != 32:
            return False
        r = int.from_bytes(sig64[:32], "big")
        s = int.from_bytes(sig64[32:], "big")
        if not 0 < r < n or not 0 < s <= HALF_N:
            return False
        z = int.from_bytes(digest, "big")
        qx, qy = decompress(pubkey33)
    except (ValueError, TypeError, IndexError):  # malformed input of any kind: not valid
        return False
    p = P
    w = _inv(s, n)
    u1 = z * w % n
    u2 = r * w % n

    # Odd multiples (2j+1) * Q, j < 2**(_WQ-2), made affine with one shared inversion.
    X, Y, Z = _jdouble(qx, qy, 1)  # 2Q, used as affine (X, Y) on the curve scaled by Z
    z2 = Z * Z % p
    dx = X
    dy = Y
    X = qx * z2 % p
    Y = qy * (z2 * Z % p) % p
    Zd = Z
    m = 1 << (_WQ - 2)
    txs = [X]
    tys = [Y]
    tzs = [1]
    Z = 1
    for _ in range(m - 1):  # on the scaled curve: T += 2Q with mixed additions
        zz = Z * Z % p
        h = dx * zz % p - X
        rr = dy * (zz * Z % p) % p - Y
        if not h:  # only for tiny-order points, which secp256k1 does not have
            return False
        hh = h * h % p
        hhh = h * hh  # left unreduced: only subtracted and multiplied once
        v = X * hh
        X = (rr * rr - hhh - (v << 1)) % p
        Y = (rr * (v - X) - Y * hhh) % p
        Z = Z * h % p
        txs.append(X)
        tys.append(Y)
        tzs.append(Z)
    # affine on the real curve: x = X / (Z Zd)**2, y = Y / (Z Zd)**3; one batched inversion
    acc = [0] * m
    a = 1
    for j in range(m):
        z = tzs[j] * Zd % p
        tzs[j] = z
        a = a * z % p
        acc[j] = a
    a = _inv(a, p)
    qxs = [0] * m
    qys = [0] * m
    for j in range(m - 1, -1, -1):
        if j:
            zi = a * acc[j - 1] % p
            a = a * tzs[j] % p
        else:
            zi = a
        zi2 = zi * zi % p
        qxs[j] = txs[j] * zi2 % p
        qys[j] = tys[j] * zi2 % p * zi % p

    X, Y, Z = _chain(_streams(_split(u1) + _split(u2), qxs, qys))
    if not Z:
        return False
    zz = Z * Z % p
    if r * zz % p == X:
        return True
    r += n
    return r < p and r * zz % p == X
