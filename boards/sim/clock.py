"""Clocks for simulated boards, in integer milliseconds.

A board's clock has ``now_ms()`` and ``scale``: how many of its ms pass in one ms of the
time the session runs in (``firmware.board``). ``ScaledClock`` runs faster than real time
(a 20 kWh session in seconds); ``ManualClock`` moves only when told, so tests are
deterministic and never sleep; ``ScaledView`` is a manual clock seen ``scale`` times
faster, so energy flows quickly while the link's timeouts run on the manual clock.
"""
from plugpay.protocol.port import ticks_diff, ticks_us

try:
    from time import sleep_us as _sleep_us  # MicroPython
except ImportError:  # CPython
    from time import sleep as _sleep

    def _sleep_us(us):
        _sleep(us / 1000000)


class ScaledClock:
    """Simulated time = real monotonic time x ``scale``. Real microseconds are added up call
    by call (``ticks_diff`` of neighbouring reads), so MicroPython's wrapping ticks never
    make time jump as long as the clock is read at least every few minutes."""

    def __init__(self, scale=1.0):
        if not scale > 0:
            raise ValueError("clock scale must be positive, got %r" % (scale,))
        self.scale = scale
        self._last_us = ticks_us()
        self._real_us = 0
        self.lock = None  # set when two threads read one clock (two boards on one cable)

    def now_ms(self):
        if self.lock is None:
            return self._now_ms()
        with self.lock:
            return self._now_ms()

    def _now_ms(self):
        t = ticks_us()
        self._real_us += ticks_diff(t, self._last_us)
        self._last_us = t
        return int(self._real_us * self.scale) // 1000

    def sleep_ms(self, ms):
        """Sleep ``ms`` simulated milliseconds (``ms / scale`` real ones, rounded up, so
        ``now_ms`` has moved on by at least ``ms`` when it returns)."""
        if ms > 0:
            _sleep_us(-int(-ms * 1000 // self.scale))


class ManualClock:
    """Time that moves only by ``advance``; ``sleep_ms`` advances it at once."""

    scale = 1

    def __init__(self, start=0):
        self._now = start

    def now_ms(self):
        return self._now

    def advance(self, ms):
        if ms < 0:
            raise ValueError("a clock cannot go back (advance by %d ms)" % ms)
        self._now += ms

    def sleep_ms(self, ms):
        self.advance(ms)


class ScaledView:
    """``clock`` (a ``ManualClock``, the link's) seen ``scale`` times faster: a board's time."""

    def __init__(self, clock, scale):
        self.clock = clock
        self.scale = scale

    def now_ms(self):
        return self.clock.now_ms() * self.scale
