"""``plugpay flash``: the steps a dry run lists, the real mpy-cross compile, bad inputs."""
import argparse
import json

import pytest

from plugpay.boards.common import profile
from plugpay.tools import flash_cli

ROOT = flash_cli.ROOT


def _flash(*argv):
    p = argparse.ArgumentParser()
    flash_cli.add_parser(p.add_subparsers())
    args = p.parse_args(["flash", *argv])
    return args.func(args)


def _commands(out):
    return [line[2:] for line in out.splitlines() if line.startswith("$ ")]


def test_esp32_dry_run_lists_esptool_then_mpremote(capsys, tmp_path):
    image = tmp_path / "ESP32_GENERIC.bin"
    image.write_bytes(b"\xe9" + bytes(100))
    assert _flash("--board", "esp32", "--port", "/dev/ttyUSB9", "--firmware", str(image), "--dry-run") == 0
    steps = _commands(capsys.readouterr().out)
    assert "-m esptool --chip esp32 --port /dev/ttyUSB9 erase_flash" in steps[0]
    assert steps[1].endswith("write_flash -z 0x1000 " + str(image))
    assert "mpremote connect /dev/ttyUSB9 exec" in steps[2] and "/lib/plugpay" in steps[2]
    copies = [s for s in steps if " fs cp " in s]
    assert [c.split(" fs cp ")[1].rstrip(")") for c in copies] == [
        "-r lib :", "boot.py :boot.py", "main.py :main.py", "config.json :config.json"]
    assert steps[-1].endswith("mpremote connect /dev/ttyUSB9 reset")


def test_esp32_offset_follows_the_chip(capsys, tmp_path):
    image = tmp_path / "s3.bin"
    image.write_bytes(bytes(16))
    assert _flash("--board", "esp32", "--chip", "esp32s3", "--port", "/dev/ttyACM0", "--firmware", str(image),
                  "--dry-run") == 0
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


def test_rpi_dry_run_installs_over_ssh(capsys):
    assert _flash("--board", "rpi", "--host", "pi.local", "--user", "ev", "--dry-run") == 0
    steps = _commands(capsys.readouterr().out)
    assert steps[1].startswith("rsync -az --delete") and steps[1].endswith("ev@pi.local:/opt/plugpay/src/")
    assert any("/opt/plugpay/venv/bin/pip install" in s and "[boards]" in s for s in steps)
    assert any(s.startswith("scp ") and s.endswith("boards/rpi/config.json ev@pi.local:/tmp/plugpay-board.json")
               for s in steps)
    assert "systemctl enable --now plugpay-board" in steps[-1]


@pytest.mark.parametrize("argv, message", [
    (["--board", "stm32", "--port", "/dev/ttyUSB0"], "unknown board 'stm32'"),
    (["--board", "esp32"], "--port is required"),
    (["--board", "rpi"], "--host is required"),
    (["--board", "esp32", "--port", "/dev/plugpay-no-such-port"], "serial port /dev/plugpay-no-such-port does not exist"),
    (["--board", "esp32", "--port", "/dev/null", "--firmware", "/no/such.bin", "--dry-run"], "/no/such.bin does not exist"),
])
def test_bad_inputs_are_named(capsys, argv, message):
    assert _flash(*argv) == 2
    assert message in capsys.readouterr().err


def _config(tmp_path, edit):
    data = json.loads((ROOT / "boards/esp32/config.json").read_text())
    edit(data)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("relay"), "config relay: missing"),
    (lambda d: d["meter"].pop("baud"), "config meter.baud: missing"),
    (lambda d: d["relay"].update(pin=36), "config relay.pin: expected an integer 0..33"),
    (lambda d: d.update(broker="http://x"), "config broker: expected mqtt://HOST:PORT"),
    (lambda d: d.update(broker="mqtts://x:0"), "config broker: port must be 1..65535"),
    (lambda d: d.update(broker_ca="/ca.crt"), "config broker_ca: only for an mqtts:// broker"),
    (lambda d: d["session"].update(position="47.8"), "config session.position"),
    (lambda d: d.update(board="rpi"), "config board: this file is for 'rpi'"),
])
def test_invalid_config_is_refused_before_any_step(capsys, tmp_path, edit, message):
    path = _config(tmp_path, edit)
    assert _flash("--board", "esp32", "--port", "/dev/ttyUSB0", "--config", str(path), "--dry-run") == 2
    captured = capsys.readouterr()
    assert message in captured.err and "$ " not in captured.out


def test_placeholders_and_missing_tools_stop_a_real_run(capsys, tmp_path, monkeypatch):
    assert _flash("--board", "esp32", "--port", "/dev/null") == 2
    assert "still holds CHANGE-ME in wifi.ssid, wifi.password, broker" in capsys.readouterr().err
    path = _config(tmp_path, lambda d: d.update(wifi={"ssid": "home", "password": "pw"}, broker="mqtt://10.0.0.2"))
    monkeypatch.setattr(flash_cli.util, "find_spec", lambda name: None)  # as on a machine without the extra
    assert _flash("--board", "esp32", "--port", "/dev/null", "--config", str(path)) == 2
    assert "mpremote is not installed: pip install 'plugpay[boards]'" in capsys.readouterr().err


def test_example_configs_parse():
    esp = profile.load(str(ROOT / "boards/esp32/config.json"), "esp32")
    assert esp["meter"]["uart"] == 2 and esp["session"]["position_e6"] == (47800000, 13040000)
    pi = profile.load(str(ROOT / "boards/rpi/config.json"), "rpi")
    assert pi["meter"]["port"] == "/dev/ttyUSB0" and pi["broker_address"] == ("CHANGE-ME", 1883)
