"""The keystore under the real MicroPython: seal, register, reserve, reopen, O(1) reads."""
import gc
import os

import mpyunit
from plugpay.firmware import records
from plugpay.firmware.keystore import BLOCK, RECORD, Keystore, KeystoreError
from plugpay.firmware.storage import Storage
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import signing
from plugpay.protocol.port import sha256
from plugpay.protocol.structures import Account

DEVICE_KEY = sha256(b"device key of the test board")
RA_SECRET = sha256(b"the test RA")


def _folder(name):
    try:
        os.mkdir(name)
    except OSError:
        pass
    return Storage(name)


def _answer(request_bytes):
    """What the RA signs: one Account signature per requested key (the RA itself is host
    code, tested in tests/test_ra.py; here only its signatures matter)."""
    req = ra.RegistrationRequest.decode(request_bytes)
    sigs = [signing.sign(RA_SECRET, Account(pk, 0, b"")) for pk in req.pubkeys]
    return ra.RegistrationResponse(req.nonce, 0, sigs).encode()


def test_register_reserve_reopen():
    st = _folder("ks1")
    ra_keys = {0: signing.public_key(RA_SECRET)}
    ks = Keystore.create(st, DEVICE_KEY)
    yield "created"
    assert ks.registration_reply(_answer(ks.registration_request(b"i" * 16, 12)), ra_keys) == 12
    yield "12 keys registered"
    first = ks.reserve()
    again = Keystore.open(_folder("ks1"), DEVICE_KEY)
    second = again.reserve()  # a reopen starts past the block the first key came from
    assert first[0] == 0 and second[0] == BLOCK and first[1].pubkey != second[1].pubkey
    assert signing.verify(ra_keys[0], second[1], second[1].ra_sig)
    assert st.size("keys") == 8 + 12 * RECORD
    report = again.check()
    assert report["valid"] == 12 and report["bad_mac"] == 0 and report["reserved"] == BLOCK + 1, report
    yield "reserved and reopened"


def test_wrong_device_key_and_tampering_are_refused():
    st = _folder("ks2")
    Keystore.create(st, DEVICE_KEY)
    try:
        Keystore.open(st, sha256(b"another board"))
        raise AssertionError("opened with the wrong device key")
    except KeystoreError as e:
        assert "does not unseal" in str(e)
    blob = bytearray(st.read("counters.a"))
    blob[-10] ^= 1  # inside the sealed payload (the last 4 bytes repeat the seq: a torn write)
    st.replace("counters.a", bytes(blob))
    try:
        Keystore.open(st, DEVICE_KEY)
        raise AssertionError("opened with tampered counters")
    except records.RecordCorrupt:
        pass
    assert st.read("counters.a") == bytes(blob)  # reported, not overwritten


def test_reading_a_record_does_not_grow_with_the_store():
    st = _folder("ks3")
    ks = Keystore.create(st, DEVICE_KEY)
    # 500 records written straight after the header (registration is tested above): the
    # record reads below must cost the same whatever their number.
    body = bytearray()
    for i in range(500):
        b = (0).to_bytes(4, "big") + bytes(64)
        body.extend(b + ks._mac(i, b))
    st.write_at("keys", 8, bytes(body))
    body = None
    gc.collect()
    cost = []
    for i in (0, 499, 0, 499):  # on the WebAssembly port nothing is freed mid-call: compare
        before = gc.mem_alloc()  # what one read allocates, near the start and at the end
        assert ks.record(i) is not None
        cost.append(gc.mem_alloc() - before)
    assert max(cost) - min(cost) < 256 and max(cost) < 4096, cost
