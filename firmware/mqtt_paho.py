"""The CPython backend of ``firmware.mqtt``: one connection through paho-mqtt 2.x, driven
by hand from ``wait`` (its ``loop_read`` / ``loop_write`` / ``loop_misc``, no network
thread). A separate module so a MicroPython device never loads it."""
import select

import paho.mqtt.client as paho

from plugpay.firmware.mqtt import MqttError, nodelay
from plugpay.protocol.port import ticks_diff, ticks_ms


def _pending(sock):
    """Bytes a TLS socket has decrypted and buffered already: ``select`` does not see them."""
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0


def _elapsed(start):
    return ticks_diff(ticks_ms(), start)


class PahoLink:
    """One connection through paho-mqtt 2.x, driven by hand from ``wait``."""

    def __init__(self, host, port, client_id, keepalive, inbox, username, tls):
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv311, clean_session=True)
        self.client.username_pw_set(username)
        if tls is not None:
            self.client.tls_set_context(tls)  # verifies the chain and the host name
        self.host, self.port, self.keepalive = host, port, keepalive
        self.connack = None
        self.subacks = {}
        self.client.on_socket_open = lambda client, userdata, sock: nodelay(sock)
        self.client.on_connect = self._connected
        self.client.on_subscribe = self._subscribed
        self.client.on_message = self._message
        self.inbox = inbox

    def _message(self, client, userdata, message):
        try:
            topic = message.topic
        except UnicodeError:  # not one of our (ASCII) topics: a broker gone wrong
            return
        self.inbox.append((topic, bytes(message.payload)))

    def _connected(self, client, userdata, flags, reason, properties):
        self.connack = reason

    def _subscribed(self, client, userdata, mid, reasons, properties):
        self.subacks[mid] = reasons

    def socket(self):
        return self.client.socket()

    def open(self, timeout_ms):
        self.client.connect_timeout = timeout_ms / 1000
        try:
            self.client.connect(self.host, self.port, self.keepalive)  # OSError if unreachable
        except OSError as e:
            why = getattr(e, "verify_message", None)  # ssl.SSLCertVerificationError
            if why:
                raise MqttError("the broker's TLS certificate failed verification: %s" % why)
            raise
        start = ticks_ms()
        while self.connack is None:
            left = timeout_ms - _elapsed(start)
            if left <= 0:
                raise OSError("no CONNACK within %d ms" % timeout_ms)
            self.wait(left)
        if self.connack.is_failure:
            raise MqttError("the broker refused the connection: %s" % self.connack)

    def subscribe(self, topic, qos, timeout_ms):
        rc, mid = self.client.subscribe(topic, qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise OSError("cannot subscribe: %s" % paho.error_string(rc))
        start = ticks_ms()
        while mid not in self.subacks:
            left = timeout_ms - _elapsed(start)
            if left <= 0:
                raise OSError("no SUBACK for %s within %d ms" % (topic, timeout_ms))
            self.wait(left)
        if self.subacks.pop(mid)[0].is_failure:
            raise MqttError("the broker refused the subscription to %s" % topic)

    def publish(self, topic, payload, qos):
        info = self.client.publish(topic, payload, qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise OSError("publish failed: %s" % paho.error_string(info.rc))

    def wait(self, timeout_ms):
        """Wait up to ``timeout_ms`` for the socket, then read every packet that is there."""
        sock = self.client.socket()
        if sock is None:
            raise OSError("not connected")
        writing = [sock] if self.client.want_write() else []
        buffered = _pending(sock)
        readable, writable, _ = select.select([sock], writing, [], 0 if buffered else max(timeout_ms, 0) / 1000)
        if writable:
            self._check(self.client.loop_write())
        readable = readable or buffered
        while readable:
            self._check(self.client.loop_read())
            sock = self.client.socket()
            readable = sock is not None and (_pending(sock) or select.select([sock], [], [], 0)[0])
        self._check(self.client.loop_misc())  # keep-alive

    def _check(self, rc):
        if rc != paho.MQTT_ERR_SUCCESS:
            raise OSError("connection lost: %s" % paho.error_string(rc))

    def close(self):
        if self.client.is_connected():
            self.client.disconnect()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
