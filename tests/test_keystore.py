"""The keystore on CPython, against the real RA: sealing, registration, reservation, tampering,
and a power cut at every write of a wallet's first hours."""
import hashlib
import os

import pytest

from plugpay.firmware import devicekey, records
from plugpay.firmware.keystore import BLOCK, KEYS_HEADER, RECORD, Exhausted, Keystore, KeystoreError
from plugpay.firmware.storage import Storage
from plugpay.protocol import signing
from plugpay.protocol import ra_messages as msg
from powercut import Cut, PowerCut

ADA = {"name": "Ada Lovelace", "licence": "LOV-1815", "vehicle_id": "1HGCM82633A004352"}


@pytest.fixture
def device_key():
    return os.urandom(32)


@pytest.fixture
def store(tmp_path):
    d = tmp_path / "wallet"
    d.mkdir()
    return Storage(str(d))


def ra_keys(authority):
    return {authority.vault.epoch: authority.vault.public_key}


def enrol(authority, ks):
    """The in-person step: the RA records the identity with the device's long-term key."""
    return authority.register_identity(dict(ADA, vehicle_id=_vin()), signing.public_key(ks.device_secret()))


_vins = iter(range(10**6))


def _vin():
    return "1HGCM82633A%06d" % next(_vins)


def register(authority, ks, identity, count):
    return ks.registration_reply(authority.handle(ks.registration_request(identity, count)), ra_keys(authority))


def test_pbkdf2_matches_hashlib():
    for pin, salt, rounds in ((b"1234", b"salt", 1), (b"", b"", 3), (b"0000", os.urandom(16), 50)):
        for length in (16, 32, 40, 64):
            assert devicekey.pbkdf2_sha256(pin, salt, rounds, length) == hashlib.pbkdf2_hmac(
                "sha256", pin, salt, rounds, length)


def test_register_reserve_and_reopen(authority, store, device_key):
    ks = Keystore.create(store, device_key)
    identity = enrol(authority, ks)
    assert register(authority, ks, identity, 20) == 20
    seen = set()
    for _ in range(5):
        index, account = ks.reserve()
        assert signing.verify(authority.vault.public_key, account, account.ra_sig)
        assert authority.account(account.address()) is not None  # the RA's repository knows it
        seen.add(account.pubkey)
    again = Keystore.open(Storage(store.root), device_key)
    # Keys are reserved in blocks: the first block's end (8) was on flash before key 0 left,
    # and a reopened keystore starts there, never below a key it may have handed out.
    assert again.reserved == BLOCK == 8 and again.available() == 12
    for _ in range(12):
        _, account = again.reserve()
        assert account.pubkey not in seen
        seen.add(account.pubkey)
    with pytest.raises(Exhausted):
        again.reserve()
    # Keys 5..7 were reserved but never handed out: a reopen skips them rather than risk reuse.
    assert len(seen) == 17
    # Each key costs RECORD bytes of flash, nothing else grows with the count.
    assert store.size("keys") == KEYS_HEADER + 20 * RECORD
    assert again.check()["valid"] == 20


def test_the_seed_needs_the_device_key_and_the_pin(store, device_key):
    Keystore.create(store, device_key, pin="2468")
    with pytest.raises(KeystoreError, match="PIN"):
        Keystore.open(store, device_key)
    with pytest.raises(KeystoreError, match="does not unseal"):
        Keystore.open(store, device_key, pin="1357")
    with pytest.raises(KeystoreError, match="does not unseal"):
        Keystore.open(store, os.urandom(32), pin="2468")
    assert Keystore.open(store, device_key, pin="2468").reserved == 0
    with pytest.raises(KeystoreError, match="exists"):
        Keystore.create(store, device_key)


def test_a_reply_that_fails_any_check_stores_nothing(authority, store, device_key):
    ks = Keystore.create(store, device_key)
    identity = enrol(authority, ks)
    request = ks.registration_request(identity, 4)
    good = msg.decode_reply(authority.handle(request))
    forged = msg.RegistrationResponse(good.nonce, good.epoch, good.ra_sigs[:3] + [good.ra_sigs[0]])
    stale = msg.RegistrationResponse(os.urandom(16), good.epoch, good.ra_sigs)
    other_epoch = msg.RegistrationResponse(good.nonce, good.epoch + 7, good.ra_sigs)
    short = msg.RegistrationResponse(good.nonce, good.epoch, good.ra_sigs[:3])
    refusal = msg.RegistrationError(good.nonce, msg.UNAVAILABLE, "disk full")
    for bad, why in ((forged, "does not verify"), (stale, "another request"), (other_epoch, "epoch"),
                     (short, "3 signatures"), (refusal, "UNAVAILABLE")):
        with pytest.raises(KeystoreError, match=why):
            ks.registration_reply(bad.encode(), ra_keys(authority))
        assert ks.capacity() == 0 and ks.pending is not None
    with pytest.raises(KeystoreError, match="malformed"):
        ks.registration_reply(b"\xa1\x00", ra_keys(authority))
    assert ks.registration_reply(good.encode(), ra_keys(authority)) == 4
    with pytest.raises(KeystoreError, match="no registration"):
        ks.registration_reply(good.encode(), ra_keys(authority))


def test_a_reply_after_a_reboot_is_accepted_and_lost_batches_stay_gaps(authority, store, device_key):
    ks = Keystore.create(store, device_key)
    identity = enrol(authority, ks)
    lost = ks.registration_request(identity, 3)  # sent; the reply never arrives
    authority.handle(lost)
    request = ks.registration_request(identity, 5)  # the device asks again: new indices
    reply = authority.handle(request)
    rebooted = Keystore.open(Storage(store.root), device_key)
    assert rebooted.pending_request() == request  # the same bytes, rebuilt from the seed
    assert rebooted.registration_reply(reply, ra_keys(authority)) == 5
    report = rebooted.check()
    assert (report["records"], report["gaps"], report["valid"]) == (8, 3, 5)
    index, _ = rebooted.reserve()
    assert index == 3  # the gaps are skipped, never handed out


def test_tampered_records_are_reported_and_never_used(authority, store, device_key):
    ks = Keystore.create(store, device_key)
    register(authority, ks, enrol(authority, ks), 6)
    path = os.path.join(store.root, "keys")
    with open(path, "r+b") as f:  # flip one bit of key 1's RA signature
        f.seek(KEYS_HEADER + RECORD + 10)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    ks = Keystore.open(Storage(store.root), device_key)
    assert ks.check()["bad_mac"] == 1
    got = [ks.reserve()[0] for _ in range(5)]
    assert got == [0, 2, 3, 4, 5]
    assert any("key record 1 fails its MAC" in p for _, p in ks.problems)
    with open(path, "r+b") as f:  # a torn tail: half a record appended
        f.seek(0, 2)
        f.write(b"\x01" * (RECORD // 2))
    report = Keystore.open(Storage(store.root), device_key).check()
    assert report["torn_tail_bytes"] == RECORD // 2 and report["valid"] == 5


def test_one_bad_counter_copy_skips_a_block_both_bad_refuse(authority, store, device_key):
    ks = Keystore.create(store, device_key)
    register(authority, ks, enrol(authority, ks), 20)
    ks.limit = 7
    ks._save()
    ks.limit = 9
    ks._save()  # copies now hold 7 and 9
    newest = "counters" + records.SLOTS[ks.counters.slot]
    other = "counters" + records.SLOTS[1 - ks.counters.slot]
    blob = bytearray(store.read(newest))
    blob[-10] ^= 0x80  # a flipped bit inside the sealed payload of a complete copy: damage
    store.replace(newest, bytes(blob))
    ks = Keystore.open(Storage(store.root), device_key)
    # The copy read holds 7 but a newer one existed: one block more is skipped (past 9).
    assert ks.reserved == 7 + BLOCK and ks.problems and ks.problems[0][0] == newest and "behind" in ks.skipped
    assert Keystore.open(Storage(store.root), device_key).reserved == 7 + BLOCK  # stored at once: no new skip
    for name in (newest, other):  # both copies damaged: refused, and nothing overwritten
        blob = bytearray(store.read(name))
        blob[-10] ^= 0x80
        store.replace(name, bytes(blob))
    before = (store.read(newest), store.read(other))
    with pytest.raises(records.RecordCorrupt):
        Keystore.open(Storage(store.root), device_key)
    assert (store.read(newest), store.read(other)) == before


def test_a_copy_cannot_be_replayed_under_another_name_or_seq(store, device_key):
    key = os.urandom(32)
    a = records.ABRecord(store, "alpha", key)
    a.store(b"one")
    a.store(b"two")
    older = store.read("alpha.a")  # seq 1
    store.replace("alpha.b", older[:3] + (5).to_bytes(4, "big") + older[7:])  # claim seq 5
    assert records.ABRecord(store, "alpha", key).load() == b"one"  # the forged copy fails
    store.replace("beta.a", older)
    with pytest.raises(records.RecordCorrupt):
        records.ABRecord(store, "beta", key).load()


def test_power_cut_at_every_write_never_reuses_a_key(authority, tmp_path, device_key):
    """Cut at write k (k = 1, 2, ...), whole or torn, then reboot and carry on: no key is
    ever handed out twice, every reopen passes the integrity check, and the run ends with
    all the keys it registered usable except those whose reply was lost."""
    box = {}

    def run(storage, handed):
        seed, identity = box["seed"], box["identity"]
        try:
            ks = Keystore.open(storage, device_key)
        except KeystoreError:
            ks = Keystore.create(storage, device_key, seed=seed)
        if "id" not in identity:
            identity["id"] = enrol(authority, ks)
        for want in (3, 8):  # two phases of reservations, registering whenever keys run out
            while ks.reserved < want:
                try:
                    index, account = ks.reserve()
                    handed.append((index, account.pubkey))
                except Exhausted:
                    if ks.pending is None:
                        request = ks.registration_request(identity["id"], 4)
                    else:  # after a reboot: ask again; a replay is refused, the batch is lost
                        request = ks.pending_request()
                    try:
                        ks.registration_reply(authority.handle(request), ra_keys(authority))
                    except KeystoreError:
                        ks.abandon_registration()
        return ks

    for torn in (False, True):
        k = 1
        while True:
            folder = tmp_path / ("cut-%d-%d" % (torn, k))
            folder.mkdir()
            handed = []
            finished = False
            box.update(seed=os.urandom(32), identity={})  # the RA knows every key once
            try:
                run(PowerCut(str(folder), at=k, torn=torn), handed)
                finished = True
            except Cut:
                pass
            ks = run(Storage(str(folder)), handed)  # reboot and finish the job
            report = ks.check()
            assert report["bad_mac"] == 0 or torn, report  # only a torn write leaves a bad record
            assert report["reserved"] >= 8
            pubkeys = [p for _, p in handed]
            assert len(pubkeys) == len(set(pubkeys)), "a key was handed out twice (cut at %d)" % k
            indices = [i for i, _ in handed]
            assert indices == sorted(indices) and len(set(indices)) == len(indices)
            assert all(i < ks.reserved for i in indices)
            for index, pubkey in handed:  # what was handed out really is that key
                assert ks.account(index).pubkey == pubkey
            if finished:
                break
            k += 1
    assert k > 10  # the life above takes several writes; every one of them was cut


@pytest.mark.parametrize("keep", [0, 3, 12, -1])
def test_a_write_cut_short_is_interrupted_not_damage(store, device_key, keep):
    """What a truncate-then-write (MicroPython's ``wb``) or an in-place write leaves when the
    power goes: a copy cut anywhere. The other copy is the newest completed write, nothing
    is behind; a first write cut short is a record never written."""
    key = os.urandom(32)
    first = records.ABRecord(store, "alpha", key)
    first.store(b"one")
    blob = store.read("alpha.a")
    store.replace("alpha.a", blob[:keep])
    again = records.ABRecord(store, "alpha", key)
    assert again.load() is None and again.behind is None and again.seq == 0
    again.store(b"one again")
    again.store(b"two")
    torn = store.read("alpha.b")
    store.replace("alpha.b", torn[:keep] if keep >= 0 else torn[:-1])
    third = records.ABRecord(store, "alpha", key)
    assert third.load() == b"one again" and third.behind is None and "interrupted" in third.problems[0][1]
