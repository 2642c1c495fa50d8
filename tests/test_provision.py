"""``plugpay provision``: a board's wallet with its identity and keys registered directly with
the RA directory (500 keys, progress on stderr) or over MQTT through the gateway of a real
host stack; bad inputs fail with one line and change nothing."""
import os
import stat

import pytest

from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import ra
from plugpay.host.stack import HostStack
from plugpay.tools import cli, provision_cli

PERSON = ["--name", "Ada Lovelace", "--licence", "L-1815", "--vehicle-id", "1PLUGPAY000000001"]


@pytest.fixture(scope="module")
def ra_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("ra")
    key_file = str(base / "ra.key")
    ra.create_key_file(key_file)
    ra.init(str(base / "ra"), ra.Unlock(key_file=key_file))
    return str(base / "ra"), key_file


def _open(out):
    return Wallet.open(Storage(os.path.join(out, "wallet")), KeyFile(os.path.join(out, "device.key")).load())


def test_in_person_and_500_keys_directly_with_the_ra(tmp_path, ra_dir, capsys):
    directory, key_file = ra_dir
    out = str(tmp_path / "vehicle-1")
    code = cli.main(["provision", "--role", "vehicle", "--out", out, "--keys", "500", "--batch", "200",
                     "--ra-dir", directory, "--key-file", key_file] + PERSON)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "registered 500 one-time keys (500 available)" in captured.out
    bars = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert bars[0].endswith("0/500 keys") and bars[-1] == "[%s] 500/500 keys" % ("#" * 30) and len(bars) == 4
    assert stat.S_IMODE(os.stat(os.path.join(out, "device.key")).st_mode) == 0o600
    wallet = _open(out)
    assert wallet.keystore.available() == 500 and wallet.check()["ok"]
    with ra.RegistrationAuthority.open(directory, ra.Unlock(key_file=key_file)) as authority:
        _, account = wallet.new_account()
        assert authority.account(account.pubkey).identity_id == wallet.identity_id
    # run again: the wallet is opened, not replaced, and gets more keys
    assert cli.main(["provision", "--role", "vehicle", "--out", out, "--keys", "10", "--ra-dir", directory,
                     "--key-file", key_file]) == 0
    assert "opened the wallet" in capsys.readouterr().out
    assert _open(out).keystore.capacity() == 510


def test_without_the_ra_it_prints_the_device_key_to_take_there(tmp_path, ra_dir, capsys):
    directory, key_file = ra_dir
    pubkey = ra.public_epochs(directory)[0][1].hex()
    out = str(tmp_path / "charger")
    assert cli.main(["provision", "--role", "charger", "--out", out, "--ra-pubkey", "0:" + pubkey]) == 0
    text = capsys.readouterr().out
    device = _open(out).device_pubkey().hex()
    assert "device public key: %s" % device in text and "--device-pubkey %s" % device in text
    with ra.RegistrationAuthority.open(directory, ra.Unlock(key_file=key_file)) as authority:
        identity = authority.register_identity({"name": "Grid Co", "licence": "C-0001", "vehicle_id": "1PLUGPAY000000002"},
                                               bytes.fromhex(device))
    assert cli.main(["provision", "--role", "charger", "--out", out, "--identity", identity.hex(), "--keys", "5",
                     "--ra-dir", directory, "--key-file", key_file]) == 0
    assert _open(out).identity_id == identity and _open(out).keystore.available() == 5


def test_keys_over_mqtt_through_the_gateway_and_a_board_copy_dry_run(tmp_path, capsys):
    with HostStack(str(tmp_path / "host")) as host:
        directory = str(tmp_path / "host" / "ra")
        key_file = str(tmp_path / "host" / "ra-key.bin")
        out = str(tmp_path / "vehicle")
        url = "mqtt://%s:%d" % (host.broker_host, host.broker_port)
        code = cli.main(["provision", "--role", "vehicle", "--out", out, "--keys", "120", "--batch", "50",
                         "--ra-dir", directory, "--key-file", key_file, "--broker", url,
                         "--board-port", "/dev/ttyUSB0", "--dry-run"] + PERSON)
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "over MQTT through the gateway" in captured.out and "120/120 keys" in captured.err
        wallet = _open(out)
        assert wallet.keystore.available() == 120 and wallet.check()["ok"]
        _, account = wallet.new_account()
        assert host.authority.account(account.pubkey).identity_id == wallet.identity_id
    steps = [line.strip() for line in captured.out.splitlines() if line.strip().startswith("mpremote")]
    assert steps[0] == "mpremote connect /dev/ttyUSB0 fs mkdir :/wallet"
    assert any(":/wallet/seed" in s for s in steps) and steps[-1].endswith("'<writes the device key into NVS>'")
    key = open(os.path.join(out, "device.key"), "rb").read().hex()
    assert key not in captured.out  # the key itself is never printed


def test_bad_inputs_fail_with_one_line_and_change_nothing(tmp_path, ra_dir, capsys):
    directory, key_file = ra_dir
    out = str(tmp_path / "v")

    def provision(*options):
        code = cli.main(["provision", "--role", "vehicle", "--out", out] + list(options))
        return code, capsys.readouterr().err

    assert provision("--keys", "-1", "--ra-dir", directory, "--key-file", key_file)[0] == 2
    assert "--ra-pubkey wants EPOCH:HEX" in provision("--ra-pubkey", "0:zz")[1]
    assert "--identity wants" in provision("--ra-dir", directory, "--identity", "abc")[1]
    assert "together" in provision("--ra-dir", directory, "--name", "x")[1]
    assert "no wallet in" in provision("--keys", "5")[1]
    assert not os.path.exists(os.path.join(out, "wallet", "seed"))
    # a locked RA: wrong key file
    wrong = str(tmp_path / "wrong.key")
    ra.create_key_file(wrong)
    code, err = provision("--ra-dir", directory, "--key-file", wrong, *PERSON)
    assert code == 2 and err.startswith("plugpay provision: error:") and len(err.splitlines()) == 1
    wallet = _open(out)  # created before the RA was asked, and intact
    assert wallet.identity_id is None and wallet.check()["ok"]
    # an unreachable gateway: nothing registered, nothing lost
    code, err = provision("--identity", "00" * 16, "--keys", "5", "--broker", "mqtt://127.0.0.1:1", "--timeout", "1")
    assert code == 1 and "broker" in err, err
    assert _open(out).keystore.available() == 0 and _open(out).check()["ok"]
    # the RA refuses an identity it never registered: the batch stores nothing
    code, err = provision("--keys", "5", "--ra-dir", directory, "--key-file", key_file)
    assert code == 1 and "refused" in err and "not registered" in err, err
    assert _open(out).keystore.available() == 0 and _open(out).check()["ok"]
    # a different device key cannot open the wallet
    with open(os.path.join(out, "device.key"), "r+b") as f:
        f.write(bytes(32))
    code, err = provision("--keys", "1", "--ra-dir", directory, "--key-file", key_file)
    assert code == 2 and len(err.splitlines()) == 1
