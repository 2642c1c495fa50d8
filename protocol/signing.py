"""secp256k1 ECDSA with one byte format on every backend, picked once at import time.

Format: 64-byte compact ``r||s`` with low S, RFC 6979 deterministic nonces over a SHA-256
digest, 33-byte compressed public keys. Backends, best first (as embit picks its own):

1. ``native``: a C ``secp256k1`` module compiled into a board's MicroPython firmware, with
   the API of the secp256k1-embedded user module embit uses (``ec_pubkey_create``,
   ``ecdsa_sign``, ``ecdsa_signature_serialize_compact`` ...). Only a module with that API
   is taken, so the unrelated ``secp256k1`` package on PyPI is ignored.
2. ``coincurve``: libsecp256k1 on CPython (``signing_cpython``, as the next).
3. ``ecdsa``: python-ecdsa, the reference.
4. ``pure``: this package's ``secp256k1`` module, for boards without a native module. It is
   not constant-time (big integers are not): fine for tests and prototypes, not for
   production keys.

Backends disagree at the edges (python-ecdsa accepts a high-S signature, libsecp256k1 does
not), so this module rejects such input itself before any backend runs: ``r`` or ``s``
outside ``1..n-1``, ``s > n/2``, and public keys that are malformed or off the curve. Two
replicas on different backends therefore always agree on validity.
"""
from .port import MICROPYTHON, sha256, urandom

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = N >> 1
P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


class _Native:
    verify_checks_curve = True  # verify parses the key (libsecp256k1) first
    name = "native"

    def __init__(self):
        import secp256k1

        if not hasattr(secp256k1, "ecdsa_signature_serialize_compact"):
            raise ImportError("secp256k1 module without the secp256k1-embedded API")
        self.m = secp256k1

    def public_key(self, secret):
        m = self.m
        return m.ec_pubkey_serialize(m.ec_pubkey_create(secret), m.EC_COMPRESSED)

    def sign(self, secret, digest):
        m = self.m
        return m.ecdsa_signature_serialize_compact(m.ecdsa_sign(digest, secret))

    def on_curve(self, pubkey):
        try:
            self.m.ec_pubkey_parse(pubkey)
            return True
        except ValueError:
            return False

    def verify(self, pubkey, digest, sig):
        m = self.m
        try:
            return bool(m.ecdsa_verify(m.ecdsa_signature_parse_compact(sig), digest, m.ec_pubkey_parse(pubkey)))
        except ValueError:
            return False


class _Pure:
    verify_checks_curve = True
    name = "pure"

    def __init__(self):
        from . import secp256k1

        self.m = secp256k1
        self.public_key = secp256k1.public_key
        self.sign = secp256k1.sign
        self.verify = secp256k1.verify

    def on_curve(self, pubkey):
        try:
            self.m.decompress(pubkey)
            return True
        except ValueError:
            return False


def _classes():
    """The backends this runtime can have, best first: on MicroPython the native module or
    the pure one, so a device never loads the CPython backends (``signing_cpython``)."""
    if MICROPYTHON:
        return (_Native, _Pure)
    from .signing_cpython import Coincurve, PythonEcdsa

    return (_Native, Coincurve, PythonEcdsa, _Pure)


_CLASSES = _classes()
_loaded = {}


def _load(name):
    if name not in _loaded:
        for cls in _CLASSES:
            if cls.name == name:
                _loaded[name] = cls()
                break
        else:
            raise ValueError("unknown ECDSA backend " + repr(name))
    return _loaded[name]


def available():
    """Names of the backends that import on this platform, best first."""
    names = []
    for cls in _CLASSES:
        try:
            _load(cls.name)
            names.append(cls.name)
        except ImportError:
            pass
    return names


def use(name):
    """Switch every later call to backend ``name`` (benchmarks and cross-backend tests)."""
    global _backend, BACKEND
    _backend = _load(name)
    BACKEND = name


def _pick():
    for cls in _CLASSES:
        try:
            use(cls.name)
            return
        except ImportError:
            pass


BACKEND = None
_backend = None
_pick()


class SignatureError(ValueError):
    """A key or signature that is malformed; ``verify`` returns False instead of raising."""


def check_secret(secret):
    if not isinstance(secret, bytes) or len(secret) != 32:
        raise SignatureError("a secret key is 32 bytes")
    d = int.from_bytes(secret, "big")
    if d == 0 or d >= N:
        raise SignatureError("secret key out of range 1..n-1")


def valid_signature(sig):
    """True if ``sig`` is 64 bytes with 1 <= r < n and 1 <= s <= n/2 (low S)."""
    if not isinstance(sig, bytes) or len(sig) != 64:
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    return 0 < r < N and 0 < s <= HALF_N


def _well_formed_key(pubkey):
    if not isinstance(pubkey, bytes) or len(pubkey) != 33 or pubkey[0] not in (2, 3):
        return False
    return int.from_bytes(pubkey[1:], "big") < P


def valid_public_key(pubkey):
    """True if ``pubkey`` is a 33-byte compressed point on secp256k1."""
    return _well_formed_key(pubkey) and _backend.on_curve(pubkey)


def new_secret():
    """A fresh random secret key."""
    while True:
        secret = urandom(32)
        d = int.from_bytes(secret, "big")
        if 0 < d < N:
            return secret


def public_key(secret):
    check_secret(secret)
    return _backend.public_key(secret)


def sign_digest(secret, digest):
    """Sign a 32-byte digest: compact, low-S, RFC 6979."""
    check_secret(secret)
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise SignatureError("a digest is 32 bytes")
    sig = _backend.sign(secret, digest)
    s = int.from_bytes(sig[32:], "big")
    if s > HALF_N:  # every backend normalises already; this makes it a property of the shim
        sig = sig[:32] + (N - s).to_bytes(32, "big")
    return sig


def verify_digest(pubkey, digest, sig):
    """True only for a valid low-S signature by ``pubkey`` over the 32-byte ``digest``."""
    if not valid_signature(sig) or not _well_formed_key(pubkey):
        return False
    if not isinstance(digest, bytes) or len(digest) != 32:
        return False
    # libsecp256k1 and the pure backend parse (decompress) the key before any signature
    # arithmetic and refuse a point off the curve; python-ecdsa gets the check here.
    if not _backend.verify_checks_curve and not _backend.on_curve(pubkey):
        return False
    return _backend.verify(pubkey, digest, sig)


def shared_secret(secret, pubkey):
    """ECDH: the 32-byte x coordinate of ``secret * pubkey``, the same bytes at both ends of
    a key exchange. libsecp256k1 computes it itself; every other backend uses this
    package's ``secp256k1`` (not constant-time, see above)."""
    check_secret(secret)
    if not valid_public_key(pubkey):
        raise SignatureError("not a compressed public key on secp256k1")
    multiply = getattr(_backend, "multiply", None)
    if multiply is None:
        from . import secp256k1

        multiply = secp256k1.multiply
    return multiply(pubkey, secret)[1:]


def sign(secret, struct):
    """Sign a structure's domain-separated body (see ``schema.Struct.signing_digest``)."""
    return sign_digest(secret, struct.signing_digest())


def verify(pubkey, struct, sig):
    return verify_digest(pubkey, struct.signing_digest(), sig)


def message_digest(domain, message):
    """Digest for signing raw bytes under a domain prefix such as ``b"plugpay/ra-batch/v1"``."""
    return sha256(domain + message)
