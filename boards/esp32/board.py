"""The ESP32's glue: a ``HardwareBoard`` (boards/common/hardware.py) on the pins and UART
its profile names, through ``machine.Pin`` and ``machine.UART``. Runs only on a board: no
ESP32 is attached where the project is tested (mpy-cross compiles it in CI)."""
from plugpay.boards.common.hardware import HardwareBoard
from plugpay.boards.common.meter_line import LineMeter
from plugpay.protocol.port import ticks_diff, ticks_ms


class UartPort:
    """``machine.UART`` as ``LineMeter`` wants it (``read`` gives None when nothing came)."""

    def __init__(self, uart):
        self.uart = uart

    def write(self, data):
        self.uart.write(data)

    def read_some(self):
        return self.uart.read()


def _output(machine, spec):
    """A setter for an output pin honouring ``active_high``; starts inactive."""
    active = 1 if spec["active_high"] else 0
    pin = machine.Pin(spec["pin"], machine.Pin.OUT, value=1 - active)

    def set_output(on):
        pin.value(active if on else 1 - active)

    return set_output


def esp32_board(profile):
    """A ``HardwareBoard`` on the ESP32's pins and UART named by ``profile`` (``profile.parse``)."""
    import machine

    m = profile["meter"]
    uart = machine.UART(m["uart"], baudrate=m["baud"], tx=m["tx"], rx=m["rx"], timeout=50)
    line = LineMeter(UartPort(uart), (ticks_ms, ticks_diff), m["timeout_ms"])
    led = None if profile["led"] is None else _output(machine, profile["led"])
    return HardwareBoard(profile["name"], _output(machine, profile["relay"]), line, profile["power_w"],
                         profile["poll_ms"], led)
