"""Strict deterministic CBOR for untrusted bytes: one rule, two backends.

``cbor2`` (C-accelerated) is used on CPython, ``cbor`` (this package's small codec) on
MicroPython. Whatever the backend, ``loads`` accepts bytes only if they decode to the
supported subset *and* re-encode to exactly the same bytes, so non-shortest integers,
indefinite lengths and trailing bytes are all refused by the same check, and two nodes
can never disagree about which encoding of a value is the valid one.
"""
from . import cbor

MAX_BYTES = 65536
MAX_DEPTH = 16

try:
    import cbor2 as _cbor2
except ImportError:
    _cbor2 = None

BACKEND = None


def use(name):
    """Pick the backend: ``"cbor2"`` (CPython) or ``"plugpay"`` (this package's codec)."""
    global BACKEND, _raw_loads, _raw_dumps
    if name == "cbor2":
        if _cbor2 is None:
            raise ImportError("cbor2 is not installed")
        _raw_loads, _raw_dumps = _cbor2.loads, _cbor2.dumps
    elif name == "plugpay":
        _raw_loads, _raw_dumps = None, cbor.dumps
    else:
        raise ValueError("unknown CBOR backend " + repr(name))
    BACKEND = name


use("plugpay" if _cbor2 is None else "cbor2")


class DecodeError(ValueError):
    """Bytes that are not a valid plugpay encoding; ``field`` names where, ``reason`` what."""

    def __init__(self, field, reason):
        super().__init__(field + ": " + reason)
        self.field = field
        self.reason = reason


def _check_subset(value, depth):
    """Refuse what cbor2 decodes but plugpay does not use (floats, maps, tags, big ints)."""
    if value is None or value is True or value is False:
        return
    t = type(value)
    if t is int:
        if value > cbor.MAX_UINT or value < -1 - cbor.MAX_UINT:
            raise cbor.CBORError("integer out of the 64-bit CBOR range")
    elif t is bytes or t is str:
        return
    elif t is list:
        if depth <= 0:
            raise cbor.CBORError("nesting too deep")
        for item in value:
            _check_subset(item, depth - 1)
    else:
        raise cbor.CBORError(t.__name__ + " is not used by plugpay")


def dumps(value):
    """Deterministic CBOR of a subset value (ints, bytes, str, lists/tuples, bools, None)."""
    return _raw_dumps(value)


def loads(data, field="message", max_bytes=MAX_BYTES):
    """Decode untrusted ``data`` strictly, raising ``DecodeError`` naming ``field``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(field, "expected bytes")
    if len(data) > max_bytes:
        raise DecodeError(field, "%d bytes exceed the %d-byte limit" % (len(data), max_bytes))
    data = bytes(data)
    try:
        if _raw_loads is None:
            value = cbor.loads(data, MAX_DEPTH)
        else:
            value = _raw_loads(data)
            _check_subset(value, MAX_DEPTH)
    except cbor.CBORError as e:
        raise DecodeError(field, str(e))
    except Exception as e:  # cbor2 raises its own classes, RecursionError, MemoryError...
        raise DecodeError(field, "not CBOR: " + str(e))
    if dumps(value) != data:
        raise DecodeError(field, "not deterministic CBOR (non-shortest head, indefinite length or trailing bytes)")
    return value
