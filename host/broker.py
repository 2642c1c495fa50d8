"""MQTT broker start-up: broker URLs and how to reach them, and the brokers the host runs.

Mosquitto is the production broker: ``mqtt://host[:port]`` (1883) in the clear, or
``mqtts://host[:port]`` (8883) over TLS, as a deployment broker set up by ``plugpay broker
init`` runs it (``host.deployment``: TLS and topic ACLs). A TLS client always verifies the
broker: its certificate must chain to the given CA file (else to the system's CAs) and name
the host connected to. When no URL is given the host starts amqtt in its own asyncio loop,
so one command works on a fresh machine. The embedded broker runs only the
anonymous-login plugin: amqtt's default packet and event loggers and ``$SYS`` publisher
cost time on every message and serve nobody here.

TCP_NODELAY: amqtt's listener is ``asyncio.start_server``, and asyncio sets TCP_NODELAY on
every TCP transport it creates (``asyncio.selector_events``), so the accepted sockets have
it (checked in tests/test_gateway.py). Mosquitto needs ``set_tcp_nodelay true``.
"""
import logging
import os
import socket
import ssl
import subprocess
import time
import urllib.parse

from plugpay.host import cluster

log = logging.getLogger("plugpay.broker")

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
SCHEMES = {"mqtt": (False, DEFAULT_PORT), "mqtts": (True, DEFAULT_TLS_PORT)}
MOSQUITTO = "/usr/sbin/mosquitto"


def parse_url(url):
    """``(host, port, tls)`` of an ``mqtt://host[:port]`` or ``mqtts://host[:port]`` URL,
    or ``ValueError`` naming the problem."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:  # a port that is not a number or out of range
        raise ValueError("broker URL %r: %s" % (url, e))
    if parts.scheme not in SCHEMES:
        raise ValueError("broker URL %r: expected mqtt://host:port or mqtts://host:port (TLS)" % url)
    if not parts.hostname:
        raise ValueError("broker URL %r: no host" % url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("broker URL %r: user names and passwords do not go in the URL" % url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("broker URL %r: unexpected path, query or fragment" % url)
    if port == 0:
        raise ValueError("broker URL %r: port 0" % url)
    tls, default = SCHEMES[parts.scheme]
    return parts.hostname, default if port is None else port, tls


def url(host, port, tls=False):
    return "%s://%s:%d" % ("mqtts" if tls else "mqtt", "[%s]" % host if ":" in host else host, port)


def tls_context(ca_file=None):
    """A client's TLS context that verifies the broker: its certificate chains to
    ``ca_file`` (PEM; the system's CAs when None) and names the host. ``ValueError``
    naming the file if it is no CA certificate file."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as e:  # before OSError, which it is too
        raise ValueError("CA file %s: no PEM certificate in it (%s)" % (ca_file, e.reason or e))
    except OSError as e:
        raise ValueError("CA file %s: %s" % (ca_file, e.strerror or e))


class Endpoint:
    """A broker to connect to: ``host``, ``port``, ``tls`` (a verifying ``ssl.SSLContext``
    for ``mqtts://``, None for ``mqtt://``) and, for a host service, its ``login``
    ``(user, password)``. ``ca_file`` is for ``mqtts://`` only: given with ``mqtt://`` it
    is refused, so nobody believes a plain connection is verified."""

    def __init__(self, url, ca_file=None, login=None):
        self.host, self.port, tls = parse_url(url)
        if ca_file and not tls:
            raise ValueError("CA file %s: the broker URL %r is not TLS (use mqtts://)" % (ca_file, url))
        self.tls = tls_context(ca_file) if tls else None
        self.ca_file = ca_file if tls else None
        self.login = login

    @property
    def url(self):
        return url(self.host, self.port, self.tls is not None)

    def device(self, username=None):
        """A device connection (``firmware.mqtt.Mqtt``, not yet connected) to this broker."""
        from plugpay.firmware.mqtt import Mqtt

        return Mqtt(self.host, self.port, username=username, tls=self.tls)


class EmbeddedBroker:
    """amqtt listening on ``host:port`` inside the running asyncio loop;
    ``async with EmbeddedBroker(host, port):`` stops it on the way out."""

    def __init__(self, host="127.0.0.1", port=DEFAULT_PORT):
        self.host = host
        self.port = port
        self.broker = None

    @property
    def url(self):
        return url(self.host, self.port)

    async def start(self):
        from amqtt.broker import Broker  # here, not on top: a command that only connects needs no amqtt
        from amqtt.errors import BrokerError

        bind = "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": bind}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except BrokerError as e:
            raise OSError("cannot start the embedded MQTT broker on %s: %s" % (self.url, e.__cause__ or e))
        self.broker = broker
        log.info("embedded amqtt broker listening on %s", self.url)

    async def stop(self):
        if self.broker is not None:
            broker, self.broker = self.broker, None
            await broker.shutdown()
            log.info("embedded amqtt broker stopped")

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()


class MosquittoProcess:
    """A throw-away ``mosquitto`` for tests and benchmarks (in production Mosquitto runs as
    a system service or ``plugpay broker run``); a context manager that always stops it.

    Plain, it listens on a free loopback port with anonymous access. With ``deployment``
    (a ``host.deployment.load`` record) it runs that deployment's configuration: ``url``
    is its device listener on 127.0.0.1 (mqtts), ``gateway_url`` its gateway listener.
    Its log goes to ``directory``/mosquitto.log either way."""

    def __init__(self, directory, executable=MOSQUITTO, deployment=None):
        self.host = "127.0.0.1"
        self.executable = executable
        self.deployment = deployment
        self.log = os.path.join(directory, "mosquitto.log")
        if deployment is None:
            self.port = cluster.free_ports(1, self.host)[0]
            self.config = os.path.join(directory, "mosquitto.conf")
        else:
            self.port = deployment["port"]
            self.config = os.path.join(deployment["dir"], "mosquitto.conf")
        self.proc = None

    @property
    def url(self):
        return url(self.host, self.port, tls=self.deployment is not None)

    @property
    def gateway_url(self):
        from plugpay.host import deployment

        return deployment.gateway_url(self.deployment)

    def __enter__(self):
        ports = [self.port]
        if self.deployment is None:
            with open(self.config, "w") as f:
                f.write("listener %d %s\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
                        "log_dest stderr\n" % (self.port, self.host))
        else:
            ports.append(self.deployment["gateway_port"])
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.executable, "-c", self.config], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5.0
        for port in ports:
            while True:
                try:
                    socket.create_connection((self.host, port), timeout=0.5).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.__exit__()
                        raise RuntimeError("mosquitto did not start on %s port %d; see %s"
                                           % (self.host, port, self.log))
                    time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
