"""The host end of a board's console (``firmware/console.py``) over a serial port, with pyserial.

A reader thread feeds what the port gives to the ``Parser`` and keeps what the frames say
in a ``BoardView``: the board's hello, its latest wallet status and meter reading, and the
session's progress rows, installments, log lines, ledger transactions, steady progress,
the waits it announced (worded with their deadline on this machine's clock as they come)
and its end. Problems on
the line (garbage, bad checksums, lost frames) are counted and kept, never fatal: the
frames around them still count. A port that fails or vanishes (a board unplugged, a
pseudo-terminal closed) ends the reader with ``lost`` set to a sentence naming the port.
"""
import threading
import time

import serial

from plugpay.firmware import console as C
from plugpay.firmware import progress

READ_BYTES = 4096
KEEP_PROBLEMS = 20  # the first problems' texts are kept for the user; the rest are counted


class BoardView:
    """What one board's console said, built frame by frame (``add``)."""

    def __init__(self):
        self.hello = None
        self.status = None
        self.meter = None
        self.timeline = []
        self.installments = []
        self.log = []
        self.onchain = []
        self.step = None  # the latest STEP: [t, installments, of N, energy, exposure, bound, waiting]
        self.waits = []  # each announced wait, in words
        self.done = None
        self.errors = []  # the board's ERR texts
        self.problems = {}  # code -> count
        self.problem_texts = []
        self.frames = 0

    def add(self, item):
        if isinstance(item, C.Problem):
            self.problems[item.code] = self.problems.get(item.code, 0) + 1
            if len(self.problem_texts) < KEEP_PROBLEMS:
                self.problem_texts.append("%s: %s" % (item.code, item.text))
            return
        self.frames += 1
        kind, p = item.kind, item.payload
        if kind == C.HELLO and isinstance(p, dict):
            self.hello = p
        elif kind == C.STATUS and isinstance(p, dict):
            self.status = p
        elif kind == C.METER and isinstance(p, dict):
            self.meter = p
        elif kind == C.PROGRESS and _ints(p, 4):
            self.timeline.append(p)
        elif kind == C.INSTALLMENT and isinstance(p, list) and len(p) == 3:
            self.installments.append(p)
        elif kind == C.EVENT and isinstance(p, list) and len(p) == 2 and isinstance(p[1], str):
            self.log.append(p)
        elif kind == C.ONCHAIN and isinstance(p, dict) and isinstance(p.get("id"), str):
            self.onchain.append({"op": str(p.get("op")), "id": p["id"], "height": None, "detail": None,
                                 "at": p.get("t") if type(p.get("t")) is int else None})
        elif kind == C.STEP and _ints(p, 7):
            self.step = p
        elif kind == C.WAIT and isinstance(p, list) and len(p) == 5 and isinstance(p[1], str) and _ints(p[2:], 3):
            self.waits.append(progress.announcement(p[1][:40], p[3], p[4], p[2], time.time()))
        elif kind == C.DONE and isinstance(p, dict):
            self.done = p
        elif kind == C.ERROR and isinstance(p, dict):
            self.errors.append(str(p.get("text")))
        else:
            self.problems["unusable"] = self.problems.get("unusable", 0) + 1

    def side(self, board, initiator):
        """The record's SIDE (``tools.session_record``) from what arrived; a board whose
        ``DONE`` never came is not finished and its figures are the last ones seen."""
        done = self.done or {}
        timeline = self.timeline
        return {
            "board": board, "kind": (self.hello or {}).get("kind"),
            "initiator": bool(initiator), "stop_code": done.get("stop_code"),
            "finished": done.get("finished") is True, "payout": done.get("payout"),
            "max_exposure": done.get("max_exposure", max([row[1] for row in timeline] + [0])),
            "energy_wh": done.get("energy_wh", timeline[-1][2] if timeline else 0),
            "installments_paid": done.get("installments_paid", self.step[1] if self.step else 0),
            "timeline": list(timeline), "installments": list(self.installments), "log": list(self.log),
        }


def _ints(value, n):
    return isinstance(value, list) and len(value) == n and all(type(v) is int for v in value)


class ProcessPort:
    """The standard input and output of a board's process (a simulated board on the
    MicroPython unix port) as the few calls of a pyserial port ``ConsoleLink`` makes."""

    def __init__(self, proc, timeout=0.1):
        self.proc = proc
        self.timeout = timeout
        self.fd = proc.stdout.fileno()

    def __str__(self):
        return "process %d" % self.proc.pid

    @property
    def in_waiting(self):
        import fcntl
        import struct
        import termios

        return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0]

    def read(self, size):
        import os
        import select

        if not select.select([self.fd], [], [], self.timeout)[0]:
            return b""
        data = os.read(self.fd, size)
        if not data:
            raise OSError("the process ended (exit %s)" % self.proc.poll())
        return data

    def write(self, data):
        self.proc.stdin.write(data)

    def flush(self):
        self.proc.stdin.flush()

    def close(self):
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class ConsoleLink:
    """A board's console on ``port`` (a device path or a pyserial URL, or an open port
    such as a ``ProcessPort``), read in a thread."""

    def __init__(self, port, name, baudrate=115200):
        self.port = port
        self.name = name
        if not isinstance(port, str):
            self.serial = port
        else:
            try:
                self.serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0.1)
            except (serial.SerialException, ValueError) as e:
                raise ConnectionError("cannot open the console of %s on %s: %s" % (name, port, e))
        self.parser = C.Parser()
        self.writer = C.Writer(self._write)
        self.view = BoardView()
        self.lost = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, name="console-" + name, daemon=True)
        self.thread.start()

    def _write(self, data):
        try:
            self.serial.write(data)
            self.serial.flush()
        except (serial.SerialException, OSError) as e:
            self._lose(e)
            raise ConnectionError(self.lost)

    def send(self, kind, payload):
        """Send a command frame (``C.START``, ``C.ASK``)."""
        if self.lost:
            raise ConnectionError(self.lost)
        self.writer.send(kind, payload)

    def _read(self):
        while self.lost is None:
            try:  # what is waiting, else one byte or the timeout: pyserial drops a partial read that fails
                data = self.serial.read(min(max(1, self.serial.in_waiting), READ_BYTES))
            except (serial.SerialException, OSError, TypeError) as e:  # TypeError: closed under pyserial
                self._lose(e)
                return
            if not data:
                continue
            with self.changed:
                for item in self.parser.feed(data):
                    self.view.add(item)
                self.changed.notify_all()

    def _lose(self, error):
        with self.changed:
            if self.lost is None:
                self.lost = "the console of %s on %s was lost: %s" % (self.name, self.port, error)
            self.changed.notify_all()

    def wait(self, predicate, timeout):
        """Wait until ``predicate(view)`` or the console is lost or ``timeout`` s passed;
        returns ``predicate(view)``."""
        end = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.view) and self.lost is None:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 0.2))
            return predicate(self.view)

    def close(self):
        if self.lost is None:
            self.lost = "closed"
        self.thread.join(2)
        try:
            self.serial.close()
        except (serial.SerialException, OSError):
            pass
