"""The MQTT gateway between devices and the ledger (and the RA).

Devices speak MQTT (``protocol.topics``); the ledger is our PBFT replicas (authenticated
TCP) or a CometBFT network (its node's RPC), whichever the cluster config names
(``host.ledger_client``). The gateway subscribes to the request topics, checks every
payload, forwards good ones through one client of the engine (many requests in flight),
and publishes the answer (QoS 1) on the device's reply topic: the ledger's ``Result``,
confirmed or refused with its reason, the same bytes from either engine.

Requests that name an identity or tie accounts of one wallet together come sealed to the
RA's epoch key (``protocol.sealed``) on ``host/sealed``. The gateway opens them with the
RA's secret in the RA's thread (off the event loop), serves the inner message by its tag
through one table (``Inner`` entries: RA registration, the faucet), and seals the answer
so only the asking device reads it. A sealed request that does not open or decode gets a
clear refusal (a code and a text), is counted, and reaches neither the RA nor the faucet.

``Router`` is the decision logic, without I/O: a message in, one action out (a ``Reply``
to publish now, a ``Forward`` to carry out, or nothing), so it is tested directly.
``Gateway`` is the asyncio adapter that owns the MQTT connection, the PBFT client and the
RA's thread.

Every payload is untrusted. Ledger requests larger than ``MAX_REQUEST_BYTES`` are answered
``TOO_LARGE``, ones that do not decode ``MALFORMED`` (or ``UNKNOWN_OP``), both with the
payload's digest as the ledger itself would, and reach no replica. Messages on topics that
are not ours or with a bad client id are counted and dropped: there is nobody to answer.
Identical payloads of one kind in flight at once are forwarded once and the answer goes to
every asker.
"""
import asyncio
import collections
import concurrent.futures
import logging
import os

from plugpay.host import faucet as faucet_mod
from plugpay.host import issuer as issuer_mod
from plugpay.host import ra as ra_mod
from plugpay.host.faucet import Refused
from plugpay.host.ledger_client import make_client
from plugpay.host.mqtt import AsyncMqttClient
from plugpay.protocol import codec, sealed
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages, topics
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

log = logging.getLogger("plugpay.gateway")
HEIGHT_WAIT = 1.0  # a height is answered from the replicas that report within this many seconds

SUBMIT = "submit"
QUERY = "query"
OPEN = "open"
HEIGHT = "height"  # a query the gateway answers itself: the cluster's height, from f+1 replicas

Reply = collections.namedtuple("Reply", "topic payload")
# key: (request kind, payload) identifies the request in flight; to: SUBMIT, QUERY or
# OPEN (a sealed request); request: the bytes to send there.
Forward = collections.namedtuple("Forward", "key to request")
# One kind of inner message of sealed requests: the structure it must decode as, and what
# serves it (a coroutine: decoded request, its bytes -> the inner reply's bytes).
Inner = collections.namedtuple("Inner", "cls serve")


class Router:
    """Turns (topic, payload) into what to do, and answers into replies; counts in ``stats``.

    ``secret_for_epoch`` (RA epoch -> its secret, or None) enables the sealed topic, whose
    inner messages are served by ``inner`` ({tag: ``Inner``}); without it that topic is
    not subscribed."""

    def __init__(self, secret_for_epoch=None, inner=None):
        self.kinds = (topics.LEDGER_SUBMIT, topics.LEDGER_QUERY)
        if secret_for_epoch is not None:
            self.kinds += (topics.HOST_SEALED,)
        self.secret_for_epoch = secret_for_epoch
        self.inner = dict(inner or {})
        self.stats = collections.Counter()
        self.waiting = {}  # Forward.key -> reply topics of everyone who asked

    def subscriptions(self):
        return [(topics.subscription(kind), 0) for kind in self.kinds]

    def receive(self, topic, payload):
        """A ``Reply``, a ``Forward``, or None (dropped, or joined a request in flight)."""
        self.stats["received"] += 1
        parsed = topics.parse(topic)
        if parsed is None or parsed[0] not in self.kinds:
            ours = any(topic.startswith(topics.PREFIX + kind + "/") for kind in self.kinds)
            self.stats["bad_client_id" if ours else "unknown_topic"] += 1
            log.debug("dropped a message on %r", topic)
            return None
        kind, cid = parsed
        payload = bytes(payload)
        reply_to = topics.reply_topic(kind, cid)
        key = (kind, payload)
        askers = self.waiting.get(key)
        if askers is not None:
            if reply_to not in askers:
                askers.append(reply_to)
            self.stats["joined"] += 1
            return None
        if kind == topics.HOST_SEALED:
            try:
                sealed.check_request(payload)
            except sealed.SealedRefused as refused:
                self._count_refusal(refused)
                return Reply(reply_to, sealed.refusal(payload, refused.code, refused.text))
            action = Forward(key, OPEN, payload)
        else:
            try:
                action = self._check_ledger_request(kind, key, payload)
            except Refused as e:
                self.stats["refused_" + L.reason_name(e.reason)] += 1
                detail = e.detail.encode("utf-8")[: L.MAX_DETAIL_BYTES].decode("utf-8", "ignore")
                return Reply(reply_to, L.Result(sha256(payload), False, e.reason, detail, None).encode())
        self.waiting[key] = [reply_to]
        self.stats["forwarded"] += 1
        return action

    def _check_ledger_request(self, kind, key, payload):
        """The ``Forward`` of a ledger request that decodes, or ``Refused``."""
        if len(payload) > L.MAX_REQUEST_BYTES:
            raise Refused(L.TOO_LARGE, "%d bytes exceed the %d-byte limit" % (len(payload), L.MAX_REQUEST_BYTES))
        try:
            if kind == topics.LEDGER_SUBMIT:
                L.decode_request(payload)
                return Forward(key, SUBMIT, payload)
            query = L.Query.decode(payload, L.MAX_REQUEST_BYTES)
            return Forward(key, HEIGHT if query.kind == L.QUERY_HEIGHT else QUERY, payload)
        except L.UnknownOp as e:
            raise Refused(L.UNKNOWN_OP, str(e))
        except DecodeError as e:
            raise Refused(L.MALFORMED, str(e))

    def open_sealed(self, payload):
        """``(Inner, request, inner bytes, ReplyKey)`` of a sealed request: opened with the
        RA secret of its epoch, its inner message decoded by the table entry of its tag.
        Raises ``SealedRefused`` with the code to answer. Reads nothing but the key and the
        table, so it runs in the RA's thread, off the event loop."""
        inner, reply_key = sealed.open_request(payload, self.secret_for_epoch)
        try:
            value = codec.loads(inner, "sealed inner message")
        except DecodeError as e:
            raise sealed.SealedRefused(sealed.MALFORMED, str(e))
        tag = value[0] if isinstance(value, list) and value and type(value[0]) is int else None
        entry = self.inner.get(tag)
        if entry is None:
            raise sealed.SealedRefused(sealed.UNKNOWN_KIND, "this host serves no sealed message of tag %r" % (tag,))
        try:
            request = entry.cls.from_value(value)
        except DecodeError as e:
            raise sealed.SealedRefused(sealed.MALFORMED, str(e))
        return entry, request, inner, reply_key

    def refuse(self, key, refused):
        """The clear refusals of the sealed request ``key`` (a ``SealedRefused``), for
        everyone who asked."""
        self._count_refusal(refused)
        return self.finish(key, sealed.refusal(key[1], refused.code, refused.text))

    def _count_refusal(self, refused):
        self.stats["sealed_refused_" + refused.reason()] += 1
        log.info("refused a sealed request: %s", refused)

    def finish(self, key, answer):
        """The replies carrying ``answer`` to everyone who asked for ``key``."""
        askers = self.waiting.pop(key)
        self.stats["replies"] += len(askers)
        return [Reply(topic, answer) for topic in askers]

    def abandon(self, key):
        """Forget a request that got no answer; returns how many askers go unanswered."""
        self.stats["unanswered"] += 1
        return len(self.waiting.pop(key))


class Gateway:
    """The running gateway: MQTT on one side, the ledger's client (and the RA) on the other.

    ``ra_vault`` (an unsealed ``ra.Vault``) opens sealed requests; with ``ra_directory``
    they may be RA registrations, with ``faucet`` (a ``faucet.Faucet``) faucet requests and
    redeems for the issuer (whose key is the faucet's). Opening and the RA's SQLite
    connection live in a thread of their own, so neither a batch being stored nor the ECDH
    of a request holds up ledger traffic. ``mqtt_tls`` (a verifying ``ssl.SSLContext``)
    and ``mqtt_login`` ``(user, password)`` are for a deployment broker's gateway listener.
    The MQTT client id ends in random hex: client ids are one namespace across a broker's
    listeners, and a device that knew the gateway's could connect under it and push the
    gateway off."""

    def __init__(self, config, secrets, mqtt_host, mqtt_port, faucet=None, ra_directory=None, ra_vault=None,
                 name="gateway", lanes=256, timeout=10.0, mqtt_tls=None, mqtt_login=None):
        if (faucet is not None or ra_directory is not None) and ra_vault is None:
            raise ValueError("the faucet and RA registration are served in sealed requests, which need the RA's "
                             "key (ra_vault)")
        inner = {}
        if ra_directory is not None:
            inner[ra_messages.TAG_REGISTRATION_REQUEST] = Inner(ra_messages.RegistrationRequest, self._register)
        if faucet is not None:
            inner[L.TAG_FAUCET_REQUEST] = Inner(L.FaucetRequest, self._faucet)
            inner[L.TAG_REDEEM_REQUEST] = Inner(L.RedeemRequest, self._redeem)
        self.faucet = faucet
        ra_keys = dict((int(e), bytes.fromhex(k)) for e, k in config.get("app_options", {}).get("ra_pubkeys", {}).items())
        self.issuer = None if faucet is None else issuer_mod.Issuer(faucet.secret, ra_keys)
        self.router = Router(None if ra_vault is None else ra_vault.epoch_secret, inner)
        self.client = make_client(config, secrets, name=name, lanes=lanes)
        self.mqtt = AsyncMqttClient(mqtt_host, mqtt_port, self._on_message, self.router.subscriptions(),
                                    client_id="plugpay-%s-%s" % (name, os.urandom(8).hex()),
                                    tls=mqtt_tls, login=mqtt_login)
        self.timeout = timeout
        self.ra_directory = ra_directory
        self.ra_vault = ra_vault
        self.ra = None
        self.ra_thread = None
        self.tasks = set()

    @property
    def stats(self):
        return self.router.stats

    async def start(self):
        """Open the RA, the ledger's connections and the MQTT session; all or nothing."""
        try:
            if self.ra_vault is not None:
                self.ra_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plugpay-ra")
            if self.ra_directory is not None:
                await asyncio.get_running_loop().run_in_executor(self.ra_thread, self._open_ra)
            await self.client.start()
            await self.mqtt.connect()
        except BaseException:
            await self.stop()
            raise
        log.info("gateway up: MQTT %s, ledger nodes %d connected of %d, faucet %s, RA %s",
                 self.mqtt.url, len(self.client.conns), self.client.n,
                 "on" if self.faucet else "off", self.ra_directory or "off")

    async def stop(self):
        await self.mqtt.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client.closed is not None:  # started
            await self.client.close()
        if self.ra_thread is not None:  # stop may run twice: after a failed start, and on the way out
            await asyncio.get_running_loop().run_in_executor(self.ra_thread, self._close_ra)
            self.ra_thread.shutdown()
            self.ra_thread = None
        log.info("gateway stopped: %s", dict(self.stats))

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.stop()

    def _open_ra(self):
        self.ra = ra_mod.RegistrationAuthority(self.ra_directory, self.ra_vault)

    def _close_ra(self):
        if self.ra is not None:
            self.ra.close()

    def _on_message(self, topic, payload):
        action = self.router.receive(topic, payload)
        if isinstance(action, Reply):
            self.mqtt.publish(action.topic, action.payload)
        elif action is not None:
            task = asyncio.get_running_loop().create_task(self._forward(action))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, action):
        try:
            if action.to == OPEN:
                replies = await self._sealed(action)
            elif action.to == HEIGHT:
                height = await self.client.height(min(self.timeout, HEIGHT_WAIT))
                answer = L.Result(sha256(action.request), True, L.OK, "", [height]).encode()
                replies = self.router.finish(action.key, answer)
            else:
                send = self.client.submit if action.to == SUBMIT else self.client.query
                replies = self.router.finish(action.key, await send(action.request, timeout=self.timeout))
        except TimeoutError:
            lost = self.router.abandon(action.key)
            log.warning("no answer within %.0f s to a %s request; %d asker(s) unanswered", self.timeout, action.to, lost)
            return
        except Exception:
            lost = self.router.abandon(action.key)
            log.exception("a %s request failed; %d asker(s) unanswered", action.to, lost)
            return
        for reply in replies:
            self.mqtt.publish(reply.topic, reply.payload)

    async def _sealed(self, action):
        """Open in the RA's thread, serve by the inner kind, seal the answer. A handler
        that fails (other than by timing out, which the device's re-send covers) gets the
        askers an ``UNAVAILABLE`` refusal rather than silence."""
        loop = asyncio.get_running_loop()
        try:
            entry, request, inner, reply_key = await loop.run_in_executor(
                self.ra_thread, self.router.open_sealed, action.request)
        except sealed.SealedRefused as refused:
            return self.router.refuse(action.key, refused)
        try:
            answer = sealed.seal_reply(reply_key, await entry.serve(request, inner))
        except sealed.SealedRefused as refused:
            return self.router.refuse(action.key, refused)
        except TimeoutError:
            raise
        except Exception:
            log.exception("a sealed %s failed", entry.cls.NAME)
            return self.router.refuse(action.key, sealed.SealedRefused(
                sealed.UNAVAILABLE, "the host could not serve the request; retry later"))
        return self.router.finish(action.key, answer)

    async def _register(self, request, inner):
        """An RA registration: the RA checks and stores it in its thread."""
        answer = await asyncio.get_running_loop().run_in_executor(self.ra_thread, self.ra.handle, inner)
        reply = ra_messages.decode_reply(answer)
        if isinstance(reply, ra_messages.RegistrationError):
            self.stats["ra_refused_" + reply.reason()] += 1
            log.info("RA refused a registration: %s", reply.reason())
        else:
            self.stats["ra_signed"] += 1
            log.info("RA signed %d key(s)", len(reply.ra_sigs))
        return answer

    async def _redeem(self, request, inner):
        """A redeem for the issuer (the faucet key mints): the ``Redeem`` first, then each
        fresh coin in its own mint once the redeem is on the ledger. Mints not confirmed yet
        are ``UNAVAILABLE`` for the device, which asks again (everything is idempotent)."""
        try:
            redeem, mints = self.issuer.check(inner)
        except Refused as e:
            self.stats["issuer_refused_" + L.reason_name(e.reason)] += 1
            return faucet_mod.refused(request.redeem, e).encode()
        done = L.Result.decode(await self.client.submit(redeem, timeout=self.timeout))
        minted = None
        if done.ok or done.reason == L.DUPLICATE:
            answers = await asyncio.gather(*(self.client.submit(op, timeout=self.timeout) for op in mints))
            minted = [L.Result.decode(a) for a in answers]
        try:
            answer = issuer_mod.Issuer.answer(redeem, mints, done, minted)
        except issuer_mod.NotYet as e:
            raise sealed.SealedRefused(sealed.UNAVAILABLE, str(e))
        result = L.Result.decode(answer)
        self.stats["issuer_redeemed" if result.ok else "issuer_refused_" + L.reason_name(result.reason)] += 1
        log.info("issuer: redeem %s%s", "honoured with %d fresh coin(s)" % len(mints) if result.ok else "refused: ",
                 "" if result.ok else L.reason_name(result.reason))
        return answer

    async def _faucet(self, request, inner):
        """A faucet request: each output minted in its own ``Faucet``, all submitted at once."""
        try:
            ops = self.faucet.mint(request)
        except Refused as e:
            result = faucet_mod.refused(inner, e)
        else:
            answers = await asyncio.gather(*(self.client.submit(op.encode(), timeout=self.timeout) for op in ops))
            result = faucet_mod.answer(inner, ops, answers)
        if result.ok:
            self.stats["faucet_minted"] += 1
            log.info("faucet minted %d in %d coin(s)", sum(out.amount for out in request.outputs), len(request.outputs))
        else:
            self.stats["faucet_refused_" + L.reason_name(result.reason)] += 1
            log.info("faucet request refused: %s %s", L.reason_name(result.reason), result.detail)
        return result.encode()
