"""A board's console (``firmware/console.py``) on its standard input and output: the USB
serial console of an ESP32, or the pipes of a simulated board's process. Frames go out on
stdout; commands come in on stdin, polled so the loop never blocks on a quiet line. Ends
when stdin closes (``EOFError``) or the console is gone."""
import select
import sys
import time

from plugpay.firmware import console as C

from .link import connector

SESSION_TIMEOUT_MS = 7200000


def _ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


def serve(config, wallet, board, kind):
    """``console.serve`` for ``board`` (the hardware, or ``make(terms, role)``) of ``kind``
    ("esp32", "sim", ...) with the config's broker, until stdin closes."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else sys.stdout
    inp = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    start = _ms()

    def read(ms):
        if not poller.poll(ms):
            return b""
        data = inp.read(1)
        if not data:
            raise EOFError("the console's input closed")
        return data

    def write(data):
        out.write(data)
        if hasattr(out, "flush"):
            out.flush()

    def now():
        return _ms() - start

    console = C.BoardConsole(write, config["name"], kind, config["role"])
    try:
        C.serve(console, wallet, board, connector(config), read, now, SESSION_TIMEOUT_MS)
    except EOFError:
        pass
