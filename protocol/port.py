"""The platform shim: the one module that knows which runtime it is on.

Everything else in ``protocol/`` and ``firmware/`` asks this module for time, random
bytes and hashing, so the same code runs on CPython (host, Raspberry Pi) and MicroPython
(ESP32, the WebAssembly port used in CI). Cipher, signature and CBOR backends are picked
in their own modules (``aead``, ``signing``, ``codec``) the same way: best available
first, chosen once at import time.
"""
import sys

MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


import hashlib


def sha256(data):
    """SHA-256 digest of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


try:
    from hmac import digest as _hmac_digest  # CPython: one C call
except ImportError:  # MicroPython: micropython-lib's hmac.py costs ~0.5 ms a call there
    _hmac_digest = None

_BLOCK = const(64)
_IPAD = int.from_bytes(bytes(0x36 for _ in range(_BLOCK)), "big")
_OPAD = int.from_bytes(bytes(0x5C for _ in range(_BLOCK)), "big")


def _hmac_sha256_fallback(key, msg):
    """RFC 2104 HMAC-SHA256; the pads are XORed as one big integer (~20 us on the device)."""
    if len(key) > _BLOCK:
        key = sha256(key)
    k = int.from_bytes(key, "big") << (8 * (_BLOCK - len(key)))
    inner = hashlib.sha256((k ^ _IPAD).to_bytes(_BLOCK, "big"))
    inner.update(msg)
    outer = hashlib.sha256((k ^ _OPAD).to_bytes(_BLOCK, "big"))
    outer.update(inner.digest())
    return outer.digest()


if _hmac_digest is not None:

    def hmac_sha256(key, msg):
        """HMAC-SHA256 of ``msg`` under ``key`` (32 bytes)."""
        return _hmac_digest(key, msg, "sha256")

else:
    hmac_sha256 = _hmac_sha256_fallback


def consteq(a, b):
    """Compare two byte strings without an early exit on the first difference."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0


def _random_source():
    import os

    if hasattr(os, "urandom"):  # CPython, ESP32 (hardware RNG)
        return os.urandom
    try:
        import js  # the WebAssembly port: the host's CSPRNG

        def _js_urandom(n):
            buf = js.Uint8Array.new(n)
            js.crypto.getRandomValues(buf)
            return bytes(buf)

        return _js_urandom
    except ImportError:
        pass

    def _none(n):
        raise OSError("no cryptographic random source on this platform")

    return _none


urandom = _random_source()

import time

if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_us = time.ticks_us
else:

    def ticks_ms():
        """Monotonic milliseconds (CPython stand-in for MicroPython's ``time.ticks_ms``)."""
        return time.monotonic_ns() // 1000000

    def ticks_us():
        """Monotonic microseconds."""
        return time.monotonic_ns() // 1000

    def ticks_diff(end, start):
        """``end - start``; CPython ticks do not wrap."""
        return end - start


if hasattr(time, "sleep_ms"):
    sleep_ms = time.sleep_ms
else:

    def sleep_ms(ms):
        """Sleep ``ms`` milliseconds (CPython stand-in for MicroPython's ``time.sleep_ms``)."""
        time.sleep(ms / 1000)


def collect():
    """Free garbage between protocol phases (``gc.collect()``), a no-op cost on CPython."""
    import gc

    gc.collect()
