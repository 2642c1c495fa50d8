"""The board console's framing: any chunking, bad checksums, garbage, overlong lines, the writer."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from plugpay.firmware import console as C

FRAMES = [("HELLO", {"board": "vehicle", "kind": "sim", "role": "consumer"}),
          ("PROG", [581, -60, 0, 60]),
          ("LOG", [12, "reading 3 says 600 Wh > measured * 2"]),
          ("STATUS", {"balance": 1600, "keys": 61, "identity": None, "problems": 0}),
          ("DONE", {"stop_code": "OK", "finished": True, "payout": None, "max_exposure": 60, "energy_wh": 2000})]


def _stream():
    w = C.Writer(lambda line: None)
    return b"".join(w.send(kind, payload) for kind, payload in FRAMES)


def _frames(items):
    return [(i.kind, i.seq, i.payload) for i in items if isinstance(i, C.Frame)]


def _problems(items):
    return [i.code for i in items if isinstance(i, C.Problem)]


def test_crc_is_ccitt_false_and_frames_are_one_line_with_one_start_and_one_star():
    assert C.crc16(b"123456789") == 0x29B1
    line = C.encode("LOG", 7, [1, "a>b*c\nd"])
    assert line.count(b">") == 1 and line.count(b"*") == 1 and line.count(b"\n") == 1 and line.endswith(b"\n")
    assert line.startswith(b">LOG 7 ") and line[-6:-5] == b"*"
    assert C.Parser().feed(line)[0].payload == [1, "a>b*c\nd"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_any_chunking_gives_the_same_frames_and_no_problem(cuts):
    data = _stream()
    parser, items, i = C.Parser(), [], 0
    for size in cuts:
        items += parser.feed(data[i:i + size])
        i += size
    items += parser.feed(data[i:])
    assert _problems(items) == []
    assert _frames(items) == [(k, seq, json.loads(json.dumps(p))) for seq, (k, p) in enumerate(FRAMES)]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=17))
def test_arbitrary_bytes_never_raise_and_the_next_frame_is_read(noise, chunk):
    parser = C.Parser()
    data = noise + b"\n" + C.encode("PROG", 0, [1, 2, 3, 4])
    items = []
    for i in range(0, len(data), chunk):
        items += parser.feed(data[i:i + chunk])
    assert all(isinstance(i, (C.Frame, C.Problem)) for i in items)
    assert ("PROG", 0, [1, 2, 3, 4]) in _frames(items)


def test_a_flipped_byte_is_a_bad_checksum_and_the_frames_around_it_survive():
    lines = [C.encode("PROG", seq, [seq, 0, seq * 10, 0]) for seq in range(3)]
    bad = bytearray(lines[1])
    bad[8] ^= 0x01
    items = C.Parser().feed(lines[0] + bytes(bad) + lines[2])
    assert _frames(items) == [("PROG", 0, [0, 0, 0, 0]), ("PROG", 2, [2, 0, 20, 0])]
    assert _problems(items) == [C.BAD_CRC, C.GAP]
    gap = [i for i in items if isinstance(i, C.Problem) and i.code == C.GAP][0]
    assert gap.count == 1 and "1 frame(s) lost before seq 2" in gap.text


def test_garbage_between_and_inside_frames_resyncs_on_the_next_start():
    a, b, c = (C.encode("LOG", s, [s, "x"]) for s in range(3))
    items = C.Parser().feed(b"ets Jun  8 2016 rst:0x1\r\n" + a + b"\x00\xff" + b[:9] + c + b"\r\n")
    assert _frames(items) == [("LOG", 0, [0, "x"]), ("LOG", 2, [2, "x"])]
    assert _problems(items) == [C.GARBAGE, C.GARBAGE, C.BAD_FRAME, C.GAP]
    assert "cut short" in [i for i in items if isinstance(i, C.Problem)][2].text


def test_overlong_lines_are_dropped_without_growing_the_buffer():
    parser = C.Parser(max_line=64)
    items = parser.feed(b">LOG 0 [" + b"1," * 10000)
    items += parser.feed(b"1]*0000\n" + C.encode("LOG", 1, [1]))
    assert _problems(items) == [C.TOO_LONG]
    assert _frames(items) == [("LOG", 1, [1])]


def test_bad_frames_with_a_valid_checksum_are_named():
    def framed(body):
        return b">" + body + b"*%04X\n" % C.crc16(body)
    for body, words in ((b"lower 1 {}", "no KIND SEQ"), (b"LOG x {}", "no KIND SEQ"), (b"LOG 70000 {}", "over 65535"),
                        (b"LOG 1 {nope", "not JSON"), (b"LOG 1 \xff", "not JSON")):
        (item,) = C.Parser().feed(framed(body))
        assert isinstance(item, C.Problem) and item.code == C.BAD_FRAME and words in item.text, (body, item)
    (item,) = C.Parser().feed(b">LOG 1 {}*ZZZZ\n")
    assert item.code == C.BAD_FRAME and "not hex" in item.text
    (item,) = C.Parser().feed(b">LOG 1 {}\n")
    assert "without a checksum" in item.text


def test_a_restarted_board_is_no_gap_and_seqs_wrap():
    parser = C.Parser()
    items = parser.feed(C.encode("LOG", 65535, 1) + C.encode("LOG", 0, 2) + C.encode("HELLO", 0, {}))
    assert _problems(items) == [] and len(_frames(items)) == 3


def test_the_writer_refuses_what_it_cannot_frame():
    w = C.Writer(lambda line: None)
    for kind, payload in (("log", 1), ("TOOLONGKIND", 1), ("LOG", "x" * 2000)):
        try:
            w.send(kind, payload)
            raise AssertionError("framed %r" % kind)
        except ValueError:
            pass
    assert w.seq == 0


def test_start_payload_round_trips_and_bad_fields_are_named():
    from plugpay.firmware.session import CHANNEL, Terms
    from plugpay.protocol import link_messages as M

    params = M.ChargeParameters(2000, 1790000000, 1790007200, 11000, 300, 10, 5)
    terms = Terms(bytes(range(16)), params, CHANNEL, True, False, window=10, htlc_timeout=99)
    payload = json.loads(json.dumps(C.terms_payload(terms, 1790000000, fund=0)))
    back, timestamp, fund = C.read_start(payload)
    assert (back.session_id, back.mode, back.producer, back.initiator, back.window, back.htlc_timeout) == \
        (terms.session_id, CHANNEL, True, False, 10, 99)
    assert back.parameters == params and timestamp == 1790000000 and fund == 0
    for change, words in ((("mode", 9), "mode"), (("session_id", "zz"), "session_id"), (("fund", -1), "fund"),
                          (("producer", 1), "producer"), (("parameters", [1, 2]), "parameters"),
                          (("parameters", [2000, 1, 2, 3, 4, 0, 5]), "installments")):
        bad = dict(payload)
        bad[change[0]] = change[1]
        try:
            C.read_start(bad)
            raise AssertionError("accepted %r" % (change,))
        except C.ConsoleError as e:
            assert words in str(e), (change, e)
    try:
        C.read_start([1])
        raise AssertionError("accepted a list")
    except C.ConsoleError:
        pass


def test_board_console_answers_bad_commands_with_err():
    sent = []
    board = C.BoardConsole(sent.append, "vehicle", "sim", "vehicle")
    host = C.Writer(lambda line: None)
    got = board.commands(b"noise\n" + host.send("ASK", {"what": "hello"}) + host.send("PROG", [1])
                         + host.send("ASK", {"what": "time"}))
    assert [f.kind for f in got] == ["ASK", "ASK"]
    board.answer(got[0], None, None)
    board.answer(got[1], None, None)
    replies = C.Parser().feed(b"".join(sent))
    assert [f.kind for f in replies] == ["ERR", "ERR", "HELLO", "ERR"]
    assert "outside any frame" in replies[0].payload["text"] and "no command" in replies[1].payload["text"]
    assert replies[2].payload == {"board": "vehicle", "kind": "sim", "role": "vehicle"}
    assert "hello, status or meter" in replies[3].payload["text"]
