"""A device's requests to the host gateway (ledger, faucet, RA) over MQTT, and their answers.

``Requests`` is the bookkeeping without I/O: it names the topic and payload of each
request, remembers what waits for an answer, and matches what arrives on this client's
reply topics (``protocol.topics``). ``GatewayClient`` is the thin blocking helper over an
``Mqtt`` connection (``firmware.mqtt``) for a role that asks one thing at a time. Its
topic client id is the connection's MQTT client id unless given: a deployment broker lets
a connection use only the request and reply topics of its own client id (``%c`` in its
ACL, ``host.deployment``).

Matching. A ledger, query or faucet request is known by the SHA-256 of its payload: the
gateway's ``Result.request_digest`` (for the faucet, the gateway re-stamps the ledger's
answer with the digest of the device's ``FaucetRequest``). A registration is known by its
nonce, which both RA replies carry; a ``RegistrationError`` with no nonce (the RA could
not decode the request at all) answers the one registration waiting, if exactly one is.

Every answer is untrusted: bytes that do not decode, answers nobody waits for (late, or
for another kind of request) and messages on other topics are counted in ``dropped`` and
never raise.

Re-sending is the caller's policy; ``GatewayClient`` follows this one. On a live
connection QoS 1 delivers, so an answer is lost only when the connection to the broker
was (sessions are clean: the broker drops what it held for us) or when the gateway gave up
on the ledger. So every ``pending()`` request is sent again after a reconnect, and again
when it has waited ``resend_ms`` without an answer. Re-sending is safe: the gateway
forwards identical requests in flight once and answers everybody, the ledger answers a
request it already applied ``DUPLICATE`` (the wallet books that as confirmed), and the RA
signs a registration it already signed once more (``REPLAYED_NONCE`` is only for another
batch under a used nonce).
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import topics
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256, ticks_diff, ticks_ms, urandom

DEFAULT_TIMEOUT_MS = 10000
DEFAULT_RESEND_MS = 2000

_WHAT = {
    topics.LEDGER_SUBMIT: "ledger submit",
    topics.LEDGER_QUERY: "ledger query",
    topics.FAUCET_REQUEST: "faucet request",
    topics.RA_REGISTER: "RA registration",
}


def new_client_id():
    """A random topic client id: nothing on the broker links two sessions of one device."""
    return "d" + urandom(12).hex()


class GatewayError(Exception):
    """A request to the gateway that got no usable answer; the text says which and why."""


class GatewayTimeout(GatewayError):
    """No answer within the caller's timeout."""


class Requests:
    """Requests in flight and the matching of their answers, for client id ``cid``
    (random unless given). ``dropped`` counts what ``on_message`` threw away, by reason."""

    def __init__(self, cid=None):
        if cid is None:
            cid = new_client_id()
        if not topics.valid_client_id(cid):
            raise ValueError("client id %r: use 1-40 letters, digits, '_', '.', '-'" % (cid,))
        self.cid = cid
        self._pending = {}  # key -> (request kind, topic, payload)
        self.answered = 0
        self.dropped = {"other_topic": 0, "malformed": 0, "not_awaited": 0}

    def subscriptions(self):
        """The reply topics of this client id: subscribe to them before the first request."""
        return [topics.topic(kind, self.cid) for kind in topics.REPLIES]

    def _add(self, kind, payload, key):
        topic = topics.topic(kind, self.cid)
        self._pending[key] = (kind, topic, payload)
        return topic, payload, key

    def submit(self, op_bytes):
        """``(topic, payload, key)`` of a ledger request (a signed operation's bytes)."""
        op_bytes = bytes(op_bytes)
        return self._add(topics.LEDGER_SUBMIT, op_bytes, sha256(op_bytes))

    def query(self, query_bytes):
        """``(topic, payload, key)`` of an encoded ``ledger_ops.Query``."""
        query_bytes = bytes(query_bytes)
        return self._add(topics.LEDGER_QUERY, query_bytes, sha256(query_bytes))

    def faucet(self, request_bytes):
        """``(topic, payload, key)`` of an encoded ``ledger_ops.FaucetRequest``."""
        request_bytes = bytes(request_bytes)
        return self._add(topics.FAUCET_REQUEST, request_bytes, sha256(request_bytes))

    def register(self, request_bytes):
        """``(topic, payload, key)`` of a registration request (the wallet's
        ``refill_request()``); the key is its nonce. Bytes that are no registration
        request raise ``DecodeError``: they would never be answered by nonce."""
        request_bytes = bytes(request_bytes)
        nonce = ra.RegistrationRequest.decode(request_bytes).nonce
        return self._add(topics.RA_REGISTER, request_bytes, nonce)

    def pending(self):
        """``[(topic, payload, key)]`` still waiting for an answer: what to re-send."""
        return [(topic, payload, key) for key, (_, topic, payload) in self._pending.items()]

    def cancel(self, key):
        """Stop waiting for ``key`` (given up); a late answer is then dropped."""
        self._pending.pop(key, None)

    def on_message(self, topic, payload):
        """``(key, answer)`` for the answer to a pending request (a ``ledger_ops.Result``,
        or a ``RegistrationResponse`` / ``RegistrationError``), else None (counted)."""
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] != self.cid or parsed[0] not in topics.REPLIES:
            self.dropped["other_topic"] += 1
            return None
        kind = parsed[0]
        try:
            if kind == topics.LEDGER_RESULT:
                answer = L.Result.decode(bytes(payload))
                key = answer.request_digest
            else:
                answer = ra.decode_reply(bytes(payload))
                key = answer.nonce or self._sole_registration()
        except (DecodeError, TypeError):
            self.dropped["malformed"] += 1
            return None
        waiting = self._pending.get(key)
        if waiting is None or topics.REPLY_TO[waiting[0]] != kind:
            self.dropped["not_awaited"] += 1
            return None
        del self._pending[key]
        self.answered += 1
        return key, answer

    def _sole_registration(self):
        keys = [k for k, (kind, _, _) in self._pending.items() if kind == topics.RA_REGISTER]
        return keys[0] if len(keys) == 1 else b""


class GatewayClient:
    """Blocking requests to the gateway over ``mqtt`` (a connected ``Mqtt``), one at a time,
    re-sent as the module docstring says. Messages on other topics that arrive while a call
    waits go to ``on_other(topic, payload)`` if given (a role sharing the connection with
    its link), else they are dropped and counted. ``cid`` defaults to ``mqtt.client_id``."""

    def __init__(self, mqtt, cid=None, resend_ms=DEFAULT_RESEND_MS, on_other=None):
        self.mqtt = mqtt
        self.requests = Requests(cid or mqtt.client_id)
        self.resend_ms = resend_ms
        self.on_other = on_other
        self._replies = self.requests.subscriptions()
        for topic in self._replies:
            mqtt.subscribe(topic, 1)

    @property
    def cid(self):
        return self.requests.cid

    def submit(self, op_bytes, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The ledger's ``Result`` for a signed operation."""
        return self._ask(self.requests.submit(op_bytes), timeout_ms)

    def query(self, query_bytes, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The ledger's ``Result`` for an encoded ``Query``."""
        return self._ask(self.requests.query(query_bytes), timeout_ms)

    def faucet(self, outputs, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The ``Result`` of a ``FaucetRequest`` for ``outputs`` (``TxOutput`` list) under a
        random nonce; its data is the minted txhash, output ``sn`` being ``outputs[sn]``."""
        request = L.FaucetRequest(int.from_bytes(urandom(6), "big"), list(outputs))
        return self._ask(self.requests.faucet(request.encode()), timeout_ms)

    def register(self, request_bytes, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The RA's reply bytes (for ``wallet.refill_reply``) to a registration request."""
        return self._ask(self.requests.register(request_bytes), timeout_ms).encode()

    def _ask(self, request, timeout_ms):
        topic, payload, key = request
        kind = topics.parse(topic)[0]
        start = ticks_ms()
        sends = 0
        try:
            while True:
                sent_at, connects = ticks_ms(), self.mqtt.connects
                if self.mqtt.publish(topic, payload, 1):
                    sends += 1
                while ticks_diff(ticks_ms(), sent_at) < self.resend_ms and self.mqtt.connects == connects:
                    left = timeout_ms - ticks_diff(ticks_ms(), start)
                    if left <= 0:
                        raise self._timeout(kind, key, timeout_ms, sends)
                    wait = min(left, self.resend_ms - ticks_diff(ticks_ms(), sent_at))
                    answer = None
                    for t, p in self.mqtt.poll(max(wait, 0)):  # the whole batch: others may follow
                        if t not in self._replies and self.on_other is not None:
                            self.on_other(t, p)
                            continue
                        got = self.requests.on_message(t, p)
                        if got is not None and got[0] == key:
                            answer = got[1]
                    if answer is not None:
                        return answer
        finally:
            self.requests.cancel(key)

    def _timeout(self, kind, key, timeout_ms, sends):
        link = ("connected to " if self.mqtt.connected else "no connection to ") + self.mqtt.url
        return GatewayTimeout("no answer from the gateway to the %s %s within %d ms (sent %d time(s); %s)"
                              % (_WHAT[kind], key.hex()[:16], timeout_ms, sends, link))
