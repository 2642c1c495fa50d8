"""A small CBOR codec for the subset plugpay's wire formats use, for MicroPython.

No MicroPython CBOR package exists in the registries, so the device carries this one;
CPython uses ``cbor2`` (see ``codec``), and the tests hold the two byte-for-byte equal.

The subset (RFC 8949): unsigned and negative integers up to 64 bits, byte strings, text
strings, arrays, ``false``, ``true`` and ``null``. Encoding is deterministic (shortest
heads, definite lengths). Decoding refuses everything outside the subset (maps, tags,
floats, other simple values, indefinite lengths) but takes non-shortest heads: the one
strictness rule, applied by ``codec`` to both backends, is that the bytes must re-encode
identically.
"""
from .port import const

_UINT = const(0x00)
_NINT = const(0x20)
_BYTES = const(0x40)
_TEXT = const(0x60)
_ARRAY = const(0x80)
_FALSE = const(0xF4)
_TRUE = const(0xF5)
_NULL = const(0xF6)

MAX_UINT = (1 << 64) - 1


class CBORError(ValueError):
    """Bytes that are not CBOR of the supported subset, or a value that cannot be encoded."""


def _head(out, major, n):
    if n < 24:
        out.append(major | n)
    elif n < 0x100:
        out.append(major | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(major | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(major | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n <= MAX_UINT:
        out.append(major | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError("integer out of the 64-bit CBOR range")


def _encode(out, value):
    # bool before int: on CPython True is an int.
    if value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif value is None:
        out.append(_NULL)
    elif isinstance(value, int):
        if value >= 0:
            _head(out, _UINT, value)
        else:
            _head(out, _NINT, -1 - value)
    elif isinstance(value, (bytes, bytearray)):
        _head(out, _BYTES, len(value))
        out.extend(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(out, _TEXT, len(raw))
        out.extend(raw)
    elif isinstance(value, (list, tuple)):
        _head(out, _ARRAY, len(value))
        for item in value:
            _encode(out, item)
    else:
        raise CBORError("cannot encode type " + type(value).__name__)


def dumps(value):
    """Deterministic CBOR encoding of ``value`` (lists and tuples become arrays)."""
    out = bytearray()
    _encode(out, value)
    return bytes(out)


def _read_head(data, i, end):
    if i >= end:
        raise CBORError("truncated")
    ib = data[i]
    info = ib & 0x1F
    i += 1
    if info < 24:
        return ib, info, i
    if info > 27:
        raise CBORError("indefinite length or reserved head 0x%02x" % ib)
    size = 1 << (info - 24)
    if i + size > end:
        raise CBORError("truncated")
    return ib, int.from_bytes(data[i : i + size], "big"), i + size


def _decode(data, i, end, depth):
    ib, n, i = _read_head(data, i, end)
    major = ib & 0xE0
    if major == _UINT:
        return n, i
    if major == _NINT:
        return -1 - n, i
    if major == _BYTES or major == _TEXT:
        if n > end - i:  # before any allocation: a huge declared length is just truncation
            raise CBORError("truncated")
        raw = bytes(data[i : i + n])
        if major == _BYTES:
            return raw, i + n
        try:
            return raw.decode("utf-8"), i + n
        except UnicodeError:
            raise CBORError("text string is not valid UTF-8")
    if major == _ARRAY:
        if depth <= 0:
            raise CBORError("nesting too deep")
        if n > end - i:  # every item takes at least one byte
            raise CBORError("truncated")
        items = []
        for _ in range(n):
            item, i = _decode(data, i, end, depth - 1)
            items.append(item)
        return items, i
    if ib == _FALSE:
        return False, i
    if ib == _TRUE:
        return True, i
    if ib == _NULL:
        return None, i
    if major == 0xA0:
        raise CBORError("maps are not used by plugpay")
    if major == 0xC0:
        raise CBORError("tags are not used by plugpay")
    raise CBORError("float or simple value 0x%02x is not used by plugpay" % ib)


def loads(data, max_depth=16):
    """Decode one CBOR item that must span all of ``data``; arrays come back as lists."""
    value, i = _decode(data, 0, len(data), max_depth)
    if i != len(data):
        raise CBORError("trailing bytes after the item")
    return value
