"""The host's JSON config files read as untrusted input: a file that is missing, not JSON,
or lacks a key or holds the wrong kind of value is a ``ConfigFileError`` naming the file
and the key (``plugpay-ledger/cluster.json: replicas[2].port: missing``), never a bare
``KeyError`` from deep inside the code that uses it."""
import json


class ConfigFileError(ValueError):
    """A config file that cannot be used; the text names the file and the key."""


def read_object(path, what):
    """The JSON object in the file at ``path``; ``what`` the file is, for the message."""
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise ConfigFileError("%s: no such file (%s)" % (path, what))
    except OSError as e:
        raise ConfigFileError("%s: cannot read %s: %s" % (path, what, e.strerror or e))
    except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError both are
        raise ConfigFileError("%s: not a JSON %s: %s" % (path, what, e))
    if not isinstance(value, dict):
        raise ConfigFileError("%s: not a %s (expected a JSON object, got %s)" % (path, what, _kind(value)))
    return value


class Fields:
    """Checked reads of one JSON object of the file at ``path``; ``where`` is the object's
    place in the file (``replicas[2]``), empty at the top."""

    def __init__(self, table, path, where=""):
        self.table = table
        self.path = path
        self.where = where

    def fail(self, key, text):
        raise ConfigFileError("%s: %s: %s" % (self.path, self.name(key), text))

    def name(self, key):
        if isinstance(key, int):
            return "%s[%d]" % (self.where, key)
        return key if not self.where else self.where + "." + key

    def get(self, key, kind, default=None, required=True):
        """The value at ``key`` (an index in a list), of Python type ``kind`` (bool is not
        an int here); ``default`` when it is missing and not ``required``."""
        if isinstance(key, int):  # an item of a list the caller has sized
            if not isinstance(self.table, list) or key >= len(self.table):
                self.fail(key, "missing")
        elif key not in self.table:
            if required:
                self.fail(key, "missing")
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, "expected %s, got %s" % (_kind_name(kind), _shown(value)))
        return value

    def integer(self, key, low, high):
        value = self.get(key, int)
        if not low <= value <= high:
            self.fail(key, "expected an integer %d..%d, got %d" % (low, high, value))
        return value

    def hex_bytes(self, key, size):
        value = self.get(key, str)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != size:
            self.fail(key, "expected %d bytes as %d hex digits" % (size, 2 * size))
        return raw

    def inner(self, key, kind=dict):
        """``Fields`` of the object (or list) at ``key``."""
        return Fields(self.get(key, kind), self.path, self.name(key))

    def items(self, key, count):
        """``Fields`` of the list at ``key``, which must hold ``count`` items."""
        inner = self.inner(key, list)
        if len(inner.table) != count:
            self.fail(key, "expected %d items, got %d" % (count, len(inner.table)))
        return inner


def _kind(value):
    return _kind_name(type(value))


def _kind_name(kind):
    return {dict: "an object", list: "a list", str: "text", int: "an integer", bool: "true or false",
            float: "a number", type(None): "null"}.get(kind, kind.__name__)


def _shown(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
