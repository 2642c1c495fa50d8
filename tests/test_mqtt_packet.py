"""The device's MQTT packets (``firmware.mqtt_packet``) byte for byte: against the
specification's layouts, against what paho-mqtt sends for the same calls (captured on a
real socket), and against amqtt's own encoder and decoder; and the decoder on hostile
bytes, which must only ever raise ``Malformed``."""
import asyncio
import socket

import paho.mqtt.client as paho
import pytest
from amqtt.adapters import BufferReader
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.pingresp import PingRespPacket
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.suback import SubackPacket
from amqtt.mqtt.subscribe import SubscribePacket
from hypothesis import given, settings
from hypothesis import strategies as st

from plugpay.firmware import mqtt_packet as P

LIMIT = 70000


def whole(data, limit=LIMIT):
    """``(first, body start, body end)`` of ``data`` as one packet (asserting it is one)."""
    found = P.split(data, 0, len(data), limit)
    assert found is not None and found[2] == len(data), (data, found)
    return found


def read(reader, data):
    """``reader`` applied to ``data``, one whole packet."""
    first, start, end = whole(data)
    if reader is P.pingresp:
        return reader(first, start, end)
    return reader(first, data, start, end)


# -- the layouts of the specification -------------------------------------------------------

def test_connect_with_a_user_name_and_no_password():
    assert P.connect("pp01", "ab", 30) == (b"\x10\x14" b"\x00\x04MQTT\x04" b"\x82" b"\x00\x1e"
                                          b"\x00\x04pp01" b"\x00\x02ab")
    assert P.connect("c", None, 0) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"
    with pytest.raises(ValueError):
        P.connect("c", None, 65536)


def test_publish_subscribe_and_acks():
    assert P.publish("a/b", b"hi", 0, 99) == b"\x30\x07\x00\x03a/bhi"
    assert P.publish("a/b", b"hi", 1, 0x1234) == b"\x32\x09\x00\x03a/b\x12\x34hi"
    assert P.subscribe("a/#", 1, 7) == b"\x82\x08\x00\x07\x00\x03a/#\x01"
    assert P.puback(0xBEEF) == b"\x40\x02\xbe\xef"
    assert P.PINGREQ_PACKET == b"\xc0\x00" and P.DISCONNECT_PACKET == b"\xe0\x00"
    for bad in (2, 3):
        with pytest.raises(ValueError):
            P.publish("t", b"", bad, 1)
        with pytest.raises(ValueError):
            P.subscribe("t", bad, 1)


@pytest.mark.parametrize("size,header", [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
                                         (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
                                         (2097152, b"\x80\x80\x80\x01")])
def test_remaining_length_at_every_boundary(size, header):
    assert bytes(P._remaining(size)) == header
    if size < 3:
        return
    payload = bytes(size - 3)  # topic "t" takes 3 bytes
    packet = P.publish("t", payload, 0, 0)
    assert packet[1:1 + len(header)] == header
    first, start, end = whole(packet, limit=size)
    assert P.publish_in(first, packet, start, end) == (b"t", payload, 0, 0)
    with pytest.raises(P.Malformed, match="over the limit"):
        P.split(packet, 0, len(packet), size - 1)


def test_readers_of_what_a_broker_sends():
    assert read(P.connack, b"\x20\x02\x00\x00") == 0
    assert read(P.connack, b"\x20\x02\x01\x05") == 5  # session present, not authorized
    assert read(P.puback_id, b"\x40\x02\x01\x02") == 0x0102
    assert read(P.suback, b"\x90\x03\x00\x07\x80") == (7, 0x80)
    read(P.pingresp, b"\xd0\x00")
    assert read(P.publish_in, b"\x32\x0a\x00\x03a/b\x00\x05xyz") == (b"a/b", b"xyz", 1, 5)
    assert read(P.publish_in, b"\x30\x05\x00\x03a/b") == (b"a/b", b"", 0, 0)


def test_split_waits_for_a_whole_packet_and_finds_each_in_turn():
    stream = P.puback(1) + P.publish("t", b"x" * 200, 1, 2) + b"\xd0\x00"
    assert P.split(stream, 0, 3, LIMIT) is None  # PUBACK cut short
    assert P.split(stream, 4, 6, LIMIT) is None  # two-byte length cut after its first byte
    first, start, end = P.split(stream, 0, len(stream), LIMIT)
    assert (first, start, end) == (0x40, 2, 4)
    first, start, end = P.split(stream, end, len(stream), LIMIT)
    assert first == 0x32 and P.publish_in(first, stream, start, end) == (b"t", b"x" * 200, 1, 2)
    assert P.split(stream, end, len(stream), LIMIT) == (0xD0, end + 2, end + 2)


@pytest.mark.parametrize("packet,reader,says", [
    (b"\x20\x03\x00\x00\x00", P.connack, "CONNACK with flags 0x00 and 3 bytes"),
    (b"\x21\x02\x00\x00", P.connack, "CONNACK with flags 0x01"),
    (b"\x20\x02\x02\x00", P.connack, "reserved flags 0x02"),
    (b"\x42\x02\x00\x01", P.puback_id, "PUBACK with flags 0x02"),
    (b"\x40\x03\x00\x01\x00", P.puback_id, "PUBACK with flags 0x00 and 3 bytes"),
    (b"\x90\x04\x00\x01\x00\x00", P.suback, "SUBACK with flags 0x00 and 4 bytes"),
    (b"\x90\x03\x00\x01\x03", P.suback, "return code 0x03"),
    (b"\x36\x06\x00\x01t\x00\x01x", P.publish_in, "flags 0x06"),
    (b"\x38\x04\x00\x01tx", P.publish_in, "flags 0x08"),
    (b"\x34\x06\x00\x01t\x00\x01x", P.publish_in, "QoS 2"),
    (b"\x30\x01\x00", P.publish_in, "PUBLISH of 1 bytes"),
    (b"\x30\x03\x00\x05t", P.publish_in, "topic overruns"),
    (b"\x32\x04\x00\x01t\x00", P.publish_in, "topic and packet id overrun"),
    (b"\x32\x05\x00\x01t\x00\x00", P.publish_in, "packet id 0"),
    (b"\x30\x03\x00\x00x", P.publish_in, "empty topic"),
])
def test_malformed_packets_are_named(packet, reader, says):
    with pytest.raises(P.Malformed, match=says):
        read(reader, packet)


def test_a_remaining_length_in_five_bytes_is_refused():
    with pytest.raises(P.Malformed, match="more than four bytes"):
        P.split(b"\x30\xff\xff\xff\xff\x01", 0, 6, 1 << 30)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_packet_nothing_or_malformed(data):
    """What a hostile broker can send: the decoder raises nothing but ``Malformed``."""
    readers = {2: P.connack, 4: P.puback_id, 9: P.suback, 3: P.publish_in}
    pos = 0
    try:
        while pos < len(data):
            found = P.split(data, pos, len(data), 40)
            if found is None:
                break
            first, start, end = found
            assert start <= end <= len(data)
            kind = first >> 4
            if kind == 13:
                P.pingresp(first, start, end)
            elif kind in readers:
                readers[kind](first, data, start, end)
            pos = end
    except P.Malformed:
        pass


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), min_size=1, max_size=80),
       st.binary(max_size=600), st.sampled_from([0, 1]), st.integers(1, 0xFFFF))
def test_publish_round_trips(topic, payload, qos, pid):
    assert read(P.publish_in, P.publish(topic, payload, qos, pid)) == (topic.encode(), payload, qos, pid if qos else 0)


# -- against amqtt --------------------------------------------------------------------------

def _amqtt_decode(cls, data):
    return asyncio.run(cls.from_stream(BufferReader(data)))


def test_amqtt_reads_what_the_device_sends():
    connect = _amqtt_decode(ConnectPacket, P.connect("ppdevice", "cafe" * 8, 30))
    assert connect.client_id == "ppdevice" and connect.username == "cafe" * 8 and connect.password is None
    assert connect.clean_session_flag and connect.keep_alive == 30 and connect.proto_level == 4
    assert not connect.password_flag and not connect.will_flag
    publish = _amqtt_decode(PublishPacket, P.publish("plugpay/link/x/to-initiator", b"\x00\xff" * 300, 1, 513))
    assert (publish.topic_name, publish.data, publish.qos, publish.packet_id) == \
        ("plugpay/link/x/to-initiator", b"\x00\xff" * 300, 1, 513)
    assert not publish.retain_flag and not publish.dup_flag
    subscribe = _amqtt_decode(SubscribePacket, P.subscribe("plugpay/ledger/result/pp1", 1, 9))
    assert subscribe.variable_header.packet_id == 9 and subscribe.payload.topics == [("plugpay/ledger/result/pp1", 1)]
    assert _amqtt_decode(PubackPacket, P.puback(4242)).packet_id == 4242


def test_the_device_reads_what_amqtt_sends():
    for code in (0, 5):
        assert read(P.connack, ConnackPacket.build(0, code).to_bytes()) == code
    assert read(P.suback, SubackPacket.build(77, [1]).to_bytes()) == (77, 1)
    assert read(P.puback_id, PubackPacket.build(65535).to_bytes()) == 65535
    read(P.pingresp, PingRespPacket.build().to_bytes())
    for qos, pid in ((0, None), (1, 300)):
        data = PublishPacket.build("a/b", b"payload" * 40, pid, False, qos, False).to_bytes()
        assert read(P.publish_in, data) == (b"a/b", b"payload" * 40, qos, pid or 0)


# -- against paho-mqtt ---------------------------------------------------------------------

def _paho_bytes(steps, size):
    """The first ``size`` bytes paho-mqtt writes on a real socket for ``steps(client)``,
    after a CONNACK."""
    server = socket.create_server(("127.0.0.1", 0))
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ppdevice", protocol=paho.MQTTv311,
                         clean_session=True)
    client.username_pw_set("cafe" * 8)
    try:
        client.connect("127.0.0.1", server.getsockname()[1], 30)
        peer, _ = server.accept()
        peer.settimeout(5)
        client.loop_write()
        sent = peer.recv(4096)
        peer.sendall(b"\x20\x02\x00\x00")
        client.loop_read()
        steps(client)
        while len(sent) < size:
            client.loop_write()
            more = peer.recv(4096)
            assert more, sent
            sent += more
        peer.close()
        return sent
    finally:
        client.socket().close()
        server.close()


def test_paho_sends_the_same_bytes_for_the_same_calls():
    def steps(client):
        client.subscribe("plugpay/ledger/result/ppdevice", 1)  # packet id 1
        client.publish("plugpay/ledger/query/ppdevice", b"\x82\x01\x02", 1)  # packet id 2
        client.publish("plugpay/link/ab/to-responder", b"q0", 0)

    expected = (P.connect("ppdevice", "cafe" * 8, 30) + P.subscribe("plugpay/ledger/result/ppdevice", 1, 1)
                + P.publish("plugpay/ledger/query/ppdevice", b"\x82\x01\x02", 1, 2)
                + P.publish("plugpay/link/ab/to-responder", b"q0", 0, 0))
    assert _paho_bytes(steps, len(expected)) == expected
