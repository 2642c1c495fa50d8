"""Real MQTT parts for tests: the gateway (and the embedded amqtt broker) on an asyncio loop
in a background thread, a paho client playing a device, and one playing an observer of
every topic. Mosquitto is ``plugpay.host.broker.MosquittoProcess``."""
import collections
import os
import queue
import socket
import threading

import paho.mqtt.client as paho

from plugpay.host.broker import EmbeddedBroker
from plugpay.host.gateway import Gateway
from plugpay.host.stack import LoopThread
from plugpay.protocol import topics


class GatewayRunner:
    """The gateway, and with ``embedded=True`` the amqtt broker, running in a ``LoopThread``."""

    def __init__(self, lc, host, port, embedded, **gateway_options):
        self.lc = lc
        self.host, self.port = host, port
        self.embedded = embedded
        self.options = gateway_options
        self.broker = None
        self.gateway = None
        self.thread = LoopThread()

    async def _start(self):
        if self.embedded:
            self.broker = EmbeddedBroker(self.host, self.port)
            await self.broker.start()
        self.gateway = Gateway(self.lc.config, self.lc.secrets, self.host, self.port, **self.options)
        await self.gateway.start()

    async def _stop(self):
        if self.gateway is not None:
            await self.gateway.stop()
        if self.broker is not None:
            await self.broker.stop()

    def __enter__(self):
        try:
            self.thread.run(self._start())
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.thread.run(self._stop())
        finally:
            self.thread.close()

    def stats(self):
        return self.thread.call(lambda: collections.Counter(self.gateway.stats))


class Device:
    """A paho client (network thread of its own) with TCP_NODELAY, as a device runs it:
    ``ask(kind, payload)`` publishes a request and returns the next answer on its reply topic."""

    def __init__(self, host, port, cid="dev-1"):
        self.cid = cid
        self.answers = {kind: queue.Queue() for kind in topics.REPLIES}
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="device-" + cid,
                                  protocol=paho.MQTTv311)
        self.client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe([(topics.topic(kind, cid), 1) for kind in topics.REPLIES])
        if not subscribed.wait(5):
            raise TimeoutError("no SUBACK")

    def _message(self, client, userdata, message):
        parsed = topics.parse(message.topic)
        if parsed is not None:
            self.answers[parsed[0]].put(message.payload)

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def ask(self, kind, payload, timeout=10.0):
        self.publish(topics.topic(kind, self.cid), payload)
        return self.answers[topics.REPLY_TO[kind]].get(timeout=timeout)

    def nothing_on(self, reply_kind, wait=0.3):
        """True if no answer arrives on the reply topic within ``wait`` seconds."""
        try:
            self.answers[reply_kind].get(timeout=wait)
            return False
        except queue.Empty:
            return True

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class Observer:
    """What anyone who can subscribe to the broker sees: a paho client on ``#`` keeping
    every (topic, payload) it gets, in order."""

    def __init__(self, host, port):
        self.messages = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="observer-" + os.urandom(4).hex(),
                                  protocol=paho.MQTTv311)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe("#", 1)
        if not subscribed.wait(5):
            raise TimeoutError("no SUBACK")

    def _message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def seen(self):
        with self.lock:
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
