"""The one-time keys: thousands of RA-signed accounts, read by index, never used twice.

Why keys are derived, not stored: private key ``i`` is HMAC-SHA256(seed, label || i)
(re-hashed in the negligible case it is not in 1..n-1), so flash holds no secret per key,
only the RA's 64-byte signature and its epoch, MACed: 76 bytes a key, 760 KB for 10,000,
against 140+ for a sealed secret plus its public key. One sealed 32-byte seed is the only
secret on flash, and backing it up backs up every key. The price is one public-key
derivation each time an account is needed (a few ms, a few times a session).

Files (``Storage``):

* ``seed``: ``"PPW" || version || pin flag || salt(16) || rounds(4) || aead(seed)``,
  written once. The device key (``devicekey``) that unseals it lives elsewhere.
* ``keys``: an 8-byte header, then record ``i`` at ``8 + 76 i``:
  ``epoch(4) || ra_sig(64) || mac(8)``, the MAC binding the record to its index. All
  zeros is a gap (a batch that never came back); a record failing its MAC is reported and
  never used. Records are read one at a time: RAM does not grow with the number of keys.
* ``counters`` (an ``ABRecord``): the reservation limit (every index below it may have
  been handed out: never again) and ``requested`` (every index below it was sent to the
  RA: never sent again), plus the registration in flight so a reply arriving after a
  reboot is still accepted.

Order of writes is what makes a power cut harmless: the limit moves on flash *before* a
public key leaves the device (``reserve``, ``registration_request``), and records are
written only after every signature in the reply verified. Keys are reserved in blocks,
as Trezor's counters are: the limit moves ``BLOCK`` indices at a time, a reopened
keystore starts at the limit (the rest of a block it may have been using is skipped),
and one write serves ``BLOCK`` reservations. A counters record that may be behind (its
newest copy lost: ``records``) skips one more block past the next registered key, and one that is gone while keys
exist takes every registered key as used: a key is never handed out twice.
"""
from plugpay.protocol import aead, codec, signing
from plugpay.protocol import ra_messages as ra
from plugpay.protocol.port import collect, const, hmac_sha256, urandom
from plugpay.protocol.structures import Account

from . import names
from .devicekey import PIN_ROUNDS, sealing_key
from .records import SLOTS, ABRecord

SEED_MAGIC = b"PPW"
SEED_VERSION = const(1)
SEED_HEADER = const(25)
KEYS_MAGIC = b"PPK1"
KEYS_HEADER = const(8)
RECORD = const(76)
MAC_BYTES = const(8)
MAX_EPOCH = const(0xFFFFFFFF)
MAX_KEYS = const(1000000)
GAP = bytes(RECORD)
BLOCK = const(8)  # keys reserved per write of the counters


class KeystoreError(ValueError):
    """The keystore cannot be opened or used as asked; the text says why."""


class Exhausted(KeystoreError):
    """No registered key is left to reserve: register more first."""


def _derive(seed, label, index=0):
    return hmac_sha256(seed, label + index.to_bytes(4, "big"))


def _key_header():
    return KEYS_MAGIC + bytes([1, RECORD, 0, 0])


class Keystore:
    """Opened with ``Keystore.create`` (once, at provisioning) or ``Keystore.open``."""

    def __init__(self, storage, seed):
        self.storage = storage
        self._seed = seed
        self._record_key = _derive(seed, b"plugpay/key-record-mac")
        self.state_key = _derive(seed, b"plugpay/wallet-state")  # for the wallet's other records
        self.counters = ABRecord(storage, names.COUNTERS, self.state_key)
        self.reserved = 0  # the next index to hand out
        self.limit = 0  # on flash: every index below it may have been handed out
        self.requested = 0
        self.skipped = None  # why keys were skipped at open (damage), for status and check
        self.pending = None  # [start, count, nonce, identity_id] of a registration in flight
        self.problems = []

    # -- creating and opening ----------------------------------------------------------

    @classmethod
    def create(cls, storage, device_key, pin=None, seed=None):
        """A new keystore with a fresh seed (or ``seed``, restoring a backup)."""
        if storage.exists(names.SEED):
            raise KeystoreError("a keystore exists here already: refusing to replace it")
        seed = seed or urandom(32)
        salt = urandom(16)
        key = sealing_key(device_key, pin, salt, PIN_ROUNDS)
        header = SEED_MAGIC + bytes([SEED_VERSION, 0 if pin is None else 1]) + salt + PIN_ROUNDS.to_bytes(4, "big")
        ks = cls(storage, seed)
        # The seed is written last: it is what makes a keystore exist. Whatever an
        # interrupted create left behind was never used (nothing is handed out without a
        # seed), so it is cleared.
        for suffix in SLOTS:
            storage.remove(names.COUNTERS + suffix)
        storage.replace(names.KEYS, _key_header())
        ks._save()
        storage.replace(names.SEED, header + aead.seal(key, seed, header))
        return ks

    @classmethod
    def open(cls, storage, device_key, pin=None):
        blob = storage.read(names.SEED)
        if blob is None:
            raise KeystoreError("no keystore here (no seed file)")
        if len(blob) < SEED_HEADER + aead.OVERHEAD or blob[:3] != SEED_MAGIC or blob[3] != SEED_VERSION:
            raise KeystoreError("the seed file is not a plugpay keystore of a known version, or is truncated")
        header = blob[:SEED_HEADER]
        if blob[4] == 1 and pin is None:
            raise KeystoreError("this keystore is PIN-protected: give the PIN")
        key = sealing_key(device_key, pin if blob[4] == 1 else None, header[5:21], int.from_bytes(header[21:25], "big"))
        try:
            seed = aead.unseal(key, blob[SEED_HEADER:], header)
        except aead.AuthError:
            raise KeystoreError("the seed does not unseal: wrong device key or PIN, or a tampered file")
        ks = cls(storage, seed)
        head = storage.read_at(names.KEYS, 0, KEYS_HEADER)
        if head[:4] != KEYS_MAGIC or len(head) != KEYS_HEADER or head[5] != RECORD:
            raise KeystoreError("the keys file is missing or not a plugpay key file")
        ks._load()
        return ks

    def _load(self):
        value = self.counters.load()
        self.problems = list(self.counters.problems)
        if value is None:  # create writes the counters before the seed: gone means damage
            end = self.capacity()
            self.reserved = self.limit = self.requested = end
            self.skipped = "the key counters are missing: every registered key (%d) is taken as used" % end
            self._save()
            return
        v = codec.loads(value, names.COUNTERS)
        if not isinstance(v, list) or len(v) != 3 or type(v[0]) is not int or type(v[1]) is not int:
            raise KeystoreError("the counters record is malformed")
        self.limit, self.requested, self.pending = v
        self.reserved = self.limit
        if self.counters.behind:  # the lost write moved the limit at most one block past a key
            end, start = self.capacity(), self.limit
            self.reserved = self.limit = max(start, min(self._next_registered(start)[0] + BLOCK, end))
            self.skipped = "the key counters may be behind (%s): skipped keys %d..%d" % (
                self.counters.behind, start, self.limit - 1)
            self._save()

    def _save(self):
        self.counters.store(codec.dumps([self.limit, self.requested, self.pending]))

    # -- keys ----------------------------------------------------------------------------

    def _signing_secret(self, label, index):
        counter = 0
        while True:  # a digest outside 1..n-1 has probability ~2**-128: re-derive
            secret = _derive(self._seed, label + bytes([counter]), index)
            try:
                signing.check_secret(secret)
                return secret
            except signing.SignatureError:
                counter += 1

    def secret(self, index):
        """Private key ``index`` (derived, never stored)."""
        return self._signing_secret(b"plugpay/one-time-key/", index)

    def device_secret(self):
        """The long-term key the RA registered in person: it signs registration requests."""
        return self._signing_secret(b"plugpay/device-identity/", 0)

    def secret_for(self, label, index=0):
        """A secret for another purpose (HTLC preimage series, ...), apart from the keys."""
        return _derive(self._seed, b"plugpay/purpose/" + label, index)

    def capacity(self):
        """How many key records the file holds (gaps and bad ones included)."""
        size = self.storage.size(names.KEYS) or KEYS_HEADER
        return (size - KEYS_HEADER) // RECORD

    def _mac(self, index, body):
        return hmac_sha256(self._record_key, index.to_bytes(4, "big") + body)[:MAC_BYTES]

    def record(self, index):
        """``(epoch, ra_sig)`` of key ``index``, or None for a gap or an unregistered index.
        A record failing its MAC raises ``KeystoreError``: never used, always reported."""
        data = self.storage.read_at(names.KEYS, KEYS_HEADER + index * RECORD, RECORD)
        if len(data) < RECORD or data == GAP:
            return None
        if self._mac(index, data[:-MAC_BYTES]) != data[-MAC_BYTES:]:
            raise KeystoreError("key record %d fails its MAC (tampered or torn write)" % index)
        return int.from_bytes(data[:4], "big"), data[4:68]

    def account(self, index):
        """The signed one-time ``Account`` of key ``index`` (one public-key derivation)."""
        rec = self.record(index)
        if rec is None:
            raise KeystoreError("key %d is not registered" % index)
        return Account(signing.public_key(self.secret(index)), rec[0], rec[1])

    def available(self):
        """Registered indices not yet reserved (gaps counted out only when met)."""
        return max(0, self.capacity() - self.reserved)

    def _next_registered(self, index):
        """``(index, record)`` of the first usable key at or after ``index``, or
        ``(capacity, None)``; records failing their MAC are reported and passed over."""
        end = self.capacity()
        while index < end:
            try:
                rec = self.record(index)
            except KeystoreError as e:
                self.problems.append((names.KEYS, str(e)))
                rec = None
            if rec is not None:
                return index, rec
            index += 1
        return end, None

    def reserve(self):
        """Hand out the next unused registered key: ``(index, account)``. The limit is on
        flash before a key past it leaves, so no key is handed out twice across a power cut."""
        index, rec = self._next_registered(self.reserved)
        if rec is None:
            raise Exhausted("no registered one-time key left (%d handed out): register more" % self.reserved)
        if index >= self.limit:  # keys past the file's end cannot leave before a registration
            self.limit = min(index + BLOCK, self.capacity())
            self._save()
        self.reserved = index + 1
        return index, Account(signing.public_key(self.secret(index)), rec[0], rec[1])

    def skip_past(self, index):
        """Never hand out key ``index`` or any before it (a recovery found it in use)."""
        if index >= self.reserved:
            self.reserved = self.limit = index + 1
            self._save()

    # -- registration (sans-IO: bytes out, bytes in) --------------------------------------

    def registration_request(self, identity_id, count):
        """The signed request for ``count`` new keys, as bytes. The indices are marked as
        requested on flash first, so they are never sent to the RA twice."""
        if not 1 <= count <= ra.MAX_BATCH:
            raise KeystoreError("a registration asks for 1..%d keys" % ra.MAX_BATCH)
        start = max(self.requested, self.capacity())
        if start + count > MAX_KEYS:
            raise KeystoreError("the keystore is full (%d keys)" % MAX_KEYS)
        nonce = urandom(ra.NONCE_BYTES)
        self.pending = [start, count, nonce, identity_id]
        self.requested = start + count
        self._save()
        return self._request().encode()

    def _request(self):
        start, count, nonce, identity_id = self.pending
        pubkeys = [signing.public_key(self.secret(i)) for i in range(start, start + count)]
        return ra.make_request(identity_id, self.device_secret(), pubkeys, nonce)

    def pending_request(self):
        """The request in flight (after a reboot: send it again), as bytes, or None."""
        return None if self.pending is None else self._request().encode()

    def abandon_registration(self):
        """Give up the registration in flight (its reply is lost for good); its indices
        are never requested again."""
        self.pending = None
        self._save()

    def registration_reply(self, data, ra_pubkeys):
        """Check the RA's reply against the RA keys the wallet was provisioned with
        (``{epoch: pubkey}``) and store the new records. Returns how many were stored.
        A refusal raises ``KeystoreError`` naming the RA's reason; a reply that fails any
        check stores nothing."""
        if self.pending is None:
            raise KeystoreError("no registration is in flight")
        try:
            reply = ra.decode_reply(data)
        except codec.DecodeError as e:
            raise KeystoreError("the RA's reply is malformed: %s" % e)
        start, count, nonce, _ = self.pending
        if reply.nonce != nonce:
            raise KeystoreError("the reply answers another request")
        if isinstance(reply, ra.RegistrationError):
            raise KeystoreError("the RA refused: %s (%s)" % (reply.reason(), reply.text))
        ra_pubkey = ra_pubkeys.get(reply.epoch)
        if ra_pubkey is None:
            raise KeystoreError("the reply uses RA epoch %d, which this wallet does not know" % reply.epoch)
        if len(reply.ra_sigs) != count:
            raise KeystoreError("%d signatures for %d keys" % (len(reply.ra_sigs), count))
        block = bytearray()
        for j in range(count):
            account = Account(signing.public_key(self.secret(start + j)), reply.epoch, reply.ra_sigs[j])
            if not signing.verify(ra_pubkey, account, account.ra_sig):
                raise KeystoreError("RA signature %d does not verify: nothing stored" % j)
            body = reply.epoch.to_bytes(4, "big") + account.ra_sig
            block.extend(body + self._mac(start + j, body))
            if j & 15 == 15:
                collect()
        have = self.capacity()
        if have < start:  # indices of an earlier batch that never came back stay gaps
            self.storage.write_at(names.KEYS, KEYS_HEADER + have * RECORD, GAP * (start - have))
        self.storage.write_at(names.KEYS, KEYS_HEADER + start * RECORD, bytes(block))
        self.pending = None
        self._save()
        return count

    # -- integrity -------------------------------------------------------------------------

    def check(self):
        """Walk every key record (one at a time) and the counters: a report dict."""
        valid = gaps = bad = 0
        end = self.capacity()
        for i in range(end):
            try:
                rec = self.record(i)
            except KeystoreError:
                bad += 1
                continue
            if rec is None:
                gaps += 1
            else:
                valid += 1
        size = self.storage.size(names.KEYS) or 0
        torn = (size - KEYS_HEADER) % RECORD
        return {
            "records": end, "valid": valid, "gaps": gaps, "bad_mac": bad, "torn_tail_bytes": torn,
            "reserved": self.reserved, "requested": self.requested,
            "pending": None if self.pending is None else self.pending[1],
            "available": max(0, end - self.reserved), "problems": [p[0] + ": " + p[1] for p in self.problems],
        }
