"""The live view of a session that ``plugpay demo`` and ``plugpay hil`` run: both sides on
one line, and each wait a side announces on a line of its own.

Why a pace: a session that stalls (a producer that stopped delivering) shows the same line
until a timeout a minute later; printed twice a second it buries the one line that matters,
what is awaited and when the side gives up (``firmware.progress``). So the line is printed
when it changed, at most every ``every_s``, and otherwise every ``quiet_s``; on a terminal it
is rewritten in place. Each side gives ``over()``, ``status()`` (its part of the line) and
``waits()`` (the announcements that came since the last call); ``show(status)`` hears
"running" or "over" at every look (the dashboard's session).
"""
import sys
import time

POLL_S = 0.1


def watch(sides, timeout, show=None, every_s=0.5, quiet_s=10.0, out=None):
    """Show the sides until every one is over or ``timeout`` seconds passed."""
    out = out or sys.stdout
    tty = out.isatty()
    start = time.monotonic()
    shown, shown_at = None, None
    while True:
        done = all(side.over() for side in sides)
        if show is not None:
            show("over" if done else "running")
        now = time.monotonic()
        for side in sides:
            for text in side.waits():
                out.write(("\r%-160s\r" % "" if tty else "") + "  %s: %s\n" % (side.name, text))
        status = " | ".join(side.status() for side in sides)
        line = "  t=%5.1fs %s" % (now - start, status)
        over = done or now - start > timeout
        if tty:
            out.write("\r" + line[:160].ljust(160) + ("\n" if over else ""))
        elif over or shown_at is None or (status != shown and now - shown_at >= every_s) or now - shown_at >= quiet_s:
            out.write(line + "\n")
            shown, shown_at = status, now
        out.flush()
        if over:
            return
        time.sleep(POLL_S)
