"""The transport of one charging session: MQTT for the link and for the gateway.

A thin adapter around the sans-IO ``session.Session``: it publishes the session's link
messages on the session's topic towards the peer (``topics.link_topics``: built from the
random session id, so they name neither side), sends its ledger requests to the gateway
(``gateway_client.Requests``, under the connection's own random client id: a deployment
broker allows no other), feeds back what arrives, and sleeps until the next deadline or
message. One thread, no callbacks into the session from elsewhere: the same loop runs on a
Raspberry Pi and, with umqtt, on an ESP32.

After the connection to the broker was lost and is back, the link resumes (the machine
pauses while the connection is down and names the latest co-signed balance when it comes
back) and unanswered ledger requests go out again (the ledger answers a repeat
``DUPLICATE``, which the wallet books as confirmed).
"""
from plugpay.protocol import topics
from plugpay.protocol.port import ticks_diff, ticks_ms

from .gateway_client import DEFAULT_RESEND_MS as RESEND_MS
from .gateway_client import Requests

POLL_MAX_MS = 50  # never sleep longer: a slow clock or a lost wake-up costs this at most


class SessionRunner:
    """Runs ``session`` over ``mqtt`` (a connected ``firmware.mqtt.Mqtt``) until it is
    finished; ``now`` is milliseconds of the link's clock (``ticks_ms`` unless given)."""

    def __init__(self, session, mqtt, now=None, on_step=None):
        self.session = session
        self.mqtt = mqtt
        self.clock = now or _Ticks()
        self.on_step = on_step
        to_responder, to_initiator = topics.link_topics(session.terms.session_id)
        initiator = session.terms.initiator
        self.outgoing = to_responder if initiator else to_initiator
        self.incoming = to_initiator if initiator else to_responder
        self.requests = Requests(mqtt.client_id)
        for topic in self.requests.subscriptions() + [self.incoming]:
            mqtt.subscribe(topic, 1)
        self.connects = mqtt.connects
        self.published = 0
        self.received = 0
        self.sent_at = {}  # ledger request key -> when it last went out

    def step(self, max_wait_ms=POLL_MAX_MS):
        """Wait for input up to the session's next deadline, handle it, send the output."""
        s = self.session
        now = self.clock()
        deadline = s.next_deadline()
        wait = max_wait_ms if deadline is None else max(0, min(max_wait_ms, deadline - now))
        messages = self.mqtt.poll(wait)
        now = self.clock()
        if self.mqtt.connects != self.connects:
            self._reconnected(now)
        elif not self.mqtt.connected:
            s.connection_lost(now)
        for topic, payload in messages:
            if topic == self.incoming:
                self.received += 1
                s.link_received(payload, now)
            else:
                answer = self.requests.on_message(topic, payload)
                if answer is not None:
                    self.sent_at.pop(answer[0], None)
                    s.ledger_answer(answer[1].encode(), now)
        s.tick(now)
        self._resend_ledger_requests(now)
        self.flush()
        if self.on_step is not None:
            self.on_step(s, now)

    def flush(self):
        s = self.session
        for data in s.link_messages():
            self.published += 1
            self.mqtt.publish(self.outgoing, data, 1)
        for kind, raw in s.ledger_requests():
            topic, payload, key = self.requests.submit(raw) if kind == "submit" else self.requests.query(raw)
            self.mqtt.publish(topic, payload, 1)
            self.sent_at[key] = self.clock()

    def _resend_ledger_requests(self, now):
        """An answer can be lost on a live connection too (the gateway gave up on the
        ledger): a request unanswered for ``RESEND_MS`` goes again (see gateway_client)."""
        for topic, payload, key in self.requests.pending():
            if now - self.sent_at.get(key, now) >= RESEND_MS:
                self.mqtt.publish(topic, payload, 1)
                self.sent_at[key] = now

    def run(self, timeout_ms=None):
        """Step until the session is finished (or ``timeout_ms`` passed); True if finished."""
        start = self.clock()
        self.flush()
        while not self.session.finished:
            if timeout_ms is not None and self.clock() - start > timeout_ms:
                return False
            self.step()
        return True

    def _reconnected(self, now):
        """The broker is back: resume the link and send again what waits for an answer."""
        self.connects = self.mqtt.connects
        self.session.reconnected(now)
        for topic, payload, key in self.requests.pending():
            self.mqtt.publish(topic, payload, 1)
            self.sent_at[key] = now


class _Ticks:
    """Milliseconds since the runner started, from ``ticks_ms`` (wraps safely)."""

    def __init__(self):
        self.start = ticks_ms()

    def __call__(self):
        return ticks_diff(ticks_ms(), self.start)
