"""A real board: ``firmware.board.Board`` over a relay and a serial meter, for the ESP32 and
the Raspberry Pi.

``HardwareBoard`` is portable (MicroPython and CPython): it takes a relay, a meter line and
an optional LED as plain objects, which each board's folder builds from its pins and ports
(``boards/esp32/board.py``: ``machine.Pin`` and ``machine.UART``; ``boards/rpi/board.py``:
gpiozero and pyserial). No hardware is attached where the project is built and tested: the
pin and port glue is exercised on real boards only; this module runs under the real
MicroPython in CI (tests/device/test_esp32_board_mp.py) and under CPython over a
pseudo-terminal (tests/test_rpi_board.py).

Differences from ``boards.sim`` that the session never sees: energy is what the meter
reports (cumulative Wh over the line protocol of ``meter_line``), read at most every
``poll_ms`` while the relay is closed; an energy limit opens the relay at the first reading
at or past it, so a producer may overshoot by power x ``poll_ms``, which its exposure
shows. A meter that stops answering opens the relay before the error goes up: no energy
flows that nobody measures.
"""
from plugpay.firmware.board import Board, Contactor
from plugpay.firmware.meter import Meter
from plugpay.protocol.port import ticks_diff, ticks_ms, urandom


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


class HardwareBoard(Board):
    """A ``Board`` over a relay (``relay(on)``) and a serial meter (``line_meter``, a
    ``meter_line.LineMeter``). ``meter_key`` signs readings (a fresh one per board start
    unless given: the peer learns it in the link's setup)."""

    def __init__(self, name, relay, line_meter, power_w, poll_ms=1000, led=None, clock=None, meter_key=None):
        Board.__init__(self, name, clock or TicksClock(), contactor=RelayContactor(relay, led))
        self.meter = Meter(meter_key or urandom(32), self)
        self.power_w = power_w
        self.poll_ms = poll_ms
        self.line = line_meter
        self.base_wh = None  # the meter's register when the session started
        self.now_wh = None
        self.limit_wh = None
        self.read_ms = None  # when the meter was last read (board clock)

    def __repr__(self):
        return "HardwareBoard(%s)" % self.name

    def update(self, force=False):
        """Read the meter (at most every ``poll_ms`` unless ``force``); open the relay at the
        energy limit, or when the meter fails."""
        now_ms = self.clock.now_ms()
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

    def start_delivery(self, limit_wh=None):
        self.update(True)
        self.limit_wh = limit_wh
        if limit_wh is None or self.measured_wh < limit_wh:
            self.contactor.close(self.clock.now_ms())

    def stop_delivery(self):
        self.contactor.open(self.clock.now_ms())
        self.update(True)

    @property
    def measured_wh(self):
        """Wh through the meter this session (as last read), whichever way they flowed."""
        if self.base_wh is None:
            return 0
        return self.now_wh - self.base_wh

    def time_to_reach_ms(self, target_wh):
        """When to look again: 0 once the meter shows ``target_wh``, None while the relay is
        open, else the time at full power, but never more than ``poll_ms``."""
        self.update()
        short = target_wh - self.measured_wh
        if short <= 0:
            return 0
        if not self.contactor.closed:
            return None
        return self.caller_ms(max(1, min(self.poll_ms, short * 3600000 // self.power_w)))

    def reset_session(self, producing):
        """The meter's register now is the session's zero (it counts either way, so
        ``producing`` changes nothing here)."""
        self.limit_wh = None
        self.base_wh = None
        self.update(True)
