"""Declarative field types and the base class of every plugpay wire structure.

A structure is a CBOR array ``[tag, version, field...]`` in a fixed order. Its trailing
``UNSIGNED`` fields (signatures, witnesses) are left out of its *body*; a signature covers
``b"plugpay/<name>/v<version>" + body``, so a signature over one kind of structure can never
be replayed as a signature over another. Decoding checks every field's type and size and
raises ``DecodeError`` with a path such as ``transaction.outputs[1].amount``.

Records are the same without tag and version: inline tuples such as a transaction input.
"""
from . import codec
from .codec import DecodeError
from .port import sha256

MAX_UINT = (1 << 64) - 1


class UInt:
    """A non-negative integer up to ``max``: amounts in the smallest unit, Wh, counters."""

    def __init__(self, max=MAX_UINT):
        self.max = max

    def check(self, value, path):
        if type(value) is not int:  # bool is refused too: on CPython it is an int subclass
            raise DecodeError(path, "expected an unsigned integer")
        if value < 0 or value > self.max:
            raise DecodeError(path, "%d is outside 0..%d" % (value, self.max))
        return value

    def dump(self, value):
        return value


class Int:
    """A signed integer in ``min``..``max``: a charger's site in micro-degrees, say. CBOR
    carries negative integers natively, so the encoding stays deterministic."""

    def __init__(self, min, max):
        self.min = min
        self.max = max

    def check(self, value, path):
        if type(value) is not int:
            raise DecodeError(path, "expected an integer")
        if value < self.min or value > self.max:
            raise DecodeError(path, "%d is outside %d..%d" % (value, self.min, self.max))
        return value

    def dump(self, value):
        return value


class Bytes:
    """A byte string of exactly ``size`` bytes, or of ``min``..``max`` bytes."""

    def __init__(self, size=None, max=None, min=0):
        self.min = size if size is not None else min
        self.max = size if size is not None else max

    def check(self, value, path):
        if not isinstance(value, bytes):
            raise DecodeError(path, "expected a byte string")
        n = len(value)
        if n < self.min or n > self.max:
            if self.min == self.max:
                raise DecodeError(path, "expected %d bytes, got %d" % (self.max, n))
            raise DecodeError(path, "%d bytes is outside %d..%d" % (n, self.min, self.max))
        return value

    def dump(self, value):
        return value


class Signature(Bytes):
    """A 64-byte compact ECDSA signature, or ``b""`` while its signer has not signed yet."""

    def __init__(self):
        Bytes.__init__(self, min=0, max=64)

    def check(self, value, path):
        Bytes.check(self, value, path)
        if len(value) not in (0, 64):
            raise DecodeError(path, "a signature is 64 bytes, got %d" % len(value))
        return value


class Text:
    """A UTF-8 text string of at most ``max`` bytes (region names, reason texts)."""

    def __init__(self, max):
        self.max = max

    def check(self, value, path):
        if not isinstance(value, str):
            raise DecodeError(path, "expected a text string")
        if len(value.encode("utf-8")) > self.max:
            raise DecodeError(path, "text longer than %d bytes" % self.max)
        return value

    def dump(self, value):
        return value


class Bool:
    def check(self, value, path):
        if value is not True and value is not False:
            raise DecodeError(path, "expected a boolean")
        return value

    def dump(self, value):
        return value


class ArrayOf:
    """A list of ``min``..``max`` items of one type."""

    def __init__(self, item, max, min=0):
        self.item = item
        self.max = max
        self.min = min

    def check(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise DecodeError(path, "expected an array")
        n = len(value)
        if n < self.min or n > self.max:
            raise DecodeError(path, "%d items is outside %d..%d" % (n, self.min, self.max))
        item = self.item
        return [item.check(v, path + "[" + str(i) + "]") for i, v in enumerate(value)]

    def dump(self, value):
        item = self.item
        return [item.dump(v) for v in value]


class Any:
    """Any value of the CBOR subset, for payloads whose schema depends on a message kind."""

    def check(self, value, path):
        return value

    def dump(self, value):
        return value


class Nested:
    """A field holding a whole structure or record (decoded to its class)."""

    def __init__(self, cls):
        self.cls = cls

    def check(self, value, path):
        cls = self.cls
        if isinstance(value, cls):
            return value
        return cls.from_value(value, path)

    def dump(self, value):
        return value.to_value()


# Shared instances of the commonest field types: a field type holds no state, and each
# instance is an object on a device's heap (~40 bytes when the code comes from a .mpy file).
U8 = UInt(0xFF)
U16 = UInt(0xFFFF)
U32 = UInt(0xFFFFFFFF)
U64 = UInt()
SIG = Signature()
BOOL = Bool()
ANY = Any()


class Record:
    """A fixed-arity array of named fields. Subclasses set ``NAME`` and ``FIELDS``."""

    NAME = "record"
    FIELDS = ()
    TAG = None
    VERSION = None
    UNSIGNED = 0

    def __init__(self, *args, **kwargs):
        fields = self.FIELDS
        if len(args) > len(fields):
            raise TypeError(self.NAME + " takes %d fields" % len(fields))
        for i, (name, ftype) in enumerate(fields):
            if i < len(args):
                value = args[i]
            elif name in kwargs:
                value = kwargs.pop(name)
            else:
                raise TypeError(self.NAME + " needs field " + name)
            setattr(self, name, ftype.check(value, self.NAME + "." + name))
        if kwargs:
            raise TypeError(self.NAME + " has no field " + ",".join(kwargs))
        self.validate(self.NAME)

    def validate(self, path):
        """Checks across fields (e.g. one witness per input); raise ``DecodeError``."""

    def _prefix(self):
        return [] if self.TAG is None else [self.TAG, self.VERSION]

    def to_value(self, signed=True):
        """The CBOR value; ``signed=False`` leaves out the trailing unsigned fields."""
        out = self._prefix()
        fields = self.FIELDS
        if not signed and self.UNSIGNED:
            fields = fields[: len(fields) - self.UNSIGNED]
        for name, ftype in fields:
            out.append(ftype.dump(getattr(self, name)))
        return out

    @classmethod
    def from_value(cls, value, path=None):
        """Build from a decoded CBOR value, checking tag, version, arity and every field."""
        path = path or cls.NAME
        if not isinstance(value, list):
            raise DecodeError(path, "expected an array")
        skip = 0
        if cls.TAG is not None:
            skip = 2
            if len(value) < 2:
                raise DecodeError(path, "missing type tag and version")
            if value[0] != cls.TAG or type(value[0]) is not int:
                raise DecodeError(path, "type tag %r is not %s (%d)" % (value[0], cls.NAME, cls.TAG))
            if value[1] != cls.VERSION or type(value[1]) is not int:
                raise DecodeError(path, "unknown version %r" % (value[1],))
        fields = cls.FIELDS
        if len(value) - skip != len(fields):
            raise DecodeError(path, "expected %d fields, got %d" % (len(fields), len(value) - skip))
        obj = object.__new__(cls)  # no __init__: fields are checked below
        for i, (name, ftype) in enumerate(fields):
            setattr(obj, name, ftype.check(value[skip + i], path + "." + name))
        obj.validate(path)
        return obj

    def encode(self):
        return codec.dumps(self.to_value())

    @classmethod
    def decode(cls, data, max_bytes=codec.MAX_BYTES):
        """Strictly decode untrusted bytes into this structure, or raise ``DecodeError``."""
        return cls.from_value(codec.loads(data, cls.NAME, max_bytes))

    def __eq__(self, other):
        return type(other) is type(self) and self.to_value() == other.to_value()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        parts = []
        for name, _ in self.FIELDS:
            v = getattr(self, name)
            parts.append(name + "=" + (v.hex() if isinstance(v, bytes) else repr(v)))
        return self.NAME + "(" + ", ".join(parts) + ")"


class Struct(Record):
    """A tagged, versioned structure that may carry signatures over its body."""

    TAG = 0
    VERSION = 1

    def body(self):
        """The signed part: ``[tag, version, fields...]`` without the trailing unsigned fields."""
        return codec.dumps(self.to_value(signed=False))

    def body_from(self, data):
        """``body()`` without re-encoding, from ``data``: the exact bytes this structure was
        decoded from (``decode`` checked they are its one deterministic encoding). The body
        is the same array head with the unsigned fields left out of its count, then the same
        item bytes up to the first unsigned field. Falls back to ``body()`` if ``data`` does
        not start with the expected one-byte array head."""
        k = self.UNSIGNED
        fields = self.FIELDS
        n = 2 + len(fields)
        if not k or n >= 24 or len(data) < 1 or data[0] != 0x80 + n:
            return self.body()
        tail = 0
        for name, ftype in fields[len(fields) - k:]:
            tail += len(codec.dumps(ftype.dump(getattr(self, name))))
        return bytes([0x80 + n - k]) + bytes(data[1:len(data) - tail])

    def domain(self):
        return ("plugpay/" + self.NAME + "/v" + str(self.VERSION)).encode()

    def signing_digest(self):
        """SHA-256 of domain prefix plus body: what every signature over this structure signs."""
        return sha256(self.domain() + self.body())
