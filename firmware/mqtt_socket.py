"""The device's own MQTT 3.1.1 connection over a socket, plain or TLS: the MicroPython
backend of ``firmware.mqtt`` (paho-mqtt is the CPython one).

Why our own: the registry clients do not fit. PyPI's ``micropython-umqtt-simple`` (1.3.4)
blocks without a timeout in ``connect``, ``subscribe`` and ``wait_msg``; its successor
``umqtt.simple2`` is shipped minified and wraps TLS through the removed ``ussl`` call;
``chumicro-mqtt`` pulls three more packages and takes ~50 KB of heap with them, half of
what an ESP32 without PSRAM has. This is only what ``firmware.mqtt`` needs: ~12 KB of heap
with ``mqtt_packet`` on the 32-bit port, from .mpy files.

The packets are ``mqtt_packet`` (pure, tested byte for byte on CPython); this module is
the socket around them. After the handshake the socket is non-blocking and every wait is
a ``select.poll`` bounded by the caller's timeout, so ``wait(ms)`` never blocks longer
than asked; a write waits for room at most ``WRITE_TIMEOUT_MS``. Received bytes go into
one buffer, read through one preallocated chunk, and a packet is copied out only once
whole; a packet over ``MAX_PACKET`` ends the connection (the protocol's messages are at
most 64 KiB).

Liveness: a PINGREQ goes out when nothing was sent for half the keep-alive, and a
PINGRESP or a PUBACK still missing after another half means the link is dead (OSError),
so a broker that vanished without closing the TCP connection is noticed within the
keep-alive and ``Mqtt`` reconnects.

TLS: ``tls`` is an ``ssl.SSLContext`` that verifies (``mqtt_tls.context``); the socket is
wrapped with the broker's host as ``server_hostname``, so mbedtls checks the chain to the
CA, the validity dates and the host name (DNS or IP address in the certificate).
"""
import select
import socket

from plugpay.firmware import mqtt_packet as P
from plugpay.firmware.mqtt import MqttError, nodelay
from plugpay.protocol.codec import MAX_BYTES
from plugpay.protocol.port import const, ticks_diff, ticks_ms

MAX_PACKET = MAX_BYTES + 1024  # a protocol message and its topic
WRITE_TIMEOUT_MS = const(3000)
_CHUNK = const(1024)
_EAGAIN = const(11)  # errno on Linux and in lwIP alike


def _elapsed(start):
    return ticks_diff(ticks_ms(), start)


class SocketLink:
    """One connection, driven by ``firmware.mqtt.Mqtt`` (same calls as its paho link)."""

    def __init__(self, host, port, client_id, keepalive, inbox, username, tls):
        self.host, self.port = host, port
        self.client_id, self.username, self.tls = client_id, username, tls
        self.keepalive_ms = keepalive * 1000
        self.inbox = inbox
        self.sock = None
        self.poller = None
        self.buf = bytearray()
        self.chunk = memoryview(bytearray(_CHUNK))
        self.pid = 0
        self.unacked = {}  # packet id of a QoS 1 PUBLISH -> when it was sent
        self.connack = None
        self.subscribing = None  # packet id of the SUBSCRIBE awaiting its SUBACK
        self.suback = None
        self.sent_at = 0
        self.ping_at = None

    def socket(self):
        return self.sock

    def _broken(self, why):
        return OSError("the broker at %s:%d %s" % (self.host, self.port, why))

    def open(self, timeout_ms):
        start = ticks_ms()
        family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        sock = self.sock = socket.socket(family, kind, proto)
        nodelay(sock)
        sock.settimeout(timeout_ms / 1000)  # connect and TLS handshake
        sock.connect(address)
        if self.tls is not None:
            try:
                sock = self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except ValueError as e:  # mbedtls: the certificate failed verification
                raise MqttError("the broker's TLS certificate failed verification: %s" % str(e).strip())
        sock.setblocking(False)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self._send(P.connect(self.client_id, self.username, self.keepalive_ms // 1000))
        while self.connack is None:
            left = timeout_ms - _elapsed(start)
            if left <= 0:
                raise OSError("no CONNACK within %d ms" % timeout_ms)
            self._pump(left)
        if self.connack:
            code = self.connack
            reason = P.REFUSALS[code - 1] if code <= len(P.REFUSALS) else "code %d" % code
            raise MqttError("the broker refused the connection: %s" % reason)

    def subscribe(self, topic, qos, timeout_ms):
        self.subscribing = self._next_pid()
        self.suback = None
        self._send(P.subscribe(topic, qos, self.subscribing))
        start = ticks_ms()
        while self.suback is None:
            left = timeout_ms - _elapsed(start)
            if left <= 0:
                raise OSError("no SUBACK for %s within %d ms" % (topic, timeout_ms))
            self._pump(left)
        if self.suback == 0x80:
            raise MqttError("the broker refused the subscription to %s" % topic)

    def publish(self, topic, payload, qos):
        pid = self._next_pid() if qos else 0
        self._send(P.publish(topic, payload, qos, pid))
        if qos:
            self.unacked[pid] = self.sent_at

    def wait(self, timeout_ms):
        """Wait up to ``timeout_ms`` for packets and handle each; keep the link alive."""
        self._keep_alive()
        due = self._next_due()
        self._pump(max(0, timeout_ms if due is None else min(timeout_ms, due)))
        self._keep_alive()

    def close(self):
        sock, self.sock = self.sock, None
        if sock is None:  # never opened, or closed already
            return
        if self.connack == 0:
            try:
                sock.write(P.DISCONNECT_PACKET)  # a clean end, so the broker logs no error
            except OSError:
                pass
        sock.close()

    # -- internals ------------------------------------------------------------------------

    def _next_pid(self):
        pid = self.pid
        while True:
            pid = pid % 0xFFFF + 1
            if pid not in self.unacked:
                self.pid = pid
                return pid

    def _next_due(self):
        """Milliseconds until the next keep-alive duty (a ping to send, an answer overdue)."""
        if not self.keepalive_ms:
            return None
        half = self.keepalive_ms // 2
        due = half - _elapsed(self.sent_at if self.ping_at is None else self.ping_at)
        for sent in self.unacked.values():
            due = min(due, half - _elapsed(sent))
        return due

    def _keep_alive(self):
        if not self.keepalive_ms:
            return
        half = self.keepalive_ms // 2
        if self.ping_at is not None and _elapsed(self.ping_at) >= half:
            raise self._broken("sent no PINGRESP within %d ms" % half)
        for pid, sent in self.unacked.items():
            if _elapsed(sent) >= half:
                raise self._broken("sent no PUBACK for packet %d within %d ms" % (pid, half))
        if self.ping_at is None and _elapsed(self.sent_at) >= half:
            self._send(P.PINGREQ_PACKET)
            self.ping_at = self.sent_at

    def _send(self, data):
        sock = self.sock
        if sock is None:
            raise OSError("not connected")
        view = memoryview(data)
        done = 0
        start = ticks_ms()
        while done < len(data):
            try:
                n = sock.write(view[done:] if done else data)
            except OSError as e:
                if e.args[0] != _EAGAIN:
                    raise
                n = None
            if n:
                done += n
                continue
            left = WRITE_TIMEOUT_MS - _elapsed(start)
            if left <= 0:
                raise self._broken("took no data for %d ms" % WRITE_TIMEOUT_MS)
            self.poller.modify(sock, select.POLLIN | select.POLLOUT)
            self.poller.poll(left)
            self.poller.modify(sock, select.POLLIN)
        self.sent_at = ticks_ms()

    def _pump(self, timeout_ms):
        """Wait up to ``timeout_ms`` for the socket, read all it has, handle whole packets."""
        if not self.poller.poll(timeout_ms):
            return
        sock, chunk, buf = self.sock, self.chunk, self.buf
        while True:
            try:
                n = sock.readinto(chunk)
            except OSError as e:
                if e.args[0] != _EAGAIN:
                    raise
                n = None
            if n is None:
                break
            if n == 0:
                if self.connack:  # a refusal, and the broker hung up after it: open() says which
                    return
                raise self._broken("closed the connection")
            buf.extend(chunk[:n])
            self._handle_packets()  # leaves at most one partial packet, itself bounded by split

    def _handle_packets(self):
        buf = self.buf
        pos = 0
        end = len(buf)
        try:
            if self.connack is None and end and buf[0] != 0x20:  # before its length is complete
                raise P.Malformed("its first packet is no CONNACK (first byte 0x%02x)" % buf[0])
            while pos < end:
                found = P.split(buf, pos, end, MAX_PACKET)
                if found is None:
                    break
                self._handle(*found)
                pos = found[2]
        except P.Malformed as e:
            raise self._broken("sent a malformed packet: %s" % e)
        if pos:
            buf[:pos] = b""

    def _handle(self, first, start, end):
        buf = self.buf
        kind = first >> 4
        if kind == P.PUBLISH:
            topic, payload, qos, pid = P.publish_in(first, buf, start, end)
            if qos:
                self._send(P.puback(pid))
            try:
                self.inbox.append((topic.decode(), payload))
            except UnicodeError:  # not one of our (ASCII) topics: a broker gone wrong
                pass
        elif kind == P.PUBACK:
            pid = P.puback_id(first, buf, start, end)
            if self.unacked.pop(pid, None) is None:
                raise P.Malformed("PUBACK for packet %d, which is not awaited" % pid)
        elif kind == P.SUBACK:
            pid, code = P.suback(first, buf, start, end)
            if pid != self.subscribing:
                raise P.Malformed("SUBACK for packet %d, which is not awaited" % pid)
            self.subscribing = None
            self.suback = code
        elif kind == P.PINGRESP:
            P.pingresp(first, start, end)
            self.ping_at = None
        elif kind == P.CONNACK and self.connack is None:
            self.connack = P.connack(first, buf, start, end)
        else:
            raise P.Malformed("packet type %d, which a broker does not send a client like this" % kind)
