"""The wallet's profile: what it was provisioned with, which records must exist, and which
may have lost their newest state.

Why the profile keeps a list of records: an A/B record that is gone entirely (both copies
deleted, a half-restored card) looks like one never written. With the list, a listed record
that is missing is *damage*, not an empty book or a channel that never was. Order of writes:
a record is listed after it is first written (a cut in between leaves an unlisted record,
which the next open lists) and unlisted before it is removed (a cut in between leaves an
unlisted record the next open lists again and removes as finished).

Why damage is stored: a record read from an older copy heals at its next write, and the
evidence with it. So what ``open`` found is written here at once, and stays until
``plugpay wallet recover`` has rebuilt from the seed and the ledger: the book spends
nothing, a damaged channel signs nothing new, and ``check`` fails, across any number of
reboots.
"""
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import codec, signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import const
from plugpay.protocol.schema import ArrayOf, Bytes, Nested, Record, Struct, Text, UInt

from . import names
from .bookkeeping import TAG_PROFILE, WalletError
from .records import ABRecord

MAX_RA_KEYS = const(16)
MAX_RECORDS = const(64)  # open channels and HTLC series, and the book
NAME_BYTES = const(24)
WHY_BYTES = const(200)


class RaKey(Record):
    NAME = "ra_key"
    FIELDS = (("epoch", UInt(0xFFFFFFFF)), ("pubkey", Bytes(33)))


class Damage(Record):
    """A record that may have lost its newest state, and how that was seen."""

    NAME = "damage"
    FIELDS = (("name", Text(NAME_BYTES)), ("why", Text(WHY_BYTES)))


class Profile(Struct):
    """The identity id the RA registered in person (``b""`` until known), the RA public key
    of each epoch the wallet accepts, the records that must exist, and the damage found."""

    NAME = "wallet_profile"
    TAG = TAG_PROFILE
    VERSION = 2  # 2: records and damage
    FIELDS = (
        ("identity_id", Bytes(max=ra.IDENTITY_ID_BYTES)),
        ("ra_keys", ArrayOf(Nested(RaKey), MAX_RA_KEYS, 1)),
        ("records", ArrayOf(Text(NAME_BYTES), MAX_RECORDS)),
        ("damage", ArrayOf(Nested(Damage), MAX_RECORDS)),
    )

    def validate(self, path):
        if len(self.identity_id) not in (0, ra.IDENTITY_ID_BYTES):
            raise DecodeError(path + ".identity_id", "an identity id is %d bytes" % ra.IDENTITY_ID_BYTES)


def _ra_keys(ra_pubkeys):
    if not isinstance(ra_pubkeys, dict) or not 1 <= len(ra_pubkeys) <= MAX_RA_KEYS:
        raise WalletError("give 1..%d RA public keys as {epoch: pubkey}" % MAX_RA_KEYS)
    keys = []
    for epoch in sorted(ra_pubkeys):
        pubkey = ra_pubkeys[epoch]
        if type(epoch) is not int or not signing.valid_public_key(pubkey):
            raise WalletError("RA key of epoch %r is not a compressed secp256k1 public key" % (epoch,))
        keys.append(RaKey(epoch, pubkey))
    return keys


def _identity(identity_id):
    if identity_id is None:
        return b""
    if not isinstance(identity_id, bytes) or len(identity_id) != ra.IDENTITY_ID_BYTES:
        raise WalletError("an identity id is %d bytes" % ra.IDENTITY_ID_BYTES)
    return identity_id


class WalletProfile:
    """The profile record of one wallet; every change is one write of it."""

    def __init__(self, record, profile):
        self.record = record
        self.profile = profile
        self.upgraded = False  # read from a version-1 record: its list of records is unknown

    @classmethod
    def create(cls, storage, key, ra_pubkeys, identity_id, records):
        """A new profile listing ``records`` (names already written)."""
        profile = Profile(_identity(identity_id), _ra_keys(ra_pubkeys), list(records), [])
        wp = cls(ABRecord(storage, names.PROFILE, key), profile)
        wp._store(profile)
        return wp

    @classmethod
    def open(cls, storage, key):
        """The stored profile, or None if there is none. ``RecordCorrupt`` passes through; an
        authentic record of the wrong shape raises ``WalletError``."""
        record = ABRecord(storage, names.PROFILE, key)
        payload = record.load()
        if payload is None:
            return None
        try:
            value = codec.loads(payload, names.PROFILE)
            v1 = isinstance(value, list) and len(value) == 4 and value[:2] == [TAG_PROFILE, 1]
            if v1:
                value = [TAG_PROFILE, 2, value[2], value[3], [], []]
            wp = cls(record, Profile.from_value(value))
        except DecodeError as e:
            raise WalletError("%s: authentic but malformed record (%s)" % (names.PROFILE, e))
        wp.upgraded = v1
        return wp

    def _store(self, profile):
        try:
            payload = profile.encode()
        except ValueError as e:
            raise WalletError("the profile would not be valid: %s" % e)
        self.record.store(payload)
        self.profile = profile

    def _with(self, identity_id=None, records=None, damage=None):
        p = self.profile
        return Profile(p.identity_id if identity_id is None else identity_id, p.ra_keys,
                       p.records if records is None else records, p.damage if damage is None else damage)

    # -- what it holds -------------------------------------------------------------------

    @property
    def identity_id(self):
        return self.profile.identity_id or None

    def ra_pubkeys(self):
        return dict((k.epoch, k.pubkey) for k in self.profile.ra_keys)

    def records(self):
        return self.profile.records

    def damage(self):
        """``{record name: why}`` of every record that may have lost its newest state."""
        return dict((d.name, d.why) for d in self.profile.damage)

    # -- changes (one write each, none if nothing changes) ---------------------------------

    def set_identity(self, identity_id):
        self._store(self._with(identity_id=_identity(identity_id)))

    def update(self, listed, damage):
        """Make ``listed`` the records that must exist and add ``damage`` ``[(name, why)]``
        (a name already damaged keeps its first reason)."""
        known = self.damage()
        added = [Damage(n, why[:WHY_BYTES // 2]) for n, why in damage if n not in known]
        listed = sorted(listed)
        if listed != sorted(self.profile.records) or added or self.upgraded:
            if len(listed) > MAX_RECORDS:
                raise WalletError("more than %d channels and HTLC series are open: settle some" % (MAX_RECORDS - 1))
            self._store(self._with(records=listed, damage=self.profile.damage + added))
            self.upgraded = False

    def register(self, name):
        """List a record just written for the first time."""
        if name not in self.profile.records:
            self.update(self.profile.records + [name], [])

    def unregister(self, name):
        """Unlist a record about to be removed."""
        if name in self.profile.records:
            self.update([n for n in self.profile.records if n != name], [])

    def clear_damage(self, done):
        """Forget the damage of the records in ``done`` (rebuilt by a recovery)."""
        keep = [d for d in self.profile.damage if d.name not in done]
        if len(keep) != len(self.profile.damage):
            self._store(self._with(damage=keep))
