"""The ESP32 board's pure parts under the real MicroPython: the config checker, the meter
line protocol and the board's relay and energy logic over a meter that answers in memory.
No ESP32 is attached here: ``machine`` is not imported by these parts (only
``board.esp32_board`` and ``startup`` touch it, on a board)."""
from plugpay.boards.common import meter_line as ML
from plugpay.boards.common import profile
from plugpay.boards.common.hardware import HardwareBoard
from plugpay.protocol.port import ticks_diff, ticks_ms

CONFIG = """{"board": "esp32", "name": "c1", "role": "charger", "broker": "mqtt://10.0.0.2",
 "wifi": {"ssid": "home", "password": "pw"}, "power_w": 11000,
 "relay": {"pin": 26}, "led": null,
 "meter": {"uart": 2, "tx": 17, "rx": 16, "baud": 9600},
 "wallet": "/wallet", "device_key": "/wallet/device.key",
 "session": {"region": "AT-5020", "position": "-47.8,13.040001", "scenario": "g2v", "mode": "channel",
             "installments": 10, "price": 300, "energy_wh": 2000, "window_min": 60}}"""


def _raises(fn, text):
    try:
        fn()
    except (ML.MeterLineError, profile.ConfigError) as e:
        assert text in str(e), str(e)
        return
    raise AssertionError("no error containing %r" % text)


def test_config_parses_with_defaults():
    p = profile.parse(CONFIG, "esp32")
    assert p["broker_address"] == ("10.0.0.2", 1883)
    assert p["relay"] == {"pin": 26, "active_high": True} and p["led"] is None
    assert p["meter"]["timeout_ms"] == 500 and p["poll_ms"] == 1000
    assert p["session"]["position_e6"] == (-47800000, 13040001)
    assert profile.placeholders(p) == []


def test_config_errors_name_the_field():
    _raises(lambda: profile.parse("{", "esp32"), "config is not valid JSON")
    _raises(lambda: profile.parse(CONFIG.replace('"pin": 26', '"pin": 35'), "esp32"), "config relay.pin")
    _raises(lambda: profile.parse(CONFIG.replace('"baud": 9600', '"baud": true'), "esp32"), "config meter.baud")
    _raises(lambda: profile.parse(CONFIG.replace('"uart": 2', '"uart": 0'), "esp32"), "config meter.uart")
    _raises(lambda: profile.parse(CONFIG.replace('"wifi"', '"wlan"'), "esp32"), "config wifi: missing")
    _raises(lambda: profile.parse(CONFIG.replace("mqtt://10.0.0.2", "mqtt://h:99999"), "esp32"), "port must be")
    _raises(lambda: profile.parse(CONFIG.replace("13.040001", "13.0400011"), "esp32"), "session.position")
    _raises(lambda: profile.parse(CONFIG, "stm32"), "unknown board")


def test_meter_lines_parse_and_bad_ones_are_named():
    assert ML.frame(b"WH,12345") == b"$WH,12345*" + (b"%02X" % ML.checksum(b"WH,12345")) + b"\r\n"
    assert ML.parse_line(ML.frame(b"WH,0012345")[:-2]) == 12345
    assert ML.READ_REQUEST == b"$RD*16\r\n"
    good = ML.frame(b"WH,77")[:-2]
    _raises(lambda: ML.parse_line(good[:-1] + b"0"), "checksum")
    _raises(lambda: ML.parse_line(b"WH,77*00"), "not framed")
    _raises(lambda: ML.parse_line(good[:-2] + b"ZZ"), "two hex digits")
    _raises(lambda: ML.parse_line(ML.frame(b"WH,-5")[:-2]), "decimal digits")
    _raises(lambda: ML.parse_line(ML.frame(b"WH,1234567890123")[:-2]), "decimal digits")
    _raises(lambda: ML.parse_line(ML.frame(b"ER,CT01")[:-2]), "the meter reports error CT01")
    _raises(lambda: ML.parse_line(ML.frame(b"XX,1")[:-2]), "not $WH")
    _raises(lambda: ML.parse_line(b"$" + b"1" * 60), "too long")


def test_line_buffer_splits_any_chunking_and_drops_overlong():
    stream = ML.frame(b"WH,1") + b"noise" * 20 + b"\n" + ML.frame(b"WH,2")
    for size in (1, 3, 7, len(stream)):
        buf = ML.LineBuffer()
        lines = []
        for i in range(0, len(stream), size):
            lines.extend(buf.feed(stream[i:i + size]))
        assert [ML.parse_line(x) for x in lines] == [1, 2], (size, lines)
        assert buf.dropped == 1


class MemoryMeter:
    """A meter in memory speaking the line protocol: answers each request with its register."""

    def __init__(self):
        self.wh = 1000
        self.pending = b""
        self.junk = b""

    def write(self, data):
        assert data == ML.READ_REQUEST
        self.pending += self.junk + ML.frame(b"WH,%d" % self.wh)
        self.junk = b""

    def read_some(self):
        data, self.pending = self.pending, b""
        return data


class Clock:
    scale = 1

    def __init__(self):
        self.ms = 0

    def now_ms(self):
        return self.ms


def test_board_switches_the_relay_at_the_limit_and_counts_from_the_session_start():
    meter, clock, relay = MemoryMeter(), Clock(), []
    line = ML.LineMeter(meter, (ticks_ms, ticks_diff), 200)
    board = HardwareBoard("c1", relay.append, line, 11000, poll_ms=1000, clock=clock, meter_key=bytes(31) + b"\x07")
    board.reset_session(True)
    assert board.measured_wh == 0 and relay == [False]
    board.start_delivery(50)
    assert board.contactor.closed and relay[-1] is True
    meter.wh = 1030
    clock.ms = 500
    assert board.time_to_reach_ms(50) == 1000 and board.measured_wh == 0  # polled at most every poll_ms
    clock.ms = 1000
    meter.junk = b"\xff\xfegarbage\r\n"
    board.update()
    assert board.measured_wh == 30 and line.bad_lines == 1 and board.contactor.closed
    meter.wh = 1052
    clock.ms = 2000
    board.update()
    assert board.measured_wh == 52 and not board.contactor.closed and relay[-1] is False
    board.meter.start(bytes(16), 300)
    reading = board.meter.read(1, 1700000000)
    assert reading.cumulative_wh == 52 and reading.index == 1


def test_a_meter_going_backwards_or_silent_opens_the_relay():
    meter, clock, relay = MemoryMeter(), Clock(), []
    board = HardwareBoard("c1", relay.append, ML.LineMeter(meter, (ticks_ms, ticks_diff), 50), 11000, clock=clock,
                          meter_key=bytes(31) + b"\x07")
    board.reset_session(True)
    board.start_delivery()
    meter.wh = 900
    clock.ms = 5000
    _raises(lambda: board.update(), "went backwards from 1000 to 900")
    assert not board.contactor.closed and relay[-1] is False
