"""One side's simulated hardware: contactor, optional battery and meter, and the cable.

A ``firmware.board.Board`` in simulated time (its ``clock``: see ``clock.py``). Energy is
integrated lazily and exactly: nothing happens between calls, and each look at the board
adds power x elapsed time in integer mJ for the interval since the last one. That is exact
because power only changes when a contactor switches, and every switch
(``start_delivery``, ``stop_delivery``) integrates up to its own time first. So a whole
session costs a few integer operations per installment, whatever the time scale.
"""
from plugpay.firmware.board import Board

from .power import check_ppm, mj_to_register, registered_wh


class Cable:
    """What joins a producing board to a consuming one; a missing end (None) is the grid,
    which gives or takes any energy. Energy flows only while every board on it has its
    contactor closed, at the lowest power any end allows, until a battery is empty or full.
    Both ends share the cable, so the energy is integrated once for both."""

    def __init__(self, producer, consumer):
        self.producer = producer
        self.consumer = consumer
        self.at_ms = None  # integrated up to here; None before the first update
        self.lock = None  # a lock the two ends' threads share, when they run in two (the demo)

    def power_w(self):
        p, c = self.producer, self.consumer
        w = None
        for board in (p, c):
            if board is None:
                continue
            if not board.contactor.closed:
                return 0
            w = board.power_w if w is None else min(w, board.power_w)
        if p is not None and p.battery is not None:
            w = min(w, p.battery.max_discharge_w)
        if c is not None and c.battery is not None:
            w = min(w, c.battery.max_charge_w)
        return w

    def reachable_mj(self):
        """The most that can still flow before a battery or either end's energy limit
        stops it; None: no bound."""
        p, c = self.producer, self.consumer
        cap = None
        for board in (p, c):
            if board is not None and board.limit_mj is not None:
                left = max(0, board.limit_mj - board.flowed_mj)
                cap = left if cap is None else min(cap, left)
        if p is not None and p.battery is not None:
            cap = p.battery.stored_mj if cap is None else min(cap, p.battery.stored_mj)
        if c is not None and c.battery is not None:
            room = c.battery.room_mj()
            cap = room if cap is None else min(cap, room)
        return cap

    def update(self, now_ms):
        """Let energy flow up to ``now_ms``. A time the cable is already past adds nothing
        (the other end may have integrated it a moment later)."""
        if self.lock is None:
            return self._update(now_ms)
        with self.lock:
            self._update(now_ms)

    def _update(self, now_ms):
        if self.at_ms is not None and now_ms <= self.at_ms:
            return
        if self.at_ms is not None:
            mj = self.power_w() * (now_ms - self.at_ms)
            cap = self.reachable_mj()
            if cap is not None and mj > cap:
                mj = cap
            if mj:
                self._flow(mj)
        self.at_ms = now_ms

    def _flow(self, mj):
        p, c = self.producer, self.consumer
        if p is not None and p.battery is not None:
            p.battery.supply_mj(mj)
        if c is not None and c.battery is not None:
            c.battery.absorb_mj(mj)
        for board in (p, c):
            if board is not None:
                board.flowed_mj += mj
                if board.meter is not None:
                    board.meter.count(mj)


class SimBoard(Board):
    """One side's hardware. ``power_w`` is the most this side delivers or takes; a ``meter``
    signs readings (the charger's, or the responding vehicle's in V2V) and is also how this
    side measures; a board without one measures with its own instrument, off by
    ``measure_error_ppm``. Standing alone (its peer is another process), a board's cable
    leads to the grid, which gives what it consumes or takes what it produces
    (``reset_session`` says which) whenever its contactor is closed and its limit allows;
    ``connect`` puts two boards on one cable (V2V, or a vehicle and a charger in one
    process) so each measures what the other's end lets through."""

    def __init__(self, name, clock, power_w, battery=None, meter=None, measure_error_ppm=0):
        if not isinstance(power_w, int) or power_w < 0:
            raise ValueError("board %s: power must be a non-negative integer of watts, got %r" % (name, power_w))
        Board.__init__(self, name, clock, meter)
        self.power_w = power_w
        self.battery = battery
        self.measure_error_ppm = check_ppm(measure_error_ppm)
        self.flowed_mj = 0  # true energy through this end in this session, in or out
        self.limit_mj = None  # the flow stops when this side has measured this much
        self.cable = Cable(self, None) if meter is not None else Cable(None, self)

    def __repr__(self):
        return "SimBoard(%s)" % self.name

    def connect(self, producer):
        """Plug this (consuming) board into ``producer`` with one cable."""
        if self.contactor.closed or producer.contactor.closed:
            raise ValueError("connect %s to %s with both contactors open" % (self.name, producer.name))
        self.cable = producer.cable = Cable(producer, self)

    def update(self):
        self.cable.update(self.clock.now_ms())

    def start_delivery(self, limit_wh=None):
        """Close the contactor: energy flows once every end of the cable is closed. With
        ``limit_wh`` the flow stops when this side measures that much."""
        now_ms = self.clock.now_ms()
        self.cable.update(now_ms)
        if limit_wh is not None:
            self.limit_mj = self.flowed_mj + mj_to_register(limit_wh, self.flowed_mj, self._error_ppm())
        self.contactor.close(now_ms)

    def stop_delivery(self):
        now_ms = self.clock.now_ms()
        self.cable.update(now_ms)
        self.contactor.open(now_ms)

    @property
    def measured_wh(self):
        """What this side measured through its end this session (whole Wh, with its
        error): the meter's register if it has one."""
        return registered_wh(self.flowed_mj, self._error_ppm())

    def time_to_reach_ms(self, target_wh):
        """Exact: after that long (the simulated ms until this side measures ``target_wh``
        at the power flowing now, in the caller's time) it shows at least the target."""
        self.cable.update(self.clock.now_ms())
        need = mj_to_register(target_wh, self.flowed_mj, self._error_ppm())
        if need == 0:
            return 0
        w = self.cable.power_w()
        cap = self.cable.reachable_mj()
        if w == 0 or (cap is not None and need > cap):
            return None
        return self.caller_ms((need + w - 1) // w)

    def reset_session(self, producing):
        """Start counting a new session in which this side produces (or consumes): the
        measurement and the meter's register at zero (``meter.start`` also begins its
        reading chain). A board standing alone turns its cable to the grid accordingly;
        one connected to another must already sit at that end."""
        self.cable.update(self.clock.now_ms())
        cable = self.cable
        if cable.producer is None or cable.consumer is None:
            self.cable = Cable(self, None) if producing else Cable(None, self)
        elif (cable.producer is self) != bool(producing):
            raise ValueError("board %s is connected as the %s" % (self.name, "producer" if cable.producer is self
                                                                   else "consumer"))
        self.flowed_mj = 0
        self.limit_mj = None
        if self.meter is not None:
            self.meter.session_mj = 0

    def _error_ppm(self):
        return self.meter.error_ppm if self.meter is not None else self.measure_error_ppm
