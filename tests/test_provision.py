"""``plugpay provision``: a board's wallet with its identity and keys registered directly with
the RA directory (500 keys, progress on stderr) or over MQTT through the gateway of a real
host stack; bad inputs fail with one line and change nothing."""
import json
import os
import stat

import board_configs
import pytest

from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import ra
from plugpay.host.stack import HostStack
from plugpay.tools import cli

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


def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path, ra_dir, capsys):
    directory, key_file = ra_dir
    out = str(tmp_path / "v")

    def provision(*options, role="vehicle"):
        code = cli.main(["provision", "--role", role, "--out", out] + list(options))
        return code, capsys.readouterr().err

    wrong = str(tmp_path / "wrong.key")
    ra.create_key_file(wrong)
    for options, line in (
            (["--keys", "-1", "--ra-dir", directory], "argument --keys: expected an integer 0..1000000, got '-1' "
             "(see plugpay provision --help)"),
            (["--ra-pubkey", "0:zz"], "--ra-pubkey wants EPOCH:HEX (a 33-byte compressed key), got '0:zz'"),
            (["--ra-dir", directory, "--identity", "abc"], "--identity wants 16 bytes of hex, got 'abc'"),
            (["--ra-dir", directory, "--name", "x"], "registering a vehicle in person needs --name, --licence and "
             "--vehicle-id together"),
            (["--keys", "5"], "no wallet in %s yet: give the RA's public keys (--ra-dir or --ra-pubkey)" % out),
            (["--ra-dir", directory, "--key-file", key_file, "--name", "Ada", "--licence", "L", "--vehicle-id",
              "1PLUGPAY000000001"], "--licence: 4 to 24 letters, digits or '-', starting with a letter or digit"),
            (["--ra-dir", directory, "--key-file", key_file, "--name", "Ada", "--licence", "L-1815", "--vehicle-id",
              "1PLUGPAY0000000O1"], "--vehicle-id: a 17-character VIN (letters except I, O, Q, and digits)"),
            (["--ra-dir", directory, "--key-file", wrong] + PERSON,
             "%s/ra.key failed authentication: wrong passphrase or key file" % directory),
            (["--ra-dir", str(tmp_path / "no-ra"), "--key-file", key_file] + PERSON,
             "--ra-dir: no RA key at %s (run `plugpay ra init`)" % (tmp_path / "no-ra" / "ra.key")),
            (["--ra-pubkey", "0:" + ra.public_epochs(directory)[0][1].hex(), "--identity", "00" * 16,
              "--broker", "mqtt://127.0.0.1:1"], "cannot connect to the MQTT broker at mqtt://127.0.0.1:1: "),
            (["--ra-dir", directory, "--config", str(tmp_path / "none.json")],
             "config %s: cannot read it: No such file or directory" % (tmp_path / "none.json"))):
        code, err = provision(*options)
        assert err.startswith("plugpay provision: error: " + line) and err.count("\n") == 1, (options, err)
        assert code == (3 if "--broker" in options else 2), (options, code)
        assert not os.path.exists(out), options  # nothing written, not even the folder
    # a charger has no VIN: refused with one, registered in person without one
    code, err = provision("--ra-dir", directory, "--key-file", key_file, *PERSON, role="charger")
    assert code == 2 and err == ("plugpay provision: error: --vehicle-id: a charger has no VIN; register it in "
                                 "person with --name and --licence\n")
    assert provision("--ra-dir", directory, "--key-file", key_file, "--name", "Grid Co", "--licence", "OP-77",
                     "--keys", "2", role="charger") == (0, "[..............................] 0/2 keys\n"
                                                        "[##############################] 2/2 keys\n")
    with ra.RegistrationAuthority.open(directory, ra.Unlock(key_file=key_file)) as authority:
        identity = authority.repo.identity(_open(out).identity_id)
    assert (identity.name, identity.licence, identity.vehicle_id) == ("Grid Co", "OP-77", "")
    # the RA refuses an identity it never registered: the batch stores nothing
    out = str(tmp_path / "w")
    assert provision("--ra-dir", directory, "--keys", "0")[0] == 0  # a wallet, no identity yet
    code, err = provision("--identity", "00" * 16, "--keys", "5", "--ra-dir", directory, "--key-file", key_file)
    assert code == 1 and "refused" in err and "not registered" in err, err
    assert _open(out).keystore.available() == 0 and _open(out).check()["ok"]
    # a different device key cannot open the wallet
    with open(os.path.join(out, "device.key"), "r+b") as f:
        f.write(bytes(32))
    code, err = provision("--keys", "1", "--ra-dir", directory, "--key-file", key_file)
    assert code == 2 and len(err.splitlines()) == 1


def test_a_board_config_is_checked_first_and_gives_the_role_and_name(tmp_path, ra_dir, capsys):
    directory, key_file = ra_dir
    out = tmp_path / "pi"
    bad = board_configs.write(tmp_path / "bad.json", "rpi", relay={"pin": 27}, broker="mqtt://CHANGE-ME")
    code = cli.main(["provision", "--config", bad, "--out", str(out), "--ra-dir", directory])
    assert code == 2 and capsys.readouterr().err == (
        "plugpay provision: error: config %s: broker: still holds the example's CHANGE-ME: put in the real value; "
        "led.pin: GPIO 27 is taken by relay.pin: relay, LED and meter each need pins of their own\n" % bad)
    assert not out.exists()
    good = board_configs.write(tmp_path / "good.json", "rpi")
    assert cli.main(["provision", "--role", "vehicle", "--config", good, "--out", str(out), "--ra-dir", directory]) == 2
    assert capsys.readouterr().err == ("plugpay provision: error: --role vehicle, but the config %s is for a charger\n"
                                       % good)
    assert cli.main(["provision", "--config", good, "--out", str(out), "--ra-dir", directory, "--keys", "0"]) == 0
    assert json.loads((out / "board.json").read_text()) == {"role": "charger", "name": "charger-pi-1"}
