"""What every wallet record shares: the error type, record tags, strict decoding, removal.

The wallet's books (``books``, ``channels``, ``htlcs``) each keep their state in sealed A/B
records (``records.ABRecord``) whose payload is a tagged ``schema.Struct``: the same strict
decoder that guards the wire guards the flash, so a record that authenticates but does not
have the expected shape (a bug, a downgrade) is refused with the field that is wrong.

Record tags 100-103 are the wallet's own; they never go on the wire (DESIGN: 1-7 signed
structures, 16-31 ledger, 40-42 RA, 64-95 link).
"""
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import const
from plugpay.protocol.schema import UInt

from .keystore import MAX_KEYS
from .records import SLOTS

TAG_BOOK = const(100)
TAG_CHANNEL = const(101)
TAG_HTLC_SERIES = const(102)
TAG_PROFILE = const(103)

KEY_INDEX = UInt(MAX_KEYS - 1)


class WalletError(ValueError):
    """A request the wallet refuses, or a record it cannot use; the text says why. Nothing
    stored was changed."""


def strict(cls, data, what):
    """Decode untrusted ``data`` as ``cls`` or raise ``WalletError`` naming the bad field."""
    try:
        return cls.decode(data)
    except DecodeError as e:
        raise WalletError("%s: %s" % (what, e))


def load_payload(record, cls):
    """The newest valid payload of an ``ABRecord`` decoded as ``cls``, or None if the record
    was never written. ``RecordCorrupt`` (no copy authenticates) passes through."""
    payload = record.load()
    if payload is None:
        return None
    try:
        return cls.decode(payload)
    except DecodeError as e:
        raise WalletError("%s: authentic but malformed record (%s)" % (record.name, e))


def remove_record(record):
    """Delete both copies of an A/B record, the older first, so a power cut in between
    leaves the newest copy and never brings back an older state."""
    if record.seq is None:
        record.load()
    if record.seq:
        storage = record.storage
        storage.remove(record.name + SLOTS[1 - record.slot])
        storage.remove(record.name + SLOTS[record.slot])
    record.seq, record.slot = 0, 1


def load_each(storage, prefix, load, key):
    """Every record named ``prefix...``, loaded by ``load(name)``: ``({key(obj): obj},
    [(record name, why it is unusable)])``. ``load`` returns None for a record whose only
    copy is a first write that never finished; its leftover is removed (nothing was done
    on its strength) and it is not a record."""
    objects = {}
    broken = []
    for name in record_names(storage, prefix):
        try:
            obj = load(name)
        except ValueError as e:  # RecordCorrupt, WalletError
            broken.append((name, str(e)))
            continue
        if obj is None:
            for slot in SLOTS:
                if storage.exists(name + slot):
                    storage.remove(name + slot)
        else:
            objects[key(obj)] = obj
    return objects, broken


def record_names(storage, prefix):
    """Names of the A/B records in ``storage`` whose name starts with ``prefix``."""
    found = []
    for name in storage.names():
        if name.startswith(prefix) and name[-2:] in SLOTS:
            base = name[:-2]
            if base not in found:
                found.append(base)
    found.sort()
    return found
