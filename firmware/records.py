"""A/B records: a small value that survives a power cut at any instant, sealed at rest.

Why two copies: a flipped bit, a worn-out block or a tampered file then costs one update,
not the wallet; and a copy can be rewritten in place (``Storage.overwrite``: one fsync,
no rename), since a copy torn by a power cut fails its MAC and the other one, the newest
before the cut, is read. Each copy
(``NAME.a``, ``NAME.b``) is ``"AB" || version || seq (4 bytes) || aead.seal(payload)``
with the name and seq as associated data, so a copy cannot be moved to another record
or rolled back to an older seq unnoticed. Reading takes the valid copy with the higher
seq; writing goes to the other slot, so the newest good copy is never the one being
overwritten.

A record whose copies exist but none verifies is ``RecordCorrupt``: reported, never
silently treated as empty, and never overwritten (``store`` refuses until the caller
decides, e.g. restoring from a backup).
"""
from plugpay.protocol import aead
from plugpay.protocol.port import const

MAGIC = b"AB"
VERSION = const(1)
HEADER = const(7)
SLOTS = (".a", ".b")
MAX_SEQ = const(0xFFFFFFFF)


class RecordCorrupt(ValueError):
    """Copies of a record exist but none authenticates (tampered, truncated, wrong key)."""


def _aad(name, seq):
    return b"plugpay/record/" + name.encode() + b"/" + seq.to_bytes(4, "big")


class ABRecord:
    """One named record in ``storage``, sealed under ``key`` (32 bytes)."""

    def __init__(self, storage, name, key):
        self.storage = storage
        self.name = name
        self.key = key
        self.seq = None  # seq of the newest valid copy; 0 for a record never written
        self.slot = None  # index in SLOTS of that copy
        self.problems = []  # (file, reason) for copies that were present but unusable

    def _parse(self, slot):
        name = self.name + SLOTS[slot]
        blob = self.storage.read(name)
        if blob is None:
            return None
        if len(blob) < HEADER + aead.OVERHEAD or blob[:2] != MAGIC or blob[2] != VERSION:
            self.problems.append((name, "not a record of this version, or truncated"))
            return None
        seq = int.from_bytes(blob[3:HEADER], "big")
        try:
            payload = aead.unseal(self.key, blob[HEADER:], _aad(self.name, seq))
        except aead.AuthError:
            self.problems.append((name, "fails authentication"))
            return None
        return seq, payload

    def load(self):
        """The newest valid payload (bytes), or None if the record was never written.
        Raises ``RecordCorrupt`` if copies exist and none is valid."""
        self.problems = []
        best = None
        for slot in (0, 1):
            got = self._parse(slot)
            if got is not None and (best is None or got[0] > best[1]):
                best = (slot, got[0], got[1])
        if best is None:
            if self.problems:
                self.seq = self.slot = None
                raise RecordCorrupt("%s: %s" % (self.name, "; ".join("%s %s" % p for p in self.problems)))
            self.seq, self.slot = 0, 1  # the first store goes to slot 0
            return None
        self.slot, self.seq, payload = best
        return payload

    def store(self, payload):
        """Make ``payload`` the newest copy (written to the slot not holding the newest)."""
        if self.seq is None:
            self.load()  # raises RecordCorrupt rather than overwrite unreadable copies
        if self.seq >= MAX_SEQ:
            raise ValueError("%s: sequence exhausted" % self.name)
        seq = self.seq + 1
        slot = 1 - self.slot
        blob = MAGIC + bytes([VERSION]) + seq.to_bytes(4, "big") + aead.seal(self.key, payload, _aad(self.name, seq))
        self.storage.overwrite(self.name + SLOTS[slot], blob)
        self.seq, self.slot = seq, slot

    def remove(self):
        """Delete both copies, the older first: a cut in between leaves the newest."""
        if self.seq is None:
            self.load()
        for slot in (1 - self.slot, self.slot):
            self.storage.remove(self.name + SLOTS[slot])
        self.seq, self.slot = 0, 1
