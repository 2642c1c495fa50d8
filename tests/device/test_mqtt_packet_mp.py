"""The device's MQTT packets under the real MicroPython (the same vectors as
tests/test_mqtt_packet.py on CPython), and the heap the client's code takes once loaded:
on the WebAssembly port that is the 32-bit figure of an ESP32 (its lack of sockets is
stood in for, since only the code is measured); the socket side runs on the unix port
in tests/test_device_mqtt_unix.py."""
import sys

import mpyunit
from plugpay.firmware import mqtt_packet as P


def _read(reader, data):
    first, start, end = P.split(data, 0, len(data), 70000)
    assert end == len(data)
    return reader(first, data, start, end)


def test_what_the_device_sends():
    assert P.connect("pp01", "ab", 30) == (b"\x10\x14" b"\x00\x04MQTT\x04" b"\x82" b"\x00\x1e"
                                          b"\x00\x04pp01" b"\x00\x02ab")
    assert P.publish("a/b", b"hi", 1, 0x1234) == b"\x32\x09\x00\x03a/b\x12\x34hi"
    assert P.publish("a/b", b"hi", 0, 7) == b"\x30\x07\x00\x03a/bhi"
    assert P.subscribe("a/#", 1, 7) == b"\x82\x08\x00\x07\x00\x03a/#\x01"
    assert P.puback(0xBEEF) == b"\x40\x02\xbe\xef"
    big = P.publish("t", bytes(16381), 0, 0)  # remaining length 16384: three bytes
    assert big[:4] == b"\x30\x80\x80\x01" and len(big) == 16388


def test_what_the_device_reads():
    assert _read(P.connack, b"\x20\x02\x00\x05") == 5
    assert _read(P.suback, b"\x90\x03\x00\x07\x80") == (7, 0x80)
    assert _read(P.puback_id, b"\x40\x02\x01\x02") == 0x0102
    assert _read(P.publish_in, b"\x32\x0a\x00\x03a/b\x00\x05xyz") == (b"a/b", b"xyz", 1, 5)
    payload = bytes(range(256)) * 64
    assert _read(P.publish_in, P.publish("plugpay/link/x", payload, 1, 9)) == (b"plugpay/link/x", payload, 1, 9)
    assert P.split(b"\x30\x80", 0, 2, 100) is None


def test_hostile_bytes_are_malformed():
    for data, says in ((b"\x30\xff\xff\xff\xff\x01", "more than four bytes"),
                       (b"\x30\xff\x7f", "over the limit"),
                       (b"\x32\x04\x00\x01t\x00", "overrun"),
                       (b"\x34\x06\x00\x01t\x00\x01x", "QoS 2"),
                       (b"\x20\x03\x00\x00\x00", "CONNACK with flags 0x00 and 3 bytes")):
        try:
            first, start, end = P.split(data, 0, len(data), 100)
            (P.connack if first >> 4 == 2 else P.publish_in)(first, data, start, end)
        except P.Malformed as e:
            assert says in str(e), (data, str(e))
        else:
            raise AssertionError("%r was accepted" % data)


class _NoSockets:
    """Stands in for the ``socket`` module the WebAssembly port lacks: code is measured, not run."""


def test_the_clients_code_on_the_heap():
    from plugpay.protocol import codec  # noqa: F401 (every role has it loaded already)

    yield "codec loaded"
    if "socket" not in sys.modules:
        try:
            import socket  # noqa: F401
        except ImportError:
            sys.modules["socket"] = _NoSockets
    from plugpay.firmware import mqtt, mqtt_socket, mqtt_tls  # noqa: F401

    assert mqtt.BACKEND == "mqtt_socket"
    yield "mqtt, mqtt_socket, mqtt_packet and mqtt_tls loaded"
    before, after = [s["heap"] for s in mpyunit._steps]
    assert 0 < after - before < 24000, (before, after)  # here ~14 KB from source; ~10 KB from .mpy
