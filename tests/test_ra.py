"""The Registration Authority: sealed keys, identities, batch signing, refusals, rotation,
audit, the sans-IO ``handle`` under hostile bytes, and the ``plugpay ra`` commands.

Everything is real: SQLite files in tmp_path, libsecp256k1 signatures, scrypt, and one run
of the wallet side under the real MicroPython."""
import argparse
import hashlib
import json
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugpay.host import certs, ra
from plugpay.protocol import codec, signing
from plugpay.protocol import ra_messages as msg
from plugpay.protocol.structures import Account, Price, Transaction, TxInput, TxOutput
from plugpay.tools import micropython, ra_cli
from plugpay.tools.errors import Failure

ADA = {"name": "Ada Lovelace", "licence": "LOVEL-1815", "vehicle_id": "WVWZZZ1JZXW000001"}
ALAN = {"name": "Alan Turing", "licence": "TURIN-1912", "vehicle_id": "SAJAA1234KC123456"}
NOW = 1_750_000_000


def fresh_keys(n):
    return [signing.public_key(signing.new_secret()) for _ in range(n)]


def off_curve_key():
    """A 33-byte key with a valid prefix whose x has no point on secp256k1."""
    x = 5
    while signing.valid_public_key(b"\x02" + x.to_bytes(32, "big")):
        x += 1
    return b"\x02" + x.to_bytes(32, "big")


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "secrets" / "ra-key.bin"
    path.parent.mkdir()
    ra.create_key_file(path)
    return path


@pytest.fixture
def unlock(key_file):
    return ra.Unlock(key_file=key_file)


@pytest.fixture
def ra_dir(tmp_path, unlock):
    directory = tmp_path / "ra"
    ra.init(directory, unlock, now=NOW)
    return directory


@pytest.fixture
def authority(ra_dir, unlock):
    with ra.RegistrationAuthority(ra_dir, ra.unseal(ra_dir, unlock), clock=lambda: NOW + 60) as a:
        yield a


class Device:
    """An onboard unit: a long-term device key, registered with an identity."""

    def __init__(self, authority, fields):
        self.secret = signing.new_secret()
        self.identity_id = authority.register_identity(fields, signing.public_key(self.secret))

    def request(self, pubkeys, nonce=None):
        return msg.make_request(self.identity_id, self.secret, pubkeys, nonce)


def snapshot(authority):
    """Every row of every table: what "nothing changed" means."""
    db = authority.repo.db
    return {t: sorted(db.execute("SELECT * FROM %s" % t)) for t in ("meta", "identities", "accounts", "nonces")}


def ask(authority, request_bytes):
    return msg.decode_reply(authority.handle(request_bytes))


def refused(authority, request_bytes, code=None):
    """Asserts an error reply (with ``code`` if given) and an unchanged repository."""
    before = snapshot(authority)
    reply = ask(authority, request_bytes)
    assert isinstance(reply, msg.RegistrationError), reply
    assert code is None or reply.code == code, (reply.reason(), reply.text)
    assert reply.text
    assert snapshot(authority) == before
    return reply


# Batch signing


def test_a_batch_of_300_keys_is_signed_recorded_and_verifiable(authority):
    ada = Device(authority, ADA)
    keys = fresh_keys(300)
    request = ada.request(keys)
    reply = ask(authority, request.encode())
    assert isinstance(reply, msg.RegistrationResponse)
    assert reply.epoch == 0 and reply.nonce == request.nonce and len(reply.ra_sigs) == 300
    ra_pub = authority.vault.public_key
    for pk, sig in zip(keys, reply.ra_sigs):
        assert signing.verify(ra_pub, Account(pk, 0, b""), sig)
    accounts = msg.accounts_from(request, reply, ra_pub)
    assert [a.pubkey for a in accounts] == keys
    assert all(authority.vault.verify_account(a) for a in accounts)

    by_pubkey = authority.account(keys[7])
    by_address = authority.account(hashlib.sha256(keys[7]).digest())
    assert by_pubkey == by_address
    assert (by_pubkey.identity_id, by_pubkey.epoch, by_pubkey.registered) == (ada.identity_id, 0, NOW + 60)
    assert authority.account(fresh_keys(1)[0]) is None
    assert authority.repo.counts() == {"identities": 1, "disabled": 0, "batches": 1, "accounts_by_epoch": {0: 300}}


def test_a_wallet_checks_the_response(authority):
    ada = Device(authority, ADA)
    request = ada.request(fresh_keys(3))
    reply = ask(authority, request.encode())
    with pytest.raises(codec.DecodeError, match="not a valid RA signature"):
        msg.accounts_from(request, reply, signing.public_key(signing.new_secret()))
    with pytest.raises(codec.DecodeError, match="does not answer this request"):
        msg.accounts_from(ada.request(request.pubkeys), reply, authority.vault.public_key)


def test_unknown_identity(authority):
    ada = Device(authority, ADA)
    ada.identity_id = os.urandom(16)
    refused(authority, ada.request(fresh_keys(2)).encode(), msg.UNKNOWN_IDENTITY)


def test_disabled_identity_registers_nothing_until_enabled(authority):
    ada = Device(authority, ADA)
    authority.set_identity_enabled(ada.identity_id, False)
    request = ada.request(fresh_keys(2)).encode()
    refused(authority, request, msg.IDENTITY_DISABLED)
    assert authority.repo.counts()["disabled"] == 1
    authority.set_identity_enabled(ada.identity_id, True)
    assert isinstance(ask(authority, request), msg.RegistrationResponse)


def test_request_not_signed_by_the_device_key(authority):
    ada = Device(authority, ADA)
    Device(authority, ALAN)
    forged = msg.make_request(ada.identity_id, signing.new_secret(), fresh_keys(2))
    refused(authority, forged.encode(), msg.BAD_SIGNATURE)
    unsigned = msg.RegistrationRequest(ada.identity_id, os.urandom(16), fresh_keys(2), b"")
    refused(authority, unsigned.encode(), msg.BAD_SIGNATURE)
    request = ada.request(fresh_keys(2))
    request.pubkeys = fresh_keys(2)  # swapped after signing
    refused(authority, request.encode(), msg.BAD_SIGNATURE)


def test_replayed_nonce(authority):
    ada = Device(authority, ADA)
    first = ada.request(fresh_keys(2))
    answer = ask(authority, first.encode())
    assert isinstance(answer, msg.RegistrationResponse)
    # The same batch again (our answer was lost): signed again, nothing new stored.
    before = snapshot(authority)
    again = ask(authority, first.encode())
    assert isinstance(again, msg.RegistrationResponse) and snapshot(authority) == before
    assert msg.accounts_from(first, again, authority.vault.public_key) == msg.accounts_from(
        first, answer, authority.vault.public_key)
    # Another batch under a used nonce is a replay, even one holding a key of the first.
    refused(authority, ada.request(fresh_keys(2), nonce=first.nonce).encode(), msg.REPLAYED_NONCE)
    refused(authority, ada.request(first.pubkeys[:1] + fresh_keys(1), nonce=first.nonce).encode(), msg.REPLAYED_NONCE)
    alan = Device(authority, ALAN)  # nonces are per identity
    assert isinstance(ask(authority, alan.request(fresh_keys(2), nonce=first.nonce).encode()), msg.RegistrationResponse)


def test_duplicate_key_within_the_batch(authority):
    ada = Device(authority, ADA)
    keys = fresh_keys(4)
    reply = refused(authority, ada.request(keys + [keys[2]]).encode(), msg.DUPLICATE_PUBKEY)
    assert "pubkeys[4]" in reply.text


def test_key_already_registered_to_anyone_and_refused_batches_store_nothing(authority):
    ada, alan = Device(authority, ADA), Device(authority, ALAN)
    taken = fresh_keys(1)
    assert isinstance(ask(authority, alan.request(taken).encode()), msg.RegistrationResponse)
    mine = fresh_keys(5)
    reply = refused(authority, ada.request(mine[:3] + taken + mine[3:]).encode(), msg.ALREADY_REGISTERED)
    assert "pubkeys[3]" in reply.text
    refused(authority, alan.request(taken).encode(), msg.ALREADY_REGISTERED)  # one-time, even for its owner
    # Nothing of the refused batch was kept: its other keys and its nonce are still free.
    assert isinstance(ask(authority, ada.request(mine).encode()), msg.RegistrationResponse)


@pytest.mark.parametrize("bad", [off_curve_key(), b"\x04" + bytes(range(32)), b"\x02" + b"\xff" * 32])
def test_invalid_public_key(authority, bad):
    ada = Device(authority, ADA)
    reply = refused(authority, ada.request(fresh_keys(2) + [bad]).encode(), msg.INVALID_PUBKEY)
    assert "pubkeys[2]" in reply.text


def _raw_request(device, pubkeys):
    """A request built without the schema's checks, signed like a real one."""
    nonce = os.urandom(16)
    body = [msg.TAG_REGISTRATION_REQUEST, 1, device.identity_id, nonce, pubkeys]
    digest = hashlib.sha256(b"plugpay/registration_request/v1" + codec.dumps(body)).digest()
    return codec.dumps(body + [signing.sign_digest(device.secret, digest)])


def test_batch_over_the_limit(authority):
    ada = Device(authority, ADA)
    keys = fresh_keys(msg.MAX_BATCH + 1)
    reply = refused(authority, _raw_request(ada, keys), msg.BATCH_TOO_LARGE)
    assert str(msg.MAX_BATCH) in reply.text
    with pytest.raises(msg.BatchTooLarge):
        ada.request(keys)
    assert isinstance(ask(authority, ada.request(keys[: msg.MAX_BATCH]).encode()), msg.RegistrationResponse)


def test_empty_batch_is_malformed(authority):
    refused(authority, _raw_request(Device(authority, ADA), []), msg.MALFORMED)


def test_a_full_batch_response_fits_the_message_limit(authority):
    ada = Device(authority, ADA)
    response = authority.handle(ada.request(fresh_keys(msg.MAX_BATCH)).encode())
    assert len(response) <= codec.MAX_BYTES
    assert len(msg.decode_reply(response).ra_sigs) == msg.MAX_BATCH


# handle() under hostile bytes

HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HOSTILE
@given(data=st.binary(max_size=300))
def test_random_bytes_get_an_error_and_change_nothing(authority, data):
    refused(authority, data, msg.MALFORMED)


CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=8)
    | st.sampled_from([bytes(16), bytes(33), bytes(64), b"\x02" * 33]),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@HOSTILE
@given(fields=st.lists(CBOR_VALUES, max_size=6), version=st.sampled_from([1, 2, 0]))
def test_request_shaped_garbage_gets_an_error_and_changes_nothing(authority, fields, version):
    refused(authority, codec.dumps([msg.TAG_REGISTRATION_REQUEST, version] + fields))


def test_every_damaged_request_gets_an_error_and_changes_nothing(authority):
    """Each single-byte change and each truncation of a valid request."""
    raw = Device(authority, ADA).request(fresh_keys(3)).encode()
    before = snapshot(authority)
    for i in range(len(raw)):
        for damaged in (raw[:i], raw[:i] + bytes((raw[i] ^ 0x01,)) + raw[i + 1 :], raw[:i] + b"\xff" + raw[i + 1 :]):
            if damaged != raw:
                assert isinstance(ask(authority, damaged), msg.RegistrationError), i
    assert snapshot(authority) == before
    assert isinstance(ask(authority, raw), msg.RegistrationResponse)


@pytest.mark.parametrize("data", [None, "text", 42, [b"list"]])
def test_not_bytes_at_all(authority, data):
    refused(authority, data, msg.MALFORMED)


def test_oversized_message(authority):
    refused(authority, b"\x00" * (codec.MAX_BYTES + 1), msg.MESSAGE_TOO_LARGE)


def test_a_storage_failure_is_an_error_response_not_an_exception(authority):
    ada = Device(authority, ADA)
    authority.repo.db.close()
    reply = ask(authority, ada.request(fresh_keys(2)).encode())
    assert reply.code == msg.UNAVAILABLE


# Identities


def test_identity_documents_are_checked(authority):
    device_pub = fresh_keys(1)[0]
    for fields, field in [
        (dict(ADA, vehicle_id="WVWZZZ1JZXW00000I"), "vehicle_id"),  # I is not a VIN letter
        (dict(ADA, vehicle_id="SHORT"), "vehicle_id"),
        (dict(ADA, licence="x"), "licence"),
        (dict(ADA, name=""), "name"),
        (dict(ADA, name="Ada\x00"), "name"),
        (dict(ADA, email="a@b"), "unknown"),
        ({"name": "Ada"}, "licence"),
    ]:
        with pytest.raises(ra.IdentityError, match=field):
            authority.register_identity(fields, device_pub)
    with pytest.raises(ra.IdentityError, match="device_pubkey"):
        authority.register_identity(ADA, off_curve_key())
    assert authority.repo.counts()["identities"] == 0


def test_one_identity_per_licence_and_vehicle_and_per_device_key(authority):
    ada = Device(authority, ADA)
    same_person = dict(ADA, licence=" lovel-1815 ", vehicle_id="wvwzzz1jzxw000001")
    with pytest.raises(certs.DuplicateIdentity) as e:
        authority.register_identity(same_person, fresh_keys(1)[0])
    assert e.value.existing_id == ada.identity_id
    with pytest.raises(certs.DuplicateIdentity, match="device key"):
        authority.register_identity(ALAN, signing.public_key(ada.secret))
    found = authority.repo.find_identity("LOVEL-1815", "WVWZZZ1JZXW000001")
    assert (found.identity_id, found.name) == (ada.identity_id, "Ada Lovelace")


def test_a_row_altered_without_the_key_is_not_trusted(authority):
    ada = Device(authority, ADA)
    authority.set_identity_enabled(ada.identity_id, False)
    authority.repo.db.execute("UPDATE identities SET enabled = 1")  # re-enabled behind the RA's back
    with pytest.raises(certs.RepositoryError, match="altered"):
        authority.repo.identity(ada.identity_id)
    assert ask(authority, ada.request(fresh_keys(1)).encode()).code == msg.UNAVAILABLE
    assert authority.repo.counts()["accounts_by_epoch"] == {}


# Rotation


def test_rotation_signs_with_the_new_epoch_and_keeps_old_accounts_valid(ra_dir, unlock):
    with ra.RegistrationAuthority.open(ra_dir, unlock) as a0:
        ada = Device(a0, ADA)
        first = request = ada.request(fresh_keys(10))
        old = msg.accounts_from(request, ask(a0, request.encode()), a0.vault.public_key)
        epoch0_pub = a0.vault.public_key
    v1 = ra.rotate(ra_dir, unlock, now=NOW + 86400)
    assert v1.epoch == 1 and v1.epoch_keys[0] == epoch0_pub and v1.public_key != epoch0_pub
    with ra.RegistrationAuthority.open(ra_dir, unlock) as a1:
        request = ada.request(fresh_keys(10))
        reply = ask(a1, request.encode())
        assert reply.epoch == 1
        new = msg.accounts_from(request, reply, v1.public_key)
        assert all(a1.vault.verify_account(a) for a in old + new)
        assert all(signing.verify(epoch0_pub, a, a.ra_sig) for a in old)
        assert not any(signing.verify(epoch0_pub, a, a.ra_sig) for a in new)
        assert a1.account(old[0].pubkey).epoch == 0 and a1.account(new[0].pubkey).epoch == 1
        # An epoch-0 batch asked for again is not re-signed: that key is gone.
        refused(a1, first.encode(), msg.REPLAYED_NONCE)
    # Epoch 0 no longer signs: its secret is gone from the key file.
    assert [e for e, _, _ in ra.public_epochs(ra_dir)] == [0, 1]
    with pytest.raises(codec.DecodeError, match="not a valid RA signature"):
        msg.accounts_from(request, reply, epoch0_pub)


# Audit


def _tx(accounts_and_amounts, spends=bytes(32)):
    outputs = [TxOutput(acc, amount) for acc, amount in accounts_and_amounts]
    return Transaction([TxInput(spends, 0)], Price(30, sum(a for _, a in accounts_and_amounts)), outputs, [bytes(64)])


def _accounts(authority, device, n):
    request = device.request(fresh_keys(n))
    return msg.accounts_from(request, ask(authority, request.encode()), authority.vault.public_key)


def test_audit_names_the_identities_behind_a_transactions_accounts(authority):
    ada, alan = Device(authority, ADA), Device(authority, ALAN)
    ada_accs, alan_accs = _accounts(authority, ada, 2), _accounts(authority, alan, 2)
    stranger = Account(fresh_keys(1)[0], 0, bytes(64))
    pay = _tx([(alan_accs[0], 700), (ada_accs[0], 300), (stranger, 1)])
    change = _tx([(ada_accs[1], 50)], spends=pay.txhash())
    expected = {
        alan_accs[0].address(): alan.identity_id,
        ada_accs[0].address(): ada.identity_id,
        ada_accs[1].address(): ada.identity_id,
    }
    block_nesting_values = codec.dumps([7, bytes(32), [pay.to_value(), change.to_value()]])
    block_nesting_bytes = codec.dumps([7, bytes(32), [pay.encode(), change.encode()]])
    # Any structure carrying an account (a channel party, an HTLC payee) is searched too.
    other_request = codec.dumps([99, 1, [stranger.to_value(), ada_accs[1].to_value()], b"\x83junk"])
    for items in (
        [pay, change],
        [pay.encode(), change.encode()],
        [block_nesting_values],
        [block_nesting_bytes],
        [pay, other_request],
    ):
        found = authority.audit(items)
        assert found[stranger.address()] is None
        assert {k: v.identity_id for k, v in found.items() if v is not None} == expected
    assert authority.audit([pay])[alan_accs[0].address()].name == "Alan Turing"
    with pytest.raises(codec.DecodeError):
        authority.audit([b"\xff not cbor"])


def test_audit_needs_the_ra_key(tmp_path, ra_dir, unlock, key_file):
    with ra.RegistrationAuthority.open(ra_dir, unlock) as a:
        ada = Device(a, ADA)
        acc = _accounts(a, ada, 1)[0]
    with ra.repository(ra_dir) as keyless:  # the database file alone
        assert keyless.counts()["accounts_by_epoch"] == {0: 1}
        with pytest.raises(certs.Locked):
            keyless.account(acc.pubkey)
        with pytest.raises(certs.Locked):
            keyless.identity(ada.identity_id)
    stored = b"".join(p.read_bytes() for p in ra_dir.iterdir())
    for secret_text in ("Ada Lovelace", "LOVEL-1815", "WVWZZZ1JZXW000001"):
        assert secret_text.encode() not in stored
    other = ra.init(tmp_path / "other-ra", unlock)
    with pytest.raises(certs.RepositoryError, match="different RA key"):
        ra.RegistrationAuthority(ra_dir, other)
    key_file.write_bytes(os.urandom(32))
    with pytest.raises(ra.KeyStoreError, match="failed authentication"):
        ra.RegistrationAuthority.open(ra_dir, unlock)


# The sealed key file


def _flip(data, i):
    return data[:i] + bytes((data[i] ^ 0x01,)) + data[i + 1 :]


def test_a_tampered_or_truncated_key_file_is_reported_never_used_never_overwritten(ra_dir, unlock):
    path = ra_dir / ra.KEY_FILE
    good = path.read_bytes()
    damaged = [good[:n] for n in (0, 1, 20, len(good) // 2, len(good) - 1)]
    damaged += [_flip(good, i) for i in range(0, len(good), 7)]
    damaged.append(good + b"\x00")
    for bad in damaged:
        path.write_bytes(bad)
        for attempt in (ra.unseal, ra.rotate):
            with pytest.raises(ra.KeyStoreError, match="not a valid RA key file|failed authentication|does not match"):
                attempt(ra_dir, unlock)
        with pytest.raises(ra.KeyStoreError, match="refusing to overwrite"):
            ra.init(ra_dir, unlock)
        assert path.read_bytes() == bad
    path.write_bytes(good)
    assert ra.unseal(ra_dir, unlock).epoch == 0


def test_passphrase_sealing(tmp_path):
    directory = tmp_path / "ra"
    with pytest.raises(ra.KeyStoreError, match="at least 12"):
        ra.init(directory, ra.Unlock(passphrase="short"))
    vault = ra.init(directory, ra.Unlock(passphrase="a long enough passphrase"))
    assert ra.unseal(directory, ra.Unlock(passphrase="a long enough passphrase")).public_key == vault.public_key
    with pytest.raises(ra.KeyStoreError, match="failed authentication"):
        ra.unseal(directory, ra.Unlock(passphrase="a long enough passphrasE"))
    with pytest.raises(ra.KeyStoreError, match="sealed under a passphrase"):
        ra.unseal(directory, ra.Unlock(key_file=tmp_path / "nope"))


def test_files_are_private_and_secrets_never_shown(ra_dir, unlock):
    with ra.RegistrationAuthority.open(ra_dir, unlock) as a:
        Device(a, ADA).request(fresh_keys(1))
        vault = a.vault
        assert repr(vault) == "Vault(epoch=0, epochs=1)"
        assert repr(vault.repository_keys()) == "RepositoryKeys(...)"
    assert stat.S_IMODE(ra_dir.stat().st_mode) == 0o700
    for p in ra_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


# The wallet side under the real MicroPython

WALLET = """
import json
from plugpay.protocol import ra_messages as msg
from plugpay.protocol import signing
case = json.loads(CASE)
device = bytes.fromhex(case["device"])
keys = [signing.public_key(bytes.fromhex(s)) for s in case["secrets"]]
request = msg.make_request(bytes.fromhex(case["identity"]), device, keys, bytes.fromhex(case["nonce"]))
out = {"request": request.encode().hex()}
if "reply" in case:
    reply = msg.decode_reply(bytes.fromhex(case["reply"]))
    accounts = msg.accounts_from(request, reply, bytes.fromhex(case["ra_pub"]))
    out["accounts"] = [a.encode().hex() for a in accounts]
    error = msg.decode_reply(bytes.fromhex(case["error"]))
    out["error"] = [error.reason(), error.text]
print("@@ " + json.dumps(out))
"""


def test_a_micropython_wallet_registers_keys(authority):
    if micropython.unavailable_reason():
        pytest.skip(micropython.unavailable_reason())
    device = signing.new_secret()
    identity_id = authority.register_identity(ADA, signing.public_key(device))
    case = {"device": device.hex(), "identity": identity_id.hex(), "nonce": os.urandom(16).hex(),
            "secrets": [signing.new_secret().hex() for _ in range(3)]}
    request = bytes.fromhex(micropython.run("CASE = %r\n" % json.dumps(case) + WALLET).check().records[-1]["request"])
    reply = authority.handle(request)
    replay = msg.make_request(identity_id, device, [signing.public_key(signing.new_secret())], bytes.fromhex(case["nonce"]))
    case.update(reply=reply.hex(), ra_pub=authority.vault.public_key.hex(), error=authority.handle(replay.encode()).hex())
    rec = micropython.run("CASE = %r\n" % json.dumps(case) + WALLET).check().records[-1]
    assert rec["request"] == request.hex()
    accounts = [Account.decode(bytes.fromhex(h)) for h in rec["accounts"]]
    assert len(accounts) == 3 and all(authority.vault.verify_account(a) for a in accounts)
    assert rec["error"][0] == "REPLAYED_NONCE"


# The command line


def cli(*argv):
    parser = argparse.ArgumentParser(prog="plugpay")
    ra_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_end_to_end(tmp_path, capsys):
    d, key = str(tmp_path / "ra"), str(tmp_path / "usb" / "ra.key")
    os.mkdir(tmp_path / "usb")
    unlock = ["--dir", d, "--key-file", key]
    assert cli("ra", "init", *unlock) == 0
    assert "created key file" in capsys.readouterr().out

    device = signing.new_secret()
    assert cli("ra", "register-identity", *unlock, "--name", "Ada Lovelace", "--licence", "lovel-1815",
               "--vehicle-id", "WVWZZZ1JZXW000001", "--device-pubkey", signing.public_key(device).hex()) == 0
    identity_id = bytes.fromhex(capsys.readouterr().out.strip())

    request = msg.make_request(identity_id, device, fresh_keys(20))
    (tmp_path / "req.bin").write_bytes(request.encode())
    assert cli("ra", "sign", *unlock, "--request", str(tmp_path / "req.bin"), "--out", str(tmp_path / "resp.bin")) == 0
    assert "signed 20 keys under epoch 0" in capsys.readouterr().out
    reply = msg.decode_reply((tmp_path / "resp.bin").read_bytes())
    accounts = msg.accounts_from(request, reply, ra.unseal(d, ra.Unlock(key_file=key)).public_key)

    replay = msg.make_request(identity_id, device, fresh_keys(2), request.nonce)
    (tmp_path / "req.hex").write_text(replay.encode().hex() + "\n")  # hex, as copied from a log
    with pytest.raises(Failure, match="refused: REPLAYED_NONCE"):  # plugpay prints it as one line, exit 1
        cli("ra", "sign", *unlock, "--request", str(tmp_path / "req.hex"), "--out", str(tmp_path / "err.bin"))
    assert msg.decode_reply((tmp_path / "err.bin").read_bytes()).code == msg.REPLAYED_NONCE

    tx = _tx([(accounts[0], 10), (accounts[1], 5)])
    (tmp_path / "tx.bin").write_bytes(tx.encode())
    assert cli("ra", "audit", *unlock, "--tx", str(tmp_path / "tx.bin")) == 0
    out = capsys.readouterr().out
    assert accounts[0].address().hex() in out and accounts[1].address().hex() in out
    assert "Ada Lovelace" in out and "LOVEL-1815" in out and identity_id.hex() in out

    assert cli("ra", "disable-identity", *unlock, identity_id.hex()) == 0
    assert cli("ra", "rotate", *unlock) == 0
    assert "epoch 1 is now signing" in capsys.readouterr().out
    assert cli("ra", "status", "--dir", d) == 0
    out = capsys.readouterr().out
    assert "verify only" in out and "signing" in out and "identities: 1 (1 disabled)" in out
    assert "registration batches: 1" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["0", ra.public_epochs(d)[0][1].hex()] == lines[2][:2] and lines[2][4] == "20"

    # No command printed the key file's content or anything derived from the sealed secrets.
    key_bytes = open(key, "rb").read()
    assert key_bytes.hex() not in out


def test_cli_passphrase_from_the_environment(tmp_path, monkeypatch, capsys):
    d = str(tmp_path / "ra")
    monkeypatch.setenv("RA_PASS", "a passphrase of some length")
    assert cli("ra", "init", "--dir", d, "--passphrase-env", "RA_PASS") == 0
    assert cli("ra", "rotate", "--dir", d, "--passphrase-env", "RA_PASS") == 0
    out = capsys.readouterr().out
    assert "a passphrase of some length" not in out
    monkeypatch.setenv("RA_PASS", "the wrong passphrase")
    with pytest.raises(ra.KeyStoreError, match="failed authentication"):
        cli("ra", "rotate", "--dir", d, "--passphrase-env", "RA_PASS")
    with pytest.raises(ra.KeyStoreError, match="not set"):
        cli("ra", "rotate", "--dir", d, "--passphrase-env", "NO_SUCH_VARIABLE")
    with pytest.raises(ra.KeyStoreError, match="refusing to overwrite"):
        cli("ra", "init", "--dir", d, "--passphrase-env", "RA_PASS")
    with pytest.raises(ra.IdentityError, match="not hex"):
        monkeypatch.setenv("RA_PASS", "a passphrase of some length")
        cli("ra", "register-identity", "--dir", d, "--passphrase-env", "RA_PASS", "--name", "A", "--licence", "ABCD",
            "--vehicle-id", "WVWZZZ1JZXW000001", "--device-pubkey", "zz")
