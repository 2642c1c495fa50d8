"""A/B records: a small value that survives a power cut at any instant, sealed at rest, and
knows when what it reads may be older than what was written.

Why two copies: a flipped bit, a worn-out block or a tampered file then costs one update,
not the wallet; and a copy can be rewritten in place (``Storage.overwrite``: one fsync,
no rename), since a copy torn by a power cut is recognised and the other one, the newest
completed write, is read. Each copy (``NAME.a``, ``NAME.b``) is

    "AB" || version 2 || seq (4) || length (4) || aead.seal(payload) || seq again (4)

with the name and seq as associated data, so a copy cannot be moved to another record or
rolled back to an older seq unnoticed. Reading takes the valid copy with the higher seq;
writing goes to the other slot, so the newest good copy is never the one being
overwritten.

Why the length and the trailing seq: they tell a write that never finished from a copy
damaged after it was written. A power cut in the middle of an in-place write leaves the new
head over the old tail (the trailer is the old copy's seq, or the file is short): that
write never completed, so nothing was done on its strength, and the other copy is the
newest there is. A complete copy that fails its MAC, a copy gone while the other's seq
shows both slots were written (seq 2 and up), or a version-1 copy that fails (it has no
trailer) is *damage*: the lost copy may have been the newer one. Then ``behind`` says why,
and the caller acts as a wallet that may be behind must (``keystore`` skips its key
counter ahead, a channel signs nothing new, the book spends nothing until recovered).

A record whose copies exist but none verifies is ``RecordCorrupt``: reported, never
silently treated as empty, and never overwritten (``store`` refuses until the caller
decides, e.g. restoring from a backup).
"""
from plugpay.protocol import aead
from plugpay.protocol.port import const

MAGIC = b"AB"
VERSION = const(2)
HEADER_V1 = const(7)
HEADER = const(11)
TRAILER = const(4)
SLOTS = (".a", ".b")
MAX_SEQ = const(0xFFFFFFFF)
INTERRUPTED = "an interrupted write (the other copy is the newest completed one)"


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
        self.behind = None  # why the newest copy read may be older than the newest written

    def _parse(self, slot):
        """``(seq, payload)``; ``None`` for a missing copy; ``(seq or None, damaged, why)``
        for an unusable one, ``damaged`` False for a write that never completed."""
        name = self.name + SLOTS[slot]
        blob = self.storage.read(name)
        if blob is None:
            return None
        if len(blob) < HEADER_V1:  # cut short before its header: a truncate-then-write never finished
            return None, False, INTERRUPTED
        if blob[:2] != MAGIC or blob[2] not in (1, VERSION):
            return None, True, "not a record of a known version"
        seq = int.from_bytes(blob[3:7], "big")
        if blob[2] == 1:
            sealed, damaged = blob[HEADER_V1:], True  # no trailer: an unusable v1 copy is damage
        else:
            size = int.from_bytes(blob[7:HEADER], "big") if len(blob) >= HEADER else -1
            end = HEADER + size
            if size < aead.OVERHEAD or len(blob) < end + TRAILER or blob[end:end + TRAILER] != blob[3:7]:
                return seq, False, INTERRUPTED
            sealed, damaged = blob[HEADER:end], True
        try:
            return seq, aead.unseal(self.key, sealed, _aad(self.name, seq))
        except aead.AuthError:
            return seq, damaged, "fails authentication"

    def load(self):
        """The newest valid payload (bytes), or None if the record was never written.
        Raises ``RecordCorrupt`` if copies exist and none is valid. Sets ``behind`` when the
        copies show a newer one may have been lost."""
        self.problems = []
        self.behind = None
        found = [self._parse(0), self._parse(1)]
        best = None
        for slot in (0, 1):
            got = found[slot]
            if got is not None and len(got) == 2 and (best is None or got[0] > best[1]):
                best = (slot, got[0], got[1])
        for slot in (0, 1):
            got = found[slot]
            if got is not None and len(got) == 3:
                self.problems.append((self.name + SLOTS[slot], got[2]))
        if best is None:
            torn = [g for g in found if g is not None]
            if len(torn) == 1 and not torn[0][1] and torn[0][0] in (None, 1):
                torn = []  # the first write never finished: as never written
            if torn:
                self.seq = self.slot = None
                raise RecordCorrupt("%s: %s" % (self.name, "; ".join("%s %s" % p for p in self.problems)))
            self.seq, self.slot = 0, 1  # the first store goes to slot 0
            return None
        self.slot, self.seq, payload = best
        other = found[1 - self.slot]
        if other is None and self.seq >= 2:
            self.behind = "copy %s is missing, and the other (seq %d) shows both were written" % (
                self.name + SLOTS[1 - self.slot], self.seq)
        elif other is not None and len(other) == 3 and other[1] and (other[0] is None or other[0] > self.seq):
            self.behind = "copy %s %s" % (self.name + SLOTS[1 - self.slot], other[2])
        return payload

    def store(self, payload):
        """Make ``payload`` the newest copy (written to the slot not holding the newest)."""
        if self.seq is None:
            self.load()  # raises RecordCorrupt rather than overwrite unreadable copies
        if self.seq >= MAX_SEQ:
            raise ValueError("%s: sequence exhausted" % self.name)
        seq = self.seq + 1
        slot = 1 - self.slot
        sealed = aead.seal(self.key, payload, _aad(self.name, seq))
        tag = seq.to_bytes(4, "big")
        self.storage.overwrite(self.name + SLOTS[slot],
                               MAGIC + bytes([VERSION]) + tag + len(sealed).to_bytes(4, "big") + sealed + tag)
        self.seq, self.slot = seq, slot

    def remove(self):
        """Delete both copies, the older first: a cut in between leaves the newest."""
        if self.seq is None:
            self.load()
        for slot in (1 - self.slot, self.slot):
            self.storage.remove(self.name + SLOTS[slot])
        self.seq, self.slot = 0, 1
