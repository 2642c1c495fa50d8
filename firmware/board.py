"""What a charging session needs of its hardware: the board interface and the contactor.

``firmware.session`` drives any ``Board``: the simulated one (``boards/sim``: a cable, a
battery and a simulated meter) or a real one (``boards/common/hardware.py``: a relay and a
serial meter, for the ESP32 and the Raspberry Pi). The session passes no time to a board:
the board reads its own clock, which may run faster than the link's (a simulation), and
answers in the caller's time. Energy is counted per session and per end of the cable, in
whole Wh, whichever way it flows: out of a producing board, into a consuming one.
"""


class Contactor:
    """The relay that joins a board to the cable. ``switches`` counts changes of state
    (relays wear, and a test can see chatter); ``changed_ms`` is when it last switched, in
    the board's time."""

    def __init__(self):
        self.closed = False
        self.switches = 0
        self.changed_ms = None

    def close(self, now_ms):
        if not self.closed:
            self.closed = True
            self.switches += 1
            self.changed_ms = now_ms

    def open(self, now_ms):
        if self.closed:
            self.closed = False
            self.switches += 1
            self.changed_ms = now_ms


class Board:
    """One side's hardware, as the session uses it (a plain base class: MicroPython has no
    ``abc``). ``name`` is for messages; ``meter`` is the ``firmware.meter.Meter`` that signs
    this side's readings (the responder's: it meters the session) or None; ``contactor`` the
    ``Contactor``; ``clock`` the board's time: ``now_ms()``, and ``scale``, how many of its
    ms pass in one ms of the caller's time (1 on real hardware).

    A board must provide ``reset_session``, ``start_delivery``, ``stop_delivery``,
    ``update``, ``measured_wh`` and ``time_to_reach_ms`` as documented here."""

    def __init__(self, name, clock, meter=None, contactor=None):
        self.name = name
        self.clock = clock
        self.meter = meter
        self.contactor = contactor or Contactor()

    def reset_session(self, producing):
        """Start counting a session in which this side produces (or consumes):
        ``measured_wh`` back to 0, no energy limit."""
        raise NotImplementedError

    def start_delivery(self, limit_wh=None):
        """Close the contactor: energy flows once the other end lets it. With ``limit_wh``
        the flow stops when this side has measured that much this session (energy-limited
        charging), so no more flows than was paid for however late the session looks."""
        raise NotImplementedError

    def stop_delivery(self):
        """Open the contactor: no more energy through this end."""
        raise NotImplementedError

    def update(self):
        """Look at the energy now: ``measured_wh`` catches up, and a board that switches
        by looking opens its contactor at the limit here."""
        raise NotImplementedError

    @property
    def measured_wh(self):
        """Whole Wh through this end this session, as of the last look (``update``)."""
        raise NotImplementedError

    def time_to_reach_ms(self, target_wh):
        """When to look again for ``measured_wh`` to reach ``target_wh``, in ms of the
        caller's time from now: 0 if it does already, None if it will not as things stand
        (no power, a limit, a battery empty or full)."""
        raise NotImplementedError

    def caller_ms(self, board_ms):
        """``board_ms`` of the board's clock in ms of the caller's time, rounded up."""
        return -(-board_ms * 1000 // int(self.clock.scale * 1000))
