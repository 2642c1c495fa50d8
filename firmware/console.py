"""The board console: framed, checksummed lines between a board and the host over a serial port.

Why framing: a board's UART also carries boot messages, REPL noise and, on a bad cable,
flipped or lost bytes; the host must read wallet status, meter readings and session
progress from it without ever mistaking noise for data. One frame is one line::

    >KIND SEQ PAYLOAD*CRC\\n

* ``KIND``: 1-8 capital letters (``KINDS``: what the board reports; ``START``, ``ASK``: what
  the host asks);
* ``SEQ``: decimal 0..65535, +1 per frame in each direction, wrapping; a jump means lost
  frames (``GAP``), and ``HELLO`` with seq 0 is a board that restarted;
* ``PAYLOAD``: compact JSON; the writer escapes ``>`` and ``*`` inside strings as
  ``\\u003e``/``\\u002a``, so a frame holds exactly one ``>`` (its start) and one ``*``;
* ``CRC``: CRC-16/CCITT-FALSE of the bytes between ``>`` and ``*``, 4 hex digits;
* at most ``MAX_LINE`` bytes from ``>`` to the newline; a ``\\r`` before it is ignored.

``Parser.feed`` takes bytes in any chunking and returns ``Frame`` and ``Problem`` items;
it never raises on input. A ``>`` always starts a new frame, so after garbage, a cut
frame or an overlong line the next frame is read again (resync).

The board side is ``BoardConsole`` (frames from a wallet, a board and, as the runner's
``on_step`` hook, a session) and ``run_started`` (a session the host's ``START`` asked
for). The host side is ``tools/console_host.py``. Sans-IO and portable (MicroPython).
"""
import json

from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import const

from . import progress

MAX_LINE = const(1024)
MAX_LOG_TEXT = const(160)
SEQ_MOD = const(65536)

HELLO = "HELLO"  # {"board", "kind": sim|esp32|rpi, "role": vehicle|charger}: a board (re)started its console
STATUS = "STATUS"  # a wallet summary (``wallet_summary``)
METER = "METER"  # {"t", "measured_wh"}: what the board measured through its end this session
PROGRESS = "PROG"  # [t_ms, exposure, energy_wh, paid]: one row of Session.exposure_log
INSTALLMENT = "INST"  # [k, sent_ms, accepted_ms]: consumer, one accepted installment
EVENT = "LOG"  # [t_ms, text]: one line of Session.log
ONCHAIN = "CHAIN"  # {"op", "id", "t"}: a ledger request of the session that was applied, and when
STEP = "STEP"  # [t_ms, installments, of N, energy_wh, exposure, bound, waiting 0|1]: progress at a steady pace
WAIT = "WAIT"  # [t_ms, what, ms left, installments, readings]: a wait that holds the session up (firmware.progress)
DONE = "DONE"  # {"stop_code", "finished", "payout", "max_exposure", "energy_wh", "installments_paid"}
ERROR = "ERR"  # {"text"}: the board refused a command or its session failed
START = "START"  # host -> board: run a session on these terms (``terms_payload``)
ASK = "ASK"  # host -> board: {"what": "hello"|"status"|"meter"}

# what the parser reports besides frames
GARBAGE = "garbage"  # bytes outside any frame
BAD_CRC = "bad_crc"
TOO_LONG = "too_long"
BAD_FRAME = "bad_frame"  # a line with a checksum that holds no valid kind, seq or JSON
GAP = "gap"  # frames lost between two good ones


class ConsoleError(ValueError):
    """A command payload that cannot be used; the text names the field."""


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16(data):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): ``crc16(b"123456789") == 0x29B1``."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _valid_kind(kind):
    return 1 <= len(kind) <= 8 and all(65 <= c <= 90 for c in kind)


def encode(kind, seq, payload):
    """The frame's bytes; ``ValueError`` for a bad kind or seq or a frame over ``MAX_LINE``."""
    raw_kind = kind.encode()
    if not _valid_kind(raw_kind) or type(seq) is not int or not 0 <= seq < SEQ_MOD:
        raise ValueError("a frame needs a kind of 1-8 capital letters and a seq 0..65535")
    text = json.dumps(payload, separators=(",", ":")).replace(">", "\\u003e").replace("*", "\\u002a")
    body = raw_kind + b" " + str(seq).encode() + b" " + text.encode()
    line = b">" + body + b"*" + ("%04X" % crc16(body)).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ValueError("a %s frame of %d bytes is over the %d-byte limit" % (kind, len(line), MAX_LINE))
    return line


class Frame:
    def __init__(self, kind, seq, payload):
        self.kind = kind
        self.seq = seq
        self.payload = payload

    def __repr__(self):
        return "Frame(%s, %d, %r)" % (self.kind, self.seq, self.payload)


class Problem:
    """Something wrong on the line: ``code`` (``GARBAGE``, ``BAD_CRC``, ...) and a ``text``
    for a person; ``count`` is the bytes (garbage) or frames (gap) concerned."""

    def __init__(self, code, text, count=1):
        self.code = code
        self.text = text
        self.count = count

    def __repr__(self):
        return "Problem(%s, %r)" % (self.code, self.text)


def _sample(data):
    return repr(bytes(data[:24])) + ("..." if len(data) > 24 else "")


class Parser:
    """Bytes in, ``Frame``/``Problem`` items out (see the module doc)."""

    def __init__(self, max_line=MAX_LINE):
        self.max_line = max_line
        self._frame = None  # bytearray after a '>' while inside a frame
        self._skipping = False  # inside an overlong frame: drop until the next '>' or newline
        self._garbage = bytearray()
        self._garbage_count = 0
        self._next_seq = None
        self.frames = 0
        self.problems = 0

    def feed(self, data):
        out = []
        try:
            data = bytes(data)
        except TypeError:
            return [self._problem(BAD_FRAME, "not bytes: %s" % type(data).__name__)]
        i, n = 0, len(data)
        while i < n:
            j = _next_mark(data, i)
            part = data[i:j]
            if self._frame is not None:
                if len(self._frame) + len(part) + 1 > self.max_line:
                    out.append(self._problem(TOO_LONG, "a line over %d bytes was dropped" % self.max_line))
                    self._frame = None
                    self._skipping = True
                else:
                    self._frame.extend(part)
            elif not self._skipping:
                self._note_garbage(part)
            if j == n:
                break
            mark = data[j]
            if self._frame is not None:
                out.append(self._finish(bytes(self._frame), mark == 0x3E, out))
                self._frame = None
            self._skipping = False
            if mark == 0x3E:  # '>'
                self._flush_garbage(out)
                self._frame = bytearray()
            else:
                self._flush_garbage(out)
            i = j + 1
        return out

    def _note_garbage(self, part):
        stripped = part.strip()
        if stripped:
            self._garbage_count += len(part)
            if len(self._garbage) < 24:
                self._garbage.extend(part[:24])

    def _flush_garbage(self, out):
        if self._garbage_count:
            out.append(self._problem(GARBAGE, "%d bytes outside any frame: %s" % (
                self._garbage_count, _sample(self._garbage)), self._garbage_count))
            self._garbage = bytearray()
            self._garbage_count = 0

    def _problem(self, code, text, count=1):
        self.problems += 1
        return Problem(code, text, count)

    def _finish(self, body, cut, out):
        """The frame in ``body`` (after its '>'), or a ``Problem``; a gap before a good
        frame goes to ``out`` first."""
        if body.endswith(b"\r"):
            body = body[:-1]
        if len(body) < 5 or body[-5] != 0x2A:  # '*'
            if cut:
                return self._problem(BAD_FRAME, "a frame cut short by the next one: %s" % _sample(body))
            return self._problem(BAD_FRAME, "a line without a checksum: %s" % _sample(body))
        try:
            crc = int(body[-4:], 16)
        except ValueError:
            return self._problem(BAD_FRAME, "a checksum that is not hex: %s" % _sample(body[-4:]))
        head = body[:-5]
        if crc16(head) != crc:
            return self._problem(BAD_CRC, "checksum %04X does not match the frame (%04X): %s" % (
                crc, crc16(head), _sample(head)))
        parts = head.split(b" ", 2)
        if len(parts) != 3 or not _valid_kind(parts[0]) or not parts[1].isdigit() or len(parts[1]) > 5:
            return self._problem(BAD_FRAME, "no KIND SEQ PAYLOAD in a frame: %s" % _sample(head))
        seq = int(parts[1])
        if seq >= SEQ_MOD:
            return self._problem(BAD_FRAME, "seq %d is over 65535" % seq)
        try:
            payload = json.loads(parts[2])
        except ValueError:
            return self._problem(BAD_FRAME, "a payload that is not JSON: %s" % _sample(parts[2]))
        kind = parts[0].decode()
        frame = Frame(kind, seq, payload)
        self.frames += 1
        expected, self._next_seq = self._next_seq, (seq + 1) % SEQ_MOD
        if expected is not None and seq != expected and not (kind == HELLO and seq == 0):
            lost = (seq - expected) % SEQ_MOD
            if lost < SEQ_MOD // 2:
                out.append(self._problem(GAP, "%d frame(s) lost before seq %d" % (lost, seq), lost))
            else:
                out.append(self._problem(GAP, "seq %d out of order (expected %d)" % (seq, expected), 0))
        return frame


def _next_mark(data, start):
    """Index of the next '>' or newline at or after ``start`` (``len(data)`` if none)."""
    a = data.find(b">", start)
    b = data.find(b"\n", start)
    if a < 0:
        return len(data) if b < 0 else b
    return a if b < 0 else min(a, b)


class Writer:
    """Frames with consecutive seqs to ``write(bytes)``."""

    def __init__(self, write):
        self.write = write
        self.seq = 0

    def send(self, kind, payload):
        line = encode(kind, self.seq, payload)
        self.seq = (self.seq + 1) % SEQ_MOD
        self.write(line)
        return line


# -- the board side --------------------------------------------------------------------------

def wallet_summary(wallet):
    """The ``STATUS`` payload: what the host shows of a wallet, small enough for one line."""
    s = wallet.status()
    keys = s["keys"]
    return {"balance": s["balance"], "coins": s["coins"], "locked": s["locked"], "keys": keys["available"],
            "capacity": keys["capacity"], "identity": s["identity"], "channels": len(s["channels"]),
            "htlc_series": len(s["htlc_series"]), "problems": len(s["problems"])}


class BoardConsole:
    """What a board reports over its console: ``hello``, ``status``, ``meter`` and, as the
    runner's ``on_step(session, now)`` hook, the session's new progress rows, installments,
    log lines and ledger transactions, its progress at a steady pace (``STEP``) and the
    waits that hold it up (``WAIT``, ``firmware.progress``), then ``DONE``.
    ``commands(data)`` parses what the host sent: the frames of host kinds; anything else
    is answered with ``ERR``."""

    def __init__(self, write, board_name, kind, role, meter_every_ms=500):
        self.writer = Writer(write)
        self.parser = Parser()
        self.board_name = board_name
        self.kind = kind
        self.role = role
        self.meter_every_ms = meter_every_ms
        self._reset()

    def _reset(self):
        self._onchain = 0  # the session's ledger requests sent
        self._meter_at = None
        self._done = False
        self.progress = progress.Progress(every_ms=1000, min_ms=500)

    def send(self, kind, payload):
        return self.writer.send(kind, payload)

    def hello(self):
        self.send(HELLO, {"board": self.board_name, "kind": self.kind, "role": self.role})

    def answer(self, ask, wallet, board):
        """Answer the host's ``ASK`` frame (a host that opened the port after the board's
        ``HELLO`` asks for it again)."""
        what = ask.payload.get("what") if type(ask.payload) is dict else None
        if what == "hello":
            self.hello()
        elif what == "status":
            self.status(wallet)
        elif what == "meter":
            if board is None:  # a simulated board exists for a session only
                self.error("console: no board to read before a session starts")
            else:
                self.meter(board, 0)
        else:
            self.error("console: ASK for %r: ask for hello, status or meter" % (what,))

    def status(self, wallet):
        self.send(STATUS, wallet_summary(wallet))

    def meter(self, board, now):
        """What the board measured through its end (out for a producer, in for a consumer)."""
        board.update()
        self.send(METER, {"t": now, "measured_wh": board.measured_wh})
        self._meter_at = now

    def error(self, text):
        self.send(ERROR, {"text": str(text)[:MAX_LOG_TEXT]})

    def on_step(self, session, now):
        """Forward what the session did since the last step. The rows of its history are
        dropped once forwarded: the host keeps the record, a board keeps no history."""
        for row in session.exposure_log:
            self.send(PROGRESS, list(row))
        for k, sent, accepted in session.installment_log:
            self.send(INSTALLMENT, [k, None if sent is None else sent - session.started,
                                    accepted - session.started])
        for t, text in session.log:
            self.send(EVENT, [t, text[:MAX_LOG_TEXT]])
        session.exposure_log.clear()
        session.installment_log.clear()
        session.log.clear()
        while self._onchain < len(session.onchain):
            raw = session.onchain[self._onchain]
            op = L.decode_request(raw)
            self.send(ONCHAIN, {"op": op.NAME, "id": L.request_id(op, raw).hex(),
                                "t": session.onchain_at[self._onchain]})
            self._onchain += 1
        if self._meter_at is None or now - self._meter_at >= self.meter_every_ms:
            self.meter(session.board, now)
        due = self.progress.step(session, now)
        if due:
            self._progress(session, now, due)
        if session.finished and not self._done:
            self._done = True
            self.send(DONE, done_payload(session))

    def _progress(self, session, now, due):
        t = now - session.started
        wait = self.progress.wait
        if due & progress.WAIT:
            self.send(WAIT, [t, wait[1], wait[0] - now, wait[2], wait[3]])
        if due & progress.PROGRESS:
            self.send(STEP, [t, session.installments_paid, session.params.installments, session.board.measured_wh,
                             session.exposure(), session.exposure_bound(), 0 if wait is None else 1])

    def commands(self, data):
        """The host's frames in ``data`` (``START``, ``ASK``); problems and other kinds are
        answered with ``ERR`` frames and dropped."""
        out = []
        for item in self.parser.feed(data):
            if isinstance(item, Problem):
                if item.code != GAP:
                    self.error("console: " + item.text)
            elif item.kind in (START, ASK):
                out.append(item)
            else:
                self.error("console: %s is no command" % item.kind)
        return out

    def new_session(self):
        self._reset()


def done_payload(session):
    board = session.board
    return {"stop_code": None if session.stop_code is None else M.code_name(session.stop_code),
            "finished": session.finished, "payout": session.payout, "max_exposure": session.max_exposure,
            "energy_wh": board.measured_wh, "installments_paid": session.installments_paid}


def terms_payload(terms, timestamp, fund=0):
    """The ``START`` payload for ``Terms``: ``timestamp`` (Unix seconds for the meter, since
    a board may have no clock) and ``fund`` (what the consumer asks the faucet for first, on
    a test network; 0: nothing)."""
    p = terms.parameters
    return {"session_id": terms.session_id.hex(), "mode": terms.mode, "producer": terms.producer,
            "initiator": terms.initiator, "window": terms.window, "htlc_timeout": terms.htlc_timeout,
            "fee": terms.fee, "timestamp": timestamp, "fund": fund,
            "parameters": [p.energy_wh, p.window_start, p.window_end, p.max_power_w, p.unit_price,
                           p.installments, p.tolerance_wh]}


def _field(payload, name, kind):
    if name not in payload:
        raise ConsoleError("START: %s is missing" % name)
    value = payload[name]
    if kind is int and (type(value) is not int or value < 0):
        raise ConsoleError("START: %s must be a whole number >= 0" % name)
    if kind is not int and type(value) is not kind:
        raise ConsoleError("START: %s has the wrong type" % name)
    return value


def read_start(payload):
    """``(Terms, timestamp, fund)`` from a ``START`` payload; ``ConsoleError`` names the field."""
    from plugpay.protocol.codec import DecodeError

    from .session import CHANNEL, HTLC, Terms

    if type(payload) is not dict:
        raise ConsoleError("START: the payload is not an object")
    try:
        session_id = bytes.fromhex(_field(payload, "session_id", str))
    except ValueError:
        raise ConsoleError("START: session_id is not hex")
    mode = _field(payload, "mode", int)
    if mode not in (CHANNEL, HTLC):
        raise ConsoleError("START: unknown payment mode %d" % mode)
    fields = _field(payload, "parameters", list)
    if len(fields) != 7 or any(type(v) is not int for v in fields):
        raise ConsoleError("START: parameters must be 7 whole numbers")
    try:
        params = M.ChargeParameters(*fields)  # checks every field
    except (DecodeError, ValueError, TypeError) as e:
        raise ConsoleError("START: parameters: %s" % e)
    if params.installments < 1:
        raise ConsoleError("START: parameters: installments must be at least 1")
    terms = Terms(session_id, params, mode, _field(payload, "producer", bool), _field(payload, "initiator", bool),
                  _field(payload, "window", int), _field(payload, "htlc_timeout", int), _field(payload, "fee", int))
    return terms, _field(payload, "timestamp", int), _field(payload, "fund", int)


def run_started(console, wallet, board, mqtt, start, now, timeout_ms):
    """A board's session on the host's ``START`` (``read_start``'s triple), over ``mqtt``
    (connected), the console reporting as it goes; returns the ``Session`` (``None`` after
    an ``ERR``: a refused faucet). ``now`` is the link clock in ms."""
    from . import issuing
    from .gateway_client import GatewayClient, GatewayError
    from .runner import SessionRunner
    from .session import Session

    terms, timestamp, fund = start
    if fund:
        try:
            result = issuing.fund(wallet, GatewayClient(mqtt), fund)
        except GatewayError as e:
            console.error(e)
            return None
        if not result.ok:
            console.error("the faucet refused: %s" % L.reason_name(result.reason))
            return None
    console.new_session()
    session = Session(wallet, board, terms, now(), timestamp=timestamp)
    console.status(wallet)
    SessionRunner(session, mqtt, now=now, on_step=console.on_step).run(timeout_ms)
    console.on_step(session, now())
    console.status(wallet)
    return session


def serve(console, wallet, board, connect, read, now, timeout_ms):
    """The board side of ``plugpay hil``, until ``read`` raises (the console is gone):
    greet, answer each ``ASK``, and run the session of each ``START`` on an MQTT connection
    of its own, named by the session id (``connect(username)`` returns it connected; it is
    closed after the session, so every session has a fresh client id). ``board`` is the
    hardware, or ``make(terms, role)`` for a simulated board sized by each session's terms.
    ``read(ms)`` returns the bytes that came, ``b""`` after ``ms`` without any."""
    console.hello()  # a host that opens the port later asks for it again
    hardware = None if callable(board) else board
    while True:
        data = read(100)
        if not data:
            continue
        for frame in console.commands(data):
            if frame.kind == ASK:
                console.answer(frame, wallet, hardware)
                continue
            try:
                start = read_start(frame.payload)
            except ConsoleError as e:
                console.error(e)
                continue
            mqtt = connect(start[0].session_id.hex())
            try:
                sized = hardware if hardware is not None else board(start[0], console.role)
                run_started(console, wallet, sized, mqtt, start, now, timeout_ms)
            finally:
                mqtt.close()
