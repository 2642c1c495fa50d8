"""What a running session tells the people around it: its progress at a steady pace, and
each wait that holds it up, announced once with when the link gives up.

Why: a real charge takes hours and a stalled one waits a minute for a timeout; a line per
step floods a console, silence hides what is wrong. ``Progress.step(session, now)``, called
on every step of the runner (its ``on_step``), says what is due: ``PROGRESS`` at most every
``every_ms``, on each installment (but not within ``min_ms`` of the last line) and once when
the session is finished; ``WAIT`` once for each wait that held the session up from one look
to the next (``min_ms`` apart) with no energy flowing. What is awaited and when the link
gives up come from the link machine (``Session.waiting``), never from timers of its own.

The role's ``reporter`` prints them (``plugpay session``, the boards), the board console
sends them as frames (``plugpay hil``), ``plugpay demo`` shows them beside its line; all
word them with ``announcement`` and ``progress_text``. Portable and cheap: between looks a
step costs a few integer comparisons and allocates nothing.
"""
import time

from plugpay.protocol.port import const

PROGRESS = const(1)
WAIT = const(2)


class Progress:
    """When one side's running session is worth a line (see the module doc). After a
    ``WAIT``, ``wait`` is ``(deadline ms, what, installments paid, readings)`` for as long
    as that wait lasts, else None."""

    def __init__(self, every_ms=10000, min_ms=1000):
        self.every_ms = every_ms
        self.min_ms = min_ms
        self.session = None
        self.wait = None

    def _begin(self, session):
        self.session = session
        self.looked = None  # when the last look was
        self.shown = None  # when progress was last due, and the installments then
        self.shown_paid = -1
        self.paid = -1  # installments at the last look
        self.done = False  # the session was finished at the last look
        self.seen = None  # the wait at the last look: (what, installments, readings)
        self.seen_wh = -1  # the energy then
        self.announced = None  # the wait announced last
        self.wait = None

    def step(self, session, now):
        """``PROGRESS | WAIT`` bits of what is due now (0: nothing)."""
        m = session.machine
        if session is not self.session:
            self._begin(session)
        elif now - self.looked < self.min_ms and m.installments_paid == self.paid and session.finished == self.done:
            return 0
        self.looked = now
        paid = m.installments_paid
        wh = session.board.measured_wh
        due = 0
        if self.shown is None or now - self.shown >= self.every_ms or session.finished != self.done \
                or (paid != self.shown_paid and now - self.shown >= self.min_ms):
            due = PROGRESS
            self.shown, self.shown_paid = now, paid
        w = session.waiting()
        key = None if w is None else (w[2], paid, m.readings)
        if key is not None and key == self.seen and wh == self.seen_wh and key != self.announced:
            self.announced = key
            self.wait = (w[0], w[2], paid, m.readings)
            due |= WAIT
        elif key != self.announced:
            self.wait = None
        self.seen, self.seen_wh, self.paid, self.done = key, wh, paid, session.finished
        return due

    def announcement(self, now, unix_s):
        """The wait just announced, in words, with its deadline on the wall clock
        (``unix_s``: the time now in Unix seconds)."""
        at, what, paid, readings = self.wait
        return announcement(what, paid, readings, at - now, unix_s)

    def line(self, session, now):
        """The progress line of ``session`` now."""
        m = session.machine
        text = progress_text(m.installments_paid, session.params.installments, session.board.measured_wh,
                             session.exposure(), session.exposure_bound())
        if self.wait is not None:
            text += ", still waiting for %s (%d s left)" % (wait_text(self.wait[1], self.wait[2], self.wait[3]),
                                                            _seconds(self.wait[0] - now))
        return text + (", paused" if session.paused else "")


def progress_text(paid, installments, energy_wh, exposure, bound):
    return "%d of %d installments, %d Wh, exposure %d (bound %d)" % (paid, installments, energy_wh, exposure, bound)


def wait_text(what, paid, readings):
    """What a wait of the link (``Session.waiting``) is for, in words; ``paid`` and
    ``readings``: the installments accepted and the meter readings so far."""
    if what == "installment_req":
        return "installment %d" % paid if paid else "the deposit (installment 0)"
    if what == "installment_res":
        return "the producer to accept installment %d" % paid
    if what == "charging_status":
        return "meter reading %d" % (readings + 1)
    if what == "energy":
        return "the energy of chunk %d" % (readings + 1)
    if what == "metering_receipt":
        return "the receipt of meter reading %d" % readings
    if what == "resume":
        return "the session to resume"
    if what == "session_stop_res":
        return "the peer to confirm the stop"
    if what.endswith("_res"):
        return "the peer's answer to %s" % what[:-4].replace("_", " ")
    return what


def announcement(what, paid, readings, left_ms, unix_s):
    """``waiting for meter reading 52, stopping at 12:03:10 (in 58 s)``: a wait that gives
    up ``left_ms`` from now (``unix_s``, Unix seconds), on this machine's local clock."""
    left = _seconds(left_ms)
    return "waiting for %s, stopping at %s (in %d s)" % (wait_text(what, paid, readings),
                                                         clock_text(int(unix_s) + left), left)


def clock_text(unix_s):
    """``HH:MM:SS`` of a Unix time on this machine's local clock."""
    t = time.localtime(unix_s)
    return "%02d:%02d:%02d" % (t[3], t[4], t[5])


def _seconds(ms):
    return -(-max(0, ms) // 1000)
