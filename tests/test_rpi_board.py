"""The Raspberry Pi board under CPython: the meter over a real serial line (a pseudo-terminal
pair, pyserial on one end, a meter speaking the line protocol on the other) and a machine
without GPIO, which must say so and stop cleanly."""
import json
import ssl
import os
import threading
import tty

import pytest

from plugpay.boards.common import meter_line as ML
from plugpay.boards.common.hardware import HardwareBoard
from plugpay.boards.common.profile import ConfigError, parse
from plugpay.boards.rpi import board as rpi
from plugpay.boards.rpi.main import main as board_main
from plugpay.boards.rpi.main import endpoint as rpi_endpoint
from plugpay.firmware.role import Plan
from plugpay.host import broker_pki

ROOT = rpi.__file__.rsplit("/", 3)[0]


class PtyMeter:
    """A meter on the master end of a pty: answers each ``$RD`` with its register, after
    ``junk`` (garbage a noisy line adds) when there is some."""

    def __init__(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self.slave = slave  # kept open so the line stays up until close()
        self.wh = 5000
        self.junk = b""
        self.silent = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        buf = b""
        while True:
            try:
                data = os.read(self.master, 64)
            except OSError:
                return
            if not data:
                return
            buf += data
            while ML.READ_REQUEST in buf:
                buf = buf.split(ML.READ_REQUEST, 1)[1]
                if not self.silent:
                    os.write(self.master, self.junk + ML.frame(b"WH,%d" % self.wh))
                    self.junk = b""

    def close(self):
        os.close(self.slave)
        os.close(self.master)


@pytest.fixture
def meter():
    m = PtyMeter()
    yield m
    m.close()


def _profile(port):
    data = json.load(open(os.path.join(ROOT, "boards/rpi/config.json")))
    data["meter"].update(port=port, timeout_ms=300)
    data["broker"] = "mqtt://127.0.0.1:1883"
    return parse(json.dumps(data), "rpi")


def test_serial_meter_reads_through_garbage(meter):
    line = rpi.open_meter(_profile(meter.path)["meter"])
    assert line.read_wh() == 5000
    meter.junk = b"\x00\xff$WH,9*00\r\n" + b"x" * 100 + b"\n"
    meter.wh = 5042
    assert line.read_wh() == 5042
    assert line.bad_lines == 1 and line.buffer.dropped == 1


def test_board_over_the_pty_delivers_to_its_limit(meter):
    relay = []
    board = HardwareBoard("pi", relay.append, rpi.open_meter(_profile(meter.path)["meter"]), 11000, poll_ms=50)
    board.reset_session(True)
    board.start_delivery(20)
    assert relay == [False, True]
    meter.wh = 5025
    board.update(True)
    assert board.measured_wh == 25 and relay[-1] is False and not board.contactor.closed


def test_a_silent_meter_is_a_clear_error_and_opens_the_relay(meter):
    relay = []
    board = HardwareBoard("pi", relay.append, rpi.open_meter(_profile(meter.path)["meter"]), 11000)
    board.reset_session(True)
    board.start_delivery()
    meter.silent = True
    with pytest.raises(ML.MeterLineError, match="no valid reading from the meter within 300 ms"):
        board.update(True)
    assert relay[-1] is False and not board.contactor.closed


def test_missing_serial_port_is_named():
    with pytest.raises(RuntimeError, match="cannot open the meter's serial port /dev/plugpay-none"):
        rpi.open_meter({"port": "/dev/plugpay-none", "baud": 9600, "timeout_ms": 100})


def test_no_gpio_here_stops_cleanly(meter, tmp_path, capsys):
    """This machine has no GPIO (and may lack gpiozero): the relay refuses with the reason,
    and the board's service exits 2 (systemd does not restart it) before touching the meter."""
    with pytest.raises(rpi.GpioUnavailable, match="gpiozero is not installed|no GPIO for the relay"):
        rpi.rpi_board(_profile(meter.path))
    config = tmp_path / "board.json"
    config.write_text(json.dumps(json.load(open(os.path.join(ROOT, "boards/rpi/config.json")))))
    assert board_main(["--config", str(config)]) == 2
    assert "plugpay-board: " in capsys.readouterr().err


def test_the_plan_comes_from_the_config(meter):
    plan = Plan.from_profile(_profile(meter.path))
    assert (plan.role, plan.region, plan.producer, plan.initiator) == ("charger", "AT-5020", True, False)
    assert plan.position == (47800000, 13040000) and plan.installments == 100


def test_a_pi_reaches_a_tls_broker_with_the_deployment_ca(tmp_path):
    data = json.load(open(os.path.join(ROOT, "boards/rpi/config.json")))
    data.update(broker="mqtts://broker.example", broker_ca="/etc/plugpay/broker-ca.crt")
    profile = parse(json.dumps(data), "rpi")
    assert profile["broker_address"] == ("broker.example", 8883)
    with pytest.raises(ValueError, match="CA file /etc/plugpay/broker-ca.crt: No such file"):
        rpi_endpoint(profile)  # the CA is read before anything connects: a missing one is named
    _, ca_cert = broker_pki.new_ca()
    (tmp_path / "ca.crt").write_bytes(broker_pki.pem_cert(ca_cert))
    profile["broker_ca"] = str(tmp_path / "ca.crt")
    broker = rpi_endpoint(profile)
    assert (broker.host, broker.port) == ("broker.example", 8883)
    assert broker.tls.verify_mode == ssl.CERT_REQUIRED and broker.tls.check_hostname
    data.update(broker="mqtt://broker.example")
    with pytest.raises(ConfigError, match="config broker_ca: only for an mqtts:// broker"):
        parse(json.dumps(data), "rpi")
