"""MQTT 3.1.1 packets for the device's own client (``mqtt_socket``): pure functions, no I/O.

Only what a device sends and the broker may answer: CONNECT (clean session, a user name,
no password), PUBLISH at QoS 0 or 1, PUBACK, SUBSCRIBE to one topic, PINGREQ and
DISCONNECT out; CONNACK, PUBLISH, PUBACK, SUBACK and PINGRESP in.

Every byte from the broker is untrusted. ``split`` finds one whole packet in a receive
buffer and returns offsets, so nothing is copied until a packet is complete; it refuses a
remaining length in more than four bytes or over the caller's limit. The readers check
each length they read against the packet's end and the fixed-header flags MQTT fixes, and
raise ``Malformed`` naming what is wrong. A packet a client never asked for (QoS 2,
UNSUBACK, anything a server must not send) is malformed too.
"""
from plugpay.protocol.port import const

CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
PINGRESP = const(13)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
_PROTOCOL = b"\x00\x04MQTT\x04"  # protocol name and level 4 (3.1.1)

# CONNACK return codes 1..5 (MQTT 3.1.1, 3.2.2.3)
REFUSALS = ("unacceptable protocol version", "identifier rejected", "server unavailable",
            "bad user name or password", "not authorized")


class Malformed(ValueError):
    """The broker sent bytes that are not a packet a client may receive."""


def _remaining(n):
    """The variable-length encoding of a remaining length (at most 268,435,455)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return out


def _string(text):
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError("MQTT string of %d bytes: at most 65535" % len(data))
    return len(data).to_bytes(2, "big") + data


def _packet(first, body):
    return bytes([first]) + _remaining(len(body)) + body


def connect(client_id, username, keepalive):
    """CONNECT with a clean session; ``username`` (or None) goes without a password."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError("keepalive %r: 0..65535 seconds" % (keepalive,))
    flags = 0x02 if username is None else 0x82
    body = _PROTOCOL + bytes([flags]) + keepalive.to_bytes(2, "big") + _string(client_id)
    if username is not None:
        body += _string(username)
    return _packet(0x10, body)


def publish(topic, payload, qos, pid):
    """A PUBLISH, not retained, not a duplicate; ``pid`` is ignored at QoS 0. Header and
    payload in one buffer: one write, one TCP segment or TLS record."""
    if qos not in (0, 1):
        raise ValueError("QoS %r: this client publishes at QoS 0 or 1" % (qos,))
    var = _string(topic)
    if qos:
        var += pid.to_bytes(2, "big")
    return bytes([0x30 | qos << 1]) + _remaining(len(var) + len(payload)) + var + payload


def subscribe(topic, qos, pid):
    """SUBSCRIBE to one topic filter at ``qos`` (0 or 1)."""
    if qos not in (0, 1):
        raise ValueError("QoS %r: this client subscribes at QoS 0 or 1" % (qos,))
    return _packet(0x82, pid.to_bytes(2, "big") + _string(topic) + bytes([qos]))


def puback(pid):
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def split(buf, start, end, limit):
    """The first whole packet in ``buf[start:end]``: ``(first byte, body start, body end)``,
    or None while it is incomplete. ``Malformed`` if its remaining length is encoded in
    more than four bytes or exceeds ``limit``."""
    length = 0
    shift = 0
    i = start + 1
    while True:
        if i >= end:
            return None
        byte = buf[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise Malformed("remaining length in more than four bytes")
    if length > limit:
        raise Malformed("a packet of %d bytes, over the limit of %d" % (length, limit))
    if end - i < length:
        return None
    return buf[start], i, i + length


def _fixed(first, expected, size, body_len, name):
    if first != expected or (size is not None and body_len != size):
        raise Malformed("%s with flags 0x%02x and %d bytes" % (name, first & 0x0F, body_len))


def connack(first, buf, start, end):
    """The CONNACK's return code (0 accepted; ``REFUSALS[code - 1]`` names the others)."""
    _fixed(first, 0x20, 2, end - start, "CONNACK")
    if buf[start] & 0xFE:
        raise Malformed("CONNACK with reserved flags 0x%02x" % buf[start])
    return buf[start + 1]


def puback_id(first, buf, start, end):
    """The packet id a PUBACK acknowledges."""
    _fixed(first, 0x40, 2, end - start, "PUBACK")
    return buf[start] << 8 | buf[start + 1]


def suback(first, buf, start, end):
    """``(packet id, return code)`` of the SUBACK to a one-topic SUBSCRIBE (code 0x80: refused)."""
    _fixed(first, 0x90, 3, end - start, "SUBACK")
    code = buf[start + 2]
    if code not in (0, 1, 2, 0x80):
        raise Malformed("SUBACK with return code 0x%02x" % code)
    return buf[start] << 8 | buf[start + 1], code


def pingresp(first, start, end):
    _fixed(first, 0xD0, 0, end - start, "PINGRESP")


def publish_in(first, buf, start, end):
    """``(topic bytes, payload bytes, qos, packet id)`` of a received PUBLISH (packet id 0
    at QoS 0). The topic stays bytes: the caller decides what a non-UTF-8 one means."""
    qos = (first >> 1) & 3
    if qos == 3 or (qos == 0 and first & 0x08):
        raise Malformed("PUBLISH with flags 0x%02x" % (first & 0x0F))
    if qos == 2:
        raise Malformed("PUBLISH at QoS 2: this client subscribes at QoS 0 or 1")
    if end - start < 2:
        raise Malformed("PUBLISH of %d bytes" % (end - start))
    i = start + 2 + (buf[start] << 8 | buf[start + 1])
    pid = 0
    if qos:
        if i + 2 > end:
            raise Malformed("PUBLISH whose topic and packet id overrun it")
        pid = buf[i] << 8 | buf[i + 1]
        if not pid:
            raise Malformed("PUBLISH at QoS 1 with packet id 0")
        topic_end, i = i, i + 2
    else:
        if i > end:
            raise Malformed("PUBLISH whose topic overruns it")
        topic_end = i
    if topic_end == start + 2:
        raise Malformed("PUBLISH with an empty topic")
    mv = memoryview(buf)
    return bytes(mv[start + 2:topic_end]), bytes(mv[i:end]), qos, pid
