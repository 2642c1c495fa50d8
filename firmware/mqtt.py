"""The device's MQTT connection: synchronous and poll-driven, on MicroPython and CPython.

One ``Mqtt`` per session, driven by the role's own loop: ``connect``, ``subscribe``,
``publish``, and ``poll(timeout_ms)`` for what arrived. Nothing runs in the background, so
a role stays single-threaded and deterministic. The backend is picked at import time, like
the other shims (``protocol.port``): paho-mqtt on CPython (its ``loop_read`` /
``loop_write`` / ``loop_misc`` driven from ``poll``, no network thread), our own MQTT
3.1.1 client on MicroPython (``mqtt_socket``, which says why no registry client fits).
Both behave alike; the tests run the MicroPython one in a unix-port process against
Mosquitto and amqtt.

Privacy: without a ``client_id`` every ``Mqtt`` takes a fresh random one, so no client id
repeats across sessions. It is kept across reconnects of the same session. The MQTT user
name is what a deployment broker's ACL gives a connection its link topics by: the
connection that runs a link session logs in with the session's id (hex, ``username``);
every other connection takes a random name of the same form, so the login does not tell
which connections carry a session. Devices send no password: the broker must not know
who they are.

TLS (``mqtts://``): ``tls`` is an ``ssl.SSLContext`` that verifies the broker
(``mqtt_tls.context(ca_file)`` on either runtime, ``host.broker.tls_context`` on a host);
one that does not verify is refused here, and a broker whose certificate fails is refused
with the reason.

Every socket gets TCP_NODELAY: without it each small publish can wait ~40 ms for the
peer's delayed ACK (DESIGN.md).

Loss policy. The session is clean and nothing is queued while the link is down:
``publish`` returns False then (the message is dropped), and messages the broker had for
us are gone. ``poll`` reconnects (one attempt whenever the backoff allows, 100 ms doubling
to 2 s; an attempt may take up to the connect timeout), re-subscribes every topic and
counts the connection in ``connects``; a caller that sees ``connects`` change re-sends
what still waits for an answer (``gateway_client`` does). ``poll`` raises ``MqttError``
only when ``give_up_ms`` was given and the link has been down that long; by default it
keeps trying, and the session's own timeouts decide when to stop. ``poll`` also sends the
keep-alive pings: call it at least every ``keepalive / 2`` seconds.
"""
import time

from plugpay.protocol.port import MICROPYTHON, ticks_diff, ticks_ms, urandom

FIRST_BACKOFF_MS = 100
MAX_BACKOFF_MS = 2000
SUBACK_TIMEOUT_MS = 3000


class MqttError(Exception):
    """The broker cannot be reached, refused us, or the link stayed down past ``give_up_ms``."""


def nodelay(sock):
    """TCP_NODELAY on ``sock``. Some MicroPython builds lack the constants: the values are
    6 and 1 on Linux and in lwIP alike. A socket that refuses the option stays as it is."""
    import socket

    try:
        sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
    except (AttributeError, OSError):
        pass


def _elapsed(start):
    return ticks_diff(ticks_ms(), start)


if MICROPYTHON:
    from plugpay.firmware.mqtt_socket import SocketLink as _Link

    BACKEND = "mqtt_socket"
else:
    from plugpay.firmware.mqtt_paho import PahoLink as _Link

    BACKEND = "paho-mqtt"


def _sleep_ms(ms):
    if MICROPYTHON:
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000)


class Mqtt:
    """A poll-driven MQTT connection (see the module docstring for the loss policy)."""

    def __init__(self, host, port, client_id=None, keepalive=30, give_up_ms=None, username=None, tls=None):
        self.host = host
        self.port = port
        self.client_id = client_id or "pp" + urandom(10).hex()
        self.username = username or urandom(16).hex()
        if tls is not None:
            from plugpay.firmware import mqtt_tls

            mqtt_tls.check(tls)
        self.tls = tls
        self.keepalive = keepalive
        self.give_up_ms = give_up_ms
        self.connect_timeout_ms = 3000
        self.connects = 0  # successful connections; a change means: re-send what waits
        self.last_error = None
        self._link = None
        self._topics = []  # [(topic, qos)], renewed on every reconnect
        self._inbox = []
        self._down_since = None
        self._backoff_ms = FIRST_BACKOFF_MS
        self._last_attempt = None

    @property
    def connected(self):
        return self._link is not None

    @property
    def url(self):
        return "%s://%s:%d" % ("mqtt" if self.tls is None else "mqtts", self.host, self.port)

    def socket(self):
        """The connection's socket (None while down): for inspection, not for I/O."""
        return None if self._link is None else self._link.socket()

    def connect(self, timeout_ms=3000):
        """Connect (or raise ``MqttError`` naming the broker and the reason)."""
        self.close()
        self.connect_timeout_ms = timeout_ms
        try:
            self._open()
        except (OSError, MqttError) as e:
            raise MqttError("cannot connect to the MQTT broker at %s: %s" % (self.url, e))

    def _open(self):
        link = _Link(self.host, self.port, self.client_id, self.keepalive, self._inbox, self.username, self.tls)
        try:
            link.open(self.connect_timeout_ms)
            for topic, qos in self._topics:
                link.subscribe(topic, qos, SUBACK_TIMEOUT_MS)
        except BaseException:
            link.close()
            raise
        self._link = link
        self._down_since = None
        self._backoff_ms = FIRST_BACKOFF_MS
        self.connects += 1

    def subscribe(self, topic, qos=1):
        """Subscribe now (waiting for the SUBACK) if connected, and on every reconnect."""
        if (topic, qos) not in self._topics:
            self._topics.append((topic, qos))
        if self._link is not None:
            try:
                self._link.subscribe(topic, qos, SUBACK_TIMEOUT_MS)
            except OSError as e:
                self._lost(e)

    def publish(self, topic, payload, qos=1):
        """Send ``payload``; False if the link is down (the message is dropped)."""
        if self._link is None:
            return False
        try:
            self._link.publish(topic, payload, qos)
            return True
        except OSError as e:
            self._lost(e)
            return False

    def poll(self, timeout_ms):
        """``[(topic, payload bytes)]`` received, waiting at most ``timeout_ms`` (less as
        soon as something arrived); reconnects while the link is down. Raises ``MqttError``
        past ``give_up_ms`` of down time, or before ``connect`` / after ``close``."""
        start = ticks_ms()
        while True:
            left = timeout_ms - _elapsed(start)
            if self._link is None:
                self._reconnect()
            if self._link is not None and not self._inbox:
                try:
                    self._link.wait(left)
                except OSError as e:
                    self._lost(e)
            left = timeout_ms - _elapsed(start)
            if self._inbox or left <= 0:
                break
            if self._link is None and self._last_attempt is not None:  # until the next attempt
                _sleep_ms(max(1, min(left, self._backoff_ms - _elapsed(self._last_attempt))))
        out = self._inbox[:]
        self._inbox.clear()  # the link appends to this very list
        return out

    def _drop_link(self):
        if self._link is not None:
            try:
                self._link.close()
            except OSError:  # the connection is being given up either way
                pass
            self._link = None

    def _lost(self, error):
        self.last_error = str(error) or repr(error)
        self._drop_link()
        if self._down_since is None:
            self._down_since = ticks_ms()
            self._last_attempt = None
            self._backoff_ms = FIRST_BACKOFF_MS

    def _reconnect(self):
        if self._down_since is None:  # closed, or never connected
            raise MqttError("not connected to %s: call connect() first" % self.url)
        if self._last_attempt is not None and _elapsed(self._last_attempt) < self._backoff_ms:
            return
        if self._last_attempt is not None:
            self._backoff_ms = min(self._backoff_ms * 2, MAX_BACKOFF_MS)
        self._last_attempt = ticks_ms()
        try:
            self._open()
            return
        except (OSError, MqttError) as e:
            self.last_error = str(e) or repr(e)
        down = _elapsed(self._down_since)
        if self.give_up_ms is not None and down >= self.give_up_ms:
            raise MqttError("lost the MQTT broker at %s %d ms ago and could not reconnect: %s"
                            % (self.url, down, self.last_error))

    def close(self):
        self._drop_link()
        self._down_since = None
