"""A real board with the simulated board's API, so ``firmware.session`` drives it unchanged.

``HardwareBoard`` is portable (MicroPython and CPython): it takes a relay, a meter line and
an optional LED as plain objects, and the Raspberry Pi profile (``boards/rpi/board.py``)
builds it too. ``esp32_board(profile)`` builds one from ``machine.Pin`` and
``machine.UART``. No hardware is attached where the project is built and tested: the
``machine`` parts are exercised on real boards only; the pure parts run under the real
MicroPython in CI (tests/device/test_esp32_board_mp.py) and under CPython over a
pseudo-terminal (tests/test_rpi_board.py).

Differences from ``boards.sim`` that the session never sees: energy is what the meter
reports (cumulative Wh over the line protocol of ``meter_line``), read at most every
``poll_ms`` while the relay is closed; an energy limit opens the relay at the first reading
at or past it, so a producer may overshoot by power x ``poll_ms``, which its exposure
shows. A meter that stops answering opens the relay before the error goes up: no energy
flows that nobody measures.
"""
from plugpay.boards.sim.power import Contactor, Meter
from plugpay.protocol.port import ticks_diff, ticks_ms, urandom

from .meter_line import LineMeter


class TicksClock:
    """Real milliseconds since the board started, from wrapping ``ticks_ms`` added up call by
    call in integers (an ESP32's floats are single precision). ``scale`` is 1: real time."""

    scale = 1

    def __init__(self):
        self._last = ticks_ms()
        self._now = 0

    def now_ms(self):
        t = ticks_ms()
        self._now += ticks_diff(t, self._last)
        self._last = t
        return self._now


class RelayContactor(Contactor):
    """The contactor behind a relay: ``switch(on)`` drives the output; the pin moves first,
    so a failing pin leaves the recorded state true to the hardware."""

    def __init__(self, switch, led=None):
        Contactor.__init__(self)
        self.switch = switch
        self.led = led
        switch(False)

    def close(self, now_ms):
        if not self.closed:
            self.switch(True)
            if self.led is not None:
                self.led(True)
        Contactor.close(self, now_ms)

    def open(self, now_ms):
        if self.closed:
            self.switch(False)
            if self.led is not None:
                self.led(False)
        Contactor.open(self, now_ms)


class SigningMeter(Meter):
    """The board's reading chain (``MeterReading`` signed with the meter key, as the link
    checks it) over the Wh the board's meter line shows for this session."""

    def __init__(self, key, board):
        Meter.__init__(self, key)
        self.board = board

    @property
    def session_wh(self):
        return self.board.measured_wh


class HardwareBoard:
    """The ``SimBoard`` API over a relay and a serial meter. ``meter_key`` signs readings
    (a fresh one per board start unless given: the peer learns it in the link's setup)."""

    def __init__(self, name, relay, line_meter, power_w, poll_ms=1000, led=None, clock=None, meter_key=None):
        self.name = name
        self.power_w = power_w
        self.poll_ms = poll_ms
        self.clock = clock or TicksClock()
        self.contactor = RelayContactor(relay, led)
        self.line = line_meter
        self.base_wh = None  # the meter's register when the session started
        self.now_wh = None
        self.limit_wh = None
        self.read_ms = None  # when the meter was last read (board clock)
        self.meter = SigningMeter(meter_key or urandom(32), self)

    def __repr__(self):
        return "HardwareBoard(%s)" % self.name

    def update(self, now_ms, force=False):
        """Read the meter (at most every ``poll_ms`` unless ``force``); open the relay at the
        energy limit, or when the meter fails."""
        if not force and self.read_ms is not None and now_ms - self.read_ms < self.poll_ms:
            return
        try:
            wh = self.line.read_wh()
        except Exception:
            self.contactor.open(now_ms)
            raise
        self.read_ms = now_ms
        if self.base_wh is None:
            self.base_wh = wh
        self.now_wh = wh
        if self.limit_wh is not None and self.measured_wh >= self.limit_wh:
            self.contactor.open(now_ms)

    def start_delivery(self, now_ms, limit_wh=None):
        self.update(now_ms, True)
        self.limit_wh = limit_wh
        if limit_wh is None or self.measured_wh < limit_wh:
            self.contactor.close(now_ms)

    def stop_delivery(self, now_ms):
        self.contactor.open(now_ms)
        self.update(now_ms, True)

    @property
    def measured_wh(self):
        """Wh through the meter this session (as last read), whichever way they flowed."""
        if self.base_wh is None:
            return 0
        return self.now_wh - self.base_wh

    def time_to_reach_ms(self, target_wh):
        """When to look again: 0 once the meter shows ``target_wh``, None while the relay is
        open, else the time at full power, but never more than ``poll_ms``."""
        self.update(self.clock.now_ms())
        short = target_wh - self.measured_wh
        if short <= 0:
            return 0
        if not self.contactor.closed:
            return None
        return max(1, min(self.poll_ms, short * 3600000 // self.power_w))

    def reset_session(self, producing):
        """The meter's register now is the session's zero (it counts either way, so
        ``producing`` changes nothing here)."""
        self.limit_wh = None
        self.base_wh = None
        self.update(self.clock.now_ms(), True)


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
