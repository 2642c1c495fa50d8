"""MQTT broker start-up: broker URLs, and the embedded amqtt broker.

Mosquitto is the production broker (``mqtt://host:port``); when none is given the host
starts amqtt in its own asyncio loop, so one command works on a fresh machine. The
embedded broker runs only the anonymous-login plugin: amqtt's default packet and event
loggers and ``$SYS`` publisher cost time on every message and serve nobody here.

TCP_NODELAY: amqtt's listener is ``asyncio.start_server``, and asyncio sets TCP_NODELAY on
every TCP transport it creates (``asyncio.selector_events``), so the accepted sockets have
it (checked in tests/test_gateway.py). Mosquitto needs ``set_tcp_nodelay true``.
"""
import logging
import os
import socket
import subprocess
import time
import urllib.parse

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from plugpay.host import cluster

log = logging.getLogger("plugpay.broker")

DEFAULT_PORT = 1883


def parse_url(url):
    """``(host, port)`` of an ``mqtt://host[:port]`` URL, or ``ValueError`` naming the problem."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:  # a port that is not a number or out of range
        raise ValueError("broker URL %r: %s" % (url, e))
    if parts.scheme != "mqtt":
        raise ValueError("broker URL %r: expected mqtt://host:port (TLS and websockets are not supported)" % url)
    if not parts.hostname:
        raise ValueError("broker URL %r: no host" % url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("broker URL %r: user names and passwords are not supported" % url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("broker URL %r: unexpected path, query or fragment" % url)
    if port == 0:
        raise ValueError("broker URL %r: port 0" % url)
    return parts.hostname, DEFAULT_PORT if port is None else port


def url(host, port):
    return "mqtt://%s:%d" % ("[%s]" % host if ":" in host else host, port)


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
    """A throw-away ``mosquitto`` on a free loopback port, for tests and benchmarks (in
    production Mosquitto runs as a system service); a context manager that always stops it."""

    def __init__(self, directory, executable="/usr/sbin/mosquitto"):
        self.host = "127.0.0.1"
        self.port = cluster.free_ports(1, self.host)[0]
        self.executable = executable
        self.config = os.path.join(directory, "mosquitto.conf")
        self.log = os.path.join(directory, "mosquitto.log")
        self.proc = None

    @property
    def url(self):
        return url(self.host, self.port)

    def __enter__(self):
        with open(self.config, "w") as f:
            f.write("listener %d %s\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
                    "log_dest file %s\n" % (self.port, self.host, self.log))
        self.proc = subprocess.Popen([self.executable, "-c", self.config], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5.0
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("mosquitto did not start on %s; see %s" % (self.url, self.log))
                time.sleep(0.02)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
