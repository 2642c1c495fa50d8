"""Authenticated encryption for secrets at rest: AES-256-CTR, then HMAC-SHA256.

MicroPython has no AEAD mode, so this is encrypt-then-MAC built from what every platform
has: ``cryptolib`` (``ucryptolib``) ECB blocks on a device, the ``cryptography`` package on
CPython, and the pure-Python ``aes`` module where neither exists (the WebAssembly port).
Counter mode needs only the forward cipher, and the three backends produce identical bytes.

Sealed blob: ``version(1) || nonce(16) || ciphertext || tag(32)``; the tag covers version,
nonce, the associated data (length-prefixed) and the ciphertext, and is checked in constant
time before anything is decrypted.
"""
from .port import MICROPYTHON, consteq, hmac_sha256, urandom

VERSION = 1
NONCE_BYTES = 16
TAG_BYTES = 32
OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES


class AuthError(ValueError):
    """A sealed blob that is truncated, of an unknown version, or fails its MAC."""


def _counter_blocks(nonce, n):
    c = int.from_bytes(nonce, "big")
    out = bytearray()
    for i in range(n):
        out.extend(((c + i) & ((1 << 128) - 1)).to_bytes(16, "big"))
    return out


def _xor(data, stream):
    return bytes(a ^ b for a, b in zip(data, stream))


def _ctr_cryptolib(key, nonce, data):
    blocks = _counter_blocks(nonce, (len(data) + 15) // 16)
    return _xor(data, _cryptolib.aes(key, 1).encrypt(blocks))  # mode 1: ECB


_round_keys = (None, None)  # the last key's expansion: a wallet seals many records under one


def _ctr_pure(key, nonce, data):
    global _round_keys
    from . import aes as _aes  # loaded only on platforms that need it

    if _round_keys[0] != key:
        _round_keys = (key, _aes.expand_key(key))
    rk = _round_keys[1]
    blocks = _counter_blocks(nonce, (len(data) + 15) // 16)
    stream = bytearray()
    for i in range(0, len(blocks), 16):
        stream.extend(_aes.encrypt_block(rk, blocks[i : i + 16]))
    return _xor(data, stream)


def _backend():
    """``(name, ctr)``: ``cryptography`` on CPython (``aead_cpython``, which a device never
    loads), else ``cryptolib`` (``ucryptolib``), else the pure ``aes`` module."""
    if not MICROPYTHON:
        try:
            from .aead_cpython import ctr

            return "cryptography", ctr
        except ImportError:
            pass
    try:
        import cryptolib
    except ImportError:
        try:
            import ucryptolib as cryptolib
        except ImportError:
            return "pure", _ctr_pure
    global _cryptolib
    _cryptolib = cryptolib
    return "cryptolib", _ctr_cryptolib


_cryptolib = None
BACKEND, _ctr = _backend()


_last = (None, None, None)  # the last key's subkeys: a wallet or the RA seals under one key


def _subkeys(key):
    global _last
    if not isinstance(key, bytes) or len(key) != 32:
        raise ValueError("a sealing key is 32 bytes")
    if _last[0] != key:
        _last = (key, hmac_sha256(key, b"plugpay/aead/enc"), hmac_sha256(key, b"plugpay/aead/mac"))
    return _last[1], _last[2]


def _mac(mac_key, nonce, aad, ciphertext):
    return hmac_sha256(mac_key, bytes((VERSION,)) + nonce + len(aad).to_bytes(4, "big") + aad + ciphertext)


def seal(key, plaintext, aad=b"", nonce=None):
    """Encrypt and authenticate ``plaintext`` under a 32-byte key; ``aad`` is bound, not hidden."""
    enc_key, mac_key = _subkeys(key)
    if nonce is None:
        nonce = urandom(NONCE_BYTES)
    ciphertext = _ctr(enc_key, nonce, plaintext)
    return bytes((VERSION,)) + nonce + ciphertext + _mac(mac_key, nonce, aad, ciphertext)


def unseal(key, blob, aad=b""):
    """Check and decrypt a sealed blob; raise ``AuthError`` on any tampering or truncation."""
    enc_key, mac_key = _subkeys(key)
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < OVERHEAD:
        raise AuthError("sealed data truncated")
    blob = bytes(blob)
    if blob[0] != VERSION:
        raise AuthError("unknown sealed-data version %d" % blob[0])
    nonce = blob[1 : 1 + NONCE_BYTES]
    ciphertext = blob[1 + NONCE_BYTES : len(blob) - TAG_BYTES]
    if not consteq(_mac(mac_key, nonce, aad, ciphertext), blob[len(blob) - TAG_BYTES :]):
        raise AuthError("sealed data failed authentication (tampered, truncated or wrong key)")
    return _ctr(enc_key, nonce, ciphertext)
