"""The serial line protocol of an energy meter that reports cumulative Wh.

Both real boards (ESP32 over ``machine.UART``, Raspberry Pi over pyserial) talk to the meter
the same way, so this module is portable (MicroPython and CPython) and shared by both.
Framing is NMEA 0183's, because meter-interface firmware and serial tools already know it:
ASCII lines ``$BODY*CS`` ended by CR LF (a bare LF is accepted), where CS is the XOR of
every byte between ``$`` and ``*`` as two hex digits.

    board -> meter   $RD*<cs>               read: please report now
    meter -> board   $WH,<wh>*<cs>          cumulative Wh since the meter was made, decimal
    meter -> board   $ER,<code>*<cs>        the meter cannot measure (code: its own, 1-8 chars)

A meter may also send ``$WH`` lines unasked (once a second, say); the board takes the
newest valid one. Cumulative Wh never goes down: a reading below the last one is refused
(a swapped or reset meter must not turn into delivered energy). Every byte is untrusted:
a bad line raises ``MeterLineError`` naming the problem, and the reader skips it.
"""
MAX_LINE = 40  # "$WH,999999999999*CS" is 20 bytes; longer is noise
MAX_WH = 999999999999  # twelve digits: a 1 TWh register
HEX = b"0123456789ABCDEFabcdef"
READ_REQUEST = b"$RD*" + b"%02X" % (ord("R") ^ ord("D")) + b"\r\n"


class MeterLineError(ValueError):
    """A meter line was malformed, failed its checksum, went backwards or never came."""


def checksum(body):
    """XOR of the bytes of ``body`` (between ``$`` and ``*``)."""
    x = 0
    for b in body:
        x ^= b
    return x


def frame(body):
    """``body`` (bytes) as one framed line, CR LF included: what a meter sends."""
    return b"$" + body + b"*" + (b"%02X" % checksum(body)) + b"\r\n"


def parse_line(line):
    """Cumulative Wh of one line (bytes, without its line end). Raises ``MeterLineError``."""
    if len(line) > MAX_LINE:
        raise MeterLineError("meter line too long (%d bytes, at most %d)" % (len(line), MAX_LINE))
    if len(line) < 5 or line[0] != 0x24 or line[-3] != 0x2A:  # "$" ... "*CS"
        raise MeterLineError("meter line not framed as $BODY*CS: %r" % (line,))
    body = line[1:-3]
    if any(c not in HEX for c in line[-2:]):
        raise MeterLineError("meter line checksum is not two hex digits: %r" % (line,))
    sent = int(line[-2:], 16)
    if sent != checksum(body):
        raise MeterLineError("meter line checksum %02X, expected %02X: %r" % (sent, checksum(body), line))
    fields = body.split(b",")
    if fields[0] == b"ER" and len(fields) == 2 and 1 <= len(fields[1]) <= 8:
        raise MeterLineError("the meter reports error %s" % fields[1].decode())
    if fields[0] != b"WH" or len(fields) != 2:
        raise MeterLineError("meter line is not $WH,<Wh>: %r" % (line,))
    digits = fields[1]
    if not 1 <= len(digits) <= 12 or any(c < 0x30 or c > 0x39 for c in digits):
        raise MeterLineError("meter Wh is not 1 to 12 decimal digits: %r" % (digits,))
    return int(digits)


class LineBuffer:
    """Bytes in, complete lines out (without CR/LF). A line that grows past ``MAX_LINE``
    is dropped up to its end, so noise on the wire cannot grow memory; ``dropped`` counts
    such lines."""

    def __init__(self):
        self.partial = b""
        self.overlong = False
        self.dropped = 0

    def feed(self, data):
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # what follows the last LF: not a line yet
        out = []
        for line in lines:
            if self.overlong:  # the end of a line already dropped
                self.overlong = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE:
                self.dropped += 1
            elif line:
                out.append(line)
        if len(self.partial) > MAX_LINE:
            self.partial = b""
            if not self.overlong:
                self.overlong = True
                self.dropped += 1
        return out


class LineMeter:
    """A meter on a serial port: ``read_wh()`` asks and returns the cumulative Wh.

    ``port`` has ``write(bytes)`` and ``read_some()`` (whatever bytes arrived, possibly
    none, after waiting a short while at most); ``ticks`` is ``(ticks_ms, ticks_diff)``.
    Garbage and bad lines are skipped (``bad_lines`` counts them, ``last_error`` says the
    latest); only when no valid reading came within ``timeout_ms`` does ``read_wh`` raise.
    """

    def __init__(self, port, ticks, timeout_ms=500):
        self.port = port
        self.ticks_ms, self.ticks_diff = ticks
        self.timeout_ms = timeout_ms
        self.buffer = LineBuffer()
        self.last_wh = None
        self.bad_lines = 0
        self.last_error = None

    def read_wh(self):
        self.port.write(READ_REQUEST)
        start = self.ticks_ms()
        found = None
        while found is None:
            for line in self.buffer.feed(self.port.read_some() or b""):
                try:
                    found = self._accept(parse_line(line))
                except MeterLineError as e:
                    self.bad_lines += 1
                    self.last_error = str(e)
            if found is None and self.ticks_diff(self.ticks_ms(), start) > self.timeout_ms:
                raise MeterLineError("no valid reading from the meter within %d ms%s" % (
                    self.timeout_ms, "" if self.last_error is None else " (last problem: %s)" % self.last_error))
        return found

    def _accept(self, wh):
        if wh > MAX_WH:
            raise MeterLineError("meter Wh %d above the register's %d" % (wh, MAX_WH))
        if self.last_wh is not None and wh < self.last_wh:
            raise MeterLineError("meter went backwards from %d to %d Wh" % (self.last_wh, wh))
        self.last_wh = wh
        return wh
