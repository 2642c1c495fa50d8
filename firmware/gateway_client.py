"""A device's requests to the host gateway (ledger queries and submits, and sealed ones:
RA registration and the faucet) over MQTT, and their answers.

``Requests`` is the bookkeeping without I/O: it names the topic and payload of each
request, remembers what waits for an answer, and matches what arrives on this client's
reply topics (``protocol.topics``). ``GatewayClient`` is the thin blocking helper over an
``Mqtt`` connection (``firmware.mqtt``) for a role that asks one thing at a time. Its
topic client id is the connection's MQTT client id unless given: a deployment broker lets
a connection use only the request and reply topics of its own client id (``%c`` in its
ACL, ``host.deployment``).

Sealed requests. Whatever names the device's identity or lists several of its accounts
(an RA registration, a faucet request) goes sealed (``protocol.sealed``) to the RA key
of the newest epoch the wallet knows, so the broker sees neither; the gateway answers
sealed, and only this device can open the answer. The sealing code is loaded with the
first sealed request: a board whose keys last and whose coins need no redeem never loads it.

Matching. A ledger or query request is known by the SHA-256 of its payload: the
gateway's ``Result.request_digest``. A sealed request is known by the SHA-256 of its
sealed bytes, which its ``SealedReply`` names; the ``ReplyKey`` that opens the answer
waits beside it.

Every answer is untrusted: bytes that do not decode or open, answers nobody waits for
(late, or for another kind of request) and messages on other topics are counted in
``dropped`` and never raise. A sealed reply that does not open leaves its request waiting:
anyone who saw the request can name it, only the gateway can seal to it.

Re-sending is the caller's policy; ``GatewayClient`` follows this one. On a live
connection QoS 1 delivers, so an answer is lost only when the connection to the broker
was (sessions are clean: the broker drops what it held for us) or when the gateway gave up
on the ledger. So every ``pending()`` request is sent again after a reconnect, and again
when it has waited ``resend_ms`` without an answer: the very same bytes, sealed ones too.
Re-sending is safe: the gateway forwards identical requests in flight once and answers
everybody, the ledger answers a request it already applied ``DUPLICATE`` (the wallet books
that as confirmed; the faucet counts it as minted), and the RA signs a registration it
already signed once more (``REPLAYED_NONCE`` is only for another batch under a used nonce).
"""
from plugpay.protocol import topics
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256, ticks_diff, ticks_ms, urandom

DEFAULT_TIMEOUT_MS = 10000
DEFAULT_RESEND_MS = 2000


def new_client_id():
    """A random topic client id: nothing on the broker links two sessions of one device."""
    return "d" + urandom(12).hex()


def newest_ra_key(ra_pubkeys):
    """``(epoch, pubkey)`` of the newest epoch in ``ra_pubkeys`` ({epoch: pubkey}, as a
    wallet holds them): the key sealed requests go to."""
    if not ra_pubkeys:
        raise ValueError("no RA public key to seal the request to")
    epoch = max(ra_pubkeys)
    return epoch, ra_pubkeys[epoch]


class GatewayError(Exception):
    """A request to the gateway that got no usable answer; the text says which and why."""


class GatewayTimeout(GatewayError):
    """No answer within the caller's timeout."""


class GatewayRefused(GatewayError):
    """The gateway refused a sealed request in clear (it could not open or serve it);
    ``refusal`` is the ``sealed.SealedRefused``."""

    def __init__(self, text, refusal):
        super().__init__(text)
        self.refusal = refusal


class Requests:
    """Requests in flight and the matching of their answers, for client id ``cid``
    (random unless given). ``dropped`` counts what ``on_message`` threw away, by reason."""

    def __init__(self, cid=None):
        if cid is None:
            cid = new_client_id()
        if not topics.valid_client_id(cid):
            raise ValueError("client id %r: use 1-40 letters, digits, '_', '.', '-'" % (cid,))
        self.cid = cid
        self._pending = {}  # key -> (request kind, topic, payload, ReplyKey of a sealed one)
        self.answered = 0
        self.dropped = {"other_topic": 0, "malformed": 0, "not_awaited": 0}

    def subscriptions(self):
        """The reply topics of this client id: subscribe to them before the first request."""
        return [topics.topic(kind, self.cid) for kind in topics.REPLIES]

    def _add(self, kind, payload, key, reply_key=None):
        topic = topics.topic(kind, self.cid)
        self._pending[key] = (kind, topic, payload, reply_key)
        return topic, payload, key

    def submit(self, op_bytes):
        """``(topic, payload, key)`` of a ledger request (a signed operation's bytes)."""
        op_bytes = bytes(op_bytes)
        return self._add(topics.LEDGER_SUBMIT, op_bytes, sha256(op_bytes))

    def query(self, query_bytes):
        """``(topic, payload, key)`` of an encoded ``ledger_ops.Query``."""
        query_bytes = bytes(query_bytes)
        return self._add(topics.LEDGER_QUERY, query_bytes, sha256(query_bytes))

    def sealed(self, inner_bytes, epoch, host_pubkey):
        """``(topic, payload, key)`` of ``inner_bytes`` (an encoded ``RegistrationRequest``
        or ``FaucetRequest``) sealed to ``host_pubkey``, the RA key of ``epoch``; the key is
        the SHA-256 of the sealed bytes. Its answer is the inner reply's bytes."""
        from plugpay.protocol import sealed

        payload, reply_key = sealed.seal_request(bytes(inner_bytes), epoch, host_pubkey)
        return self._add(topics.HOST_SEALED, payload, reply_key.request_digest, reply_key)

    def pending(self):
        """``[(topic, payload, key)]`` still waiting for an answer: what to re-send."""
        return [(topic, payload, key) for key, (_, topic, payload, _) in self._pending.items()]

    def cancel(self, key):
        """Stop waiting for ``key`` (given up); a late answer is then dropped."""
        self._pending.pop(key, None)

    def _sealed_waiting(self):
        for waiting in self._pending.values():
            if waiting[3] is not None:
                return True
        return False

    def on_message(self, topic, payload):
        """``(key, answer)`` for the answer to a pending request, else None (counted). The
        answer is a ``ledger_ops.Result`` for a ledger request; for a sealed one, the inner
        reply's bytes, or the gateway's clear refusal as a ``sealed.SealedRefused``."""
        parsed = topics.parse(topic)
        if parsed is None or parsed[1] != self.cid or parsed[0] not in topics.REPLIES:
            self.dropped["other_topic"] += 1
            return None
        kind = parsed[0]
        answer = None
        if kind != topics.LEDGER_RESULT and not self._sealed_waiting():
            self.dropped["not_awaited"] += 1  # nothing sealed waits: the sealing code stays unloaded
            return None
        try:
            payload = bytes(payload)
            if kind == topics.LEDGER_RESULT:
                answer = L.Result.decode(payload)
                key = answer.request_digest
            else:
                from plugpay.protocol import sealed

                key = sealed.reply_digest(payload)
        except (DecodeError, TypeError):
            key = None
        if key is None:
            self.dropped["malformed"] += 1
            return None
        waiting = self._pending.get(key)
        if waiting is None or topics.REPLY_TO[waiting[0]] != kind:
            self.dropped["not_awaited"] += 1
            return None
        if answer is None:
            from plugpay.protocol import aead, sealed

            try:
                answer = sealed.open_reply(waiting[3], payload)
            except sealed.SealedRefused as refused:
                answer = refused
            except (DecodeError, aead.AuthError):
                self.dropped["malformed"] += 1
                return None
        del self._pending[key]
        self.answered += 1
        return key, answer


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
        return self._ask(self.requests.submit(op_bytes), "ledger submit", timeout_ms)

    def query(self, query_bytes, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The ledger's ``Result`` for an encoded ``Query``."""
        return self._ask(self.requests.query(query_bytes), "ledger query", timeout_ms)

    def faucet(self, outputs, ra_pubkeys, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The ``Result`` of a ``FaucetRequest`` for ``outputs`` (``TxOutput`` list) under a
        random nonce, sealed to the newest of ``ra_pubkeys`` (the wallet's {epoch: pubkey}).
        Each output is minted in a transaction of its own: when ok, the data is the list of
        their txhashes, output i's coin being at ``(data[i], 0)``."""
        outputs = list(outputs)
        request = L.FaucetRequest(int.from_bytes(urandom(6), "big"), outputs).encode()
        answer = self._sealed(request, ra_pubkeys, "faucet request", timeout_ms)
        try:
            result = L.Result.decode(answer)
        except DecodeError as e:
            raise GatewayError("the faucet's answer is no ledger result: %s" % e)
        if result.request_digest != sha256(request):
            raise GatewayError("the faucet's answer names another request")
        if result.ok and not _txhashes(result.data, len(outputs)):
            raise GatewayError("the faucet's answer does not name one 32-byte txhash per output")
        return result

    def redeem(self, request_bytes, ra_pubkeys, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The issuer's answer (a ledger ``Result`` for the ``Redeem``, bytes for
        ``wallet.handle_result``) to a ``RedeemRequest``, sealed like a registration: it
        ties the redeemed coins to the fresh keys, which nobody else may see together."""
        return self._sealed(request_bytes, ra_pubkeys, "redeem", timeout_ms)

    def register(self, request_bytes, ra_pubkeys, timeout_ms=DEFAULT_TIMEOUT_MS):
        """The RA's reply bytes (for ``wallet.refill_reply``) to a registration request,
        sealed to the newest of ``ra_pubkeys`` (the wallet's {epoch: pubkey})."""
        return self._sealed(request_bytes, ra_pubkeys, "RA registration", timeout_ms)

    def _sealed(self, inner, ra_pubkeys, what, timeout_ms):
        epoch, pubkey = newest_ra_key(ra_pubkeys)
        answer = self._ask(self.requests.sealed(inner, epoch, pubkey), what, timeout_ms)
        from plugpay.protocol import sealed

        if isinstance(answer, sealed.SealedRefused):
            raise GatewayRefused("the gateway refused the sealed %s: %s" % (what, answer), answer)
        return answer

    def _ask(self, request, what, timeout_ms):
        topic, payload, key = request
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
                        raise self._timeout(what, key, timeout_ms, sends)
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

    def _timeout(self, what, key, timeout_ms, sends):
        link = ("connected to " if self.mqtt.connected else "no connection to ") + self.mqtt.url
        return GatewayTimeout("no answer from the gateway to the %s %s within %d ms (sent %d time(s); %s)"
                              % (what, key.hex()[:16], timeout_ms, sends, link))


def _txhashes(data, count):
    if not isinstance(data, list) or len(data) != count:
        return False
    for txhash in data:
        if not isinstance(txhash, bytes) or len(txhash) != 32:
            return False
    return True
