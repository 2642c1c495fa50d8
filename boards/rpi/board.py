"""A Raspberry Pi board: ``HardwareBoard`` (boards/common/hardware.py, portable) with the
relay and LED on GPIO through gpiozero and the meter on a serial port through pyserial,
speaking the line protocol of ``boards/common/meter_line.py``.

gpiozero and pyserial are optional (``pip install 'plugpay[boards]'``). On a machine without
GPIO (a laptop, CI) opening the relay raises ``GpioUnavailable`` with the reason, so a
caller can say so and stop cleanly. No Pi is attached where the project is tested: the
serial meter is tested over a pseudo-terminal pair (tests/test_rpi_board.py), the relay only
on a Pi.
"""
from plugpay.boards.common.hardware import HardwareBoard
from plugpay.boards.common.meter_line import LineMeter
from plugpay.protocol.port import ticks_diff, ticks_ms

READ_WAIT_S = 0.05  # ``read_some`` waits at most this long for the first byte
INSTALL_HINT = "pip install 'plugpay[boards]'"


class GpioUnavailable(RuntimeError):
    """No GPIO here (or gpiozero is missing): the text says which and what to do."""


class SerialPort:
    """A pyserial port as ``LineMeter`` wants it."""

    def __init__(self, serial_port):
        self.serial = serial_port

    def write(self, data):
        self.serial.write(data)

    def read_some(self):
        first = self.serial.read(1)  # waits up to the port's timeout
        if not first:
            return b""
        return first + self.serial.read(self.serial.in_waiting)


def open_meter(spec):
    """``LineMeter`` on the serial port of the profile's ``meter`` (``port``, ``baud``)."""
    try:
        import serial
    except ImportError:
        raise RuntimeError("pyserial is not installed: " + INSTALL_HINT)
    try:
        port = serial.Serial(spec["port"], spec["baud"], timeout=READ_WAIT_S)
    except (serial.SerialException, OSError) as e:
        raise RuntimeError("cannot open the meter's serial port %s: %s" % (spec["port"], e))
    return LineMeter(SerialPort(port), (ticks_ms, ticks_diff), spec["timeout_ms"])


def open_output(spec, what):
    """A setter ``on -> None`` for a GPIO output (``pin`` BCM, ``active_high``), off at start."""
    try:
        from gpiozero import OutputDevice
        from gpiozero.exc import GPIOZeroError
    except ImportError:
        raise GpioUnavailable("gpiozero is not installed, so the %s cannot be switched: %s" % (what, INSTALL_HINT))
    try:
        device = OutputDevice(spec["pin"], active_high=spec["active_high"], initial_value=False)
    except (GPIOZeroError, OSError, RuntimeError) as e:
        raise GpioUnavailable("no GPIO for the %s on BCM pin %d on this machine (%s): run this on a Raspberry "
                              "Pi, in a user of the gpio group" % (what, spec["pin"], e))

    def set_output(on):
        device.value = bool(on)

    return set_output


def rpi_board(profile):
    """A ``HardwareBoard`` from a checked rpi profile (``boards.common.profile.parse(text,
    "rpi")``). The relay is opened first, so a machine without GPIO fails before the meter
    port is touched."""
    relay = open_output(profile["relay"], "relay")
    led = None if profile["led"] is None else open_output(profile["led"], "status LED")
    return HardwareBoard(profile["name"], relay, open_meter(profile["meter"]), profile["power_w"],
                         profile["poll_ms"], led)
