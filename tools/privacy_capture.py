"""What an outside observer collects for ``privacy_observer``: every message the broker
carries (a subscriber on ``#``, as the broker's operator or anyone its ACL lets read
everything) and every request in every block of a running PBFT ledger."""
import asyncio
import os
import threading
import time

import paho.mqtt.client as paho

from plugpay.tools import ledger_inspect


class Capture:
    """A paho client subscribed to ``#`` on its own network thread, recording
    ``(monotonic time, topic, payload)`` of every message; ``start`` returns once the
    broker acknowledged the subscription, so nothing published after it is missed.

    ``username``/``password`` log in (the operator's account where topic ACLs keep devices
    in their lane); ``ca_file`` turns on TLS and verifies the broker against that CA."""

    def __init__(self, host, port, username=None, password=None, ca_file=None):
        self.host, self.port = host, port
        self.records = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._refused = None
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="observer-" + os.urandom(6).hex(),
                                  protocol=paho.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file)
        self.client.on_connect = self._connected
        self.client.on_subscribe = self._subscribed
        self.client.on_message = self._message

    def _connected(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            self._refused = "the broker refused the connection: %s" % reason
            self._ready.set()
        else:
            client.subscribe("#", qos=1)

    def _subscribed(self, client, userdata, mid, reasons, properties):
        if any(r.is_failure for r in reasons):
            self._refused = "the broker refused the subscription to #: %s" % reasons[0]
        self._ready.set()

    def _message(self, client, userdata, message):
        with self._lock:
            self.records.append((time.monotonic(), message.topic, message.payload))

    def start(self, timeout=5.0):
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self._ready.wait(timeout) or self._refused:
            self.stop()
            raise ConnectionError(self._refused or "no subscription to # on %s:%d within %.1f s"
                                  % (self.host, self.port, timeout))
        return self

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self):
        """A copy of what was recorded so far, in arrival order."""
        with self._lock:
            return list(self.records)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


async def read_requests(read):
    """Every request in blocks 1..tip, in chain order, from a ``ledger_inspect.LedgerReader``
    (each block taken on f+1 matching answers and its hash checked)."""
    tip = await read.tip()
    blocks = await ledger_inspect.in_chunks(lambda h: read.block(h, tip), list(range(1, tip + 1)))
    return [r.raw for block in blocks for r in block.requests]


def ledger_requests(config_path, timeout=10.0):
    """``read_requests`` on the cluster of ``config_path`` (a client's cluster config)."""

    async def fetch():
        async with ledger_inspect.reader(config_path, timeout) as read:
            return await read_requests(read)

    return asyncio.run(fetch())
