"""The board console's framing under the real MicroPython: what a board writes and reads."""
from plugpay.firmware import console as C


def _frames(items):
    return [(i.kind, i.seq, i.payload) for i in items if isinstance(i, C.Frame)]


def _codes(items):
    return [i.code for i in items if isinstance(i, C.Problem)]


def test_crc_and_one_byte_chunks_round_trip():
    assert C.crc16(b"123456789") == 0x29B1
    w = C.Writer(lambda line: None)
    sent = [("HELLO", {"board": "vehicle", "kind": "esp32", "role": "consumer"}), ("PROG", [5, -60, 200, 60]),
            ("LOG", [9, "a>b*c"]), ("DONE", {"finished": True, "payout": None})]
    data = b"".join(w.send(k, p) for k, p in sent)
    parser = C.Parser()
    items = []
    for i in range(len(data)):
        items += parser.feed(data[i:i + 1])
    assert _codes(items) == []
    assert _frames(items) == [(k, seq, p) for seq, (k, p) in enumerate(sent)]


def test_garbage_bad_crc_and_overlong_lines_resync():
    a, b, c = (C.encode("PROG", s, [s, 0, 0, 0]) for s in range(3))
    bad = bytearray(b)
    bad[7] ^= 1
    parser = C.Parser(max_line=64)
    items = parser.feed(b"rst:0x1 boot\r\n" + a + bytes(bad) + b">LOG 9 " + b"x" * 200 + b"\n" + c)
    assert _frames(items) == [("PROG", 0, [0, 0, 0, 0]), ("PROG", 2, [2, 0, 0, 0])]
    assert _codes(items) == [C.GARBAGE, C.BAD_CRC, C.TOO_LONG, C.GAP]
    assert parser.feed(b"\xff\xfe>\xff*0000\n>LOG 1 {x*" + b"%04X" % C.crc16(b"LOG 1 {x") + b"\n") != []


def test_start_payload_is_read_on_the_board():
    from plugpay.firmware.session import CHANNEL, Terms
    from plugpay.protocol import link_messages as M

    params = M.ChargeParameters(2000, 1790000000, 1790007200, 11000, 300, 10, 5)
    terms = Terms(bytes(16), params, CHANNEL, False, True)
    line = C.encode("START", 0, C.terms_payload(terms, 1790000000, 1000))
    (frame,) = C.Parser().feed(line)
    back, timestamp, fund = C.read_start(frame.payload)
    assert back.parameters == params and back.initiator and not back.producer and fund == 1000
    try:
        C.read_start({"session_id": "zz"})
        raise AssertionError("accepted a bad START")
    except C.ConsoleError:
        pass
