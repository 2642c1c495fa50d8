"""The MQTT gateway between devices and the PBFT ledger replicas (and the RA).

Devices speak MQTT (``protocol.topics``); the replicas speak authenticated PBFT over TCP.
The gateway subscribes to the request topics, checks every payload, forwards good ones
through one PBFT ``Client`` (its lanes keep many requests in flight) or to the RA, and
publishes the answer (QoS 1) on the device's reply topic.

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

from plugpay.host import ra as ra_mod
from plugpay.host.faucet import Refused
from plugpay.host.client import Client
from plugpay.host.mqtt import AsyncMqttClient
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages, topics
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

log = logging.getLogger("plugpay.gateway")

SUBMIT = "submit"
QUERY = "query"
REGISTER = "register"

Reply = collections.namedtuple("Reply", "topic payload")
# key: (request kind, payload) identifies the request in flight; to: SUBMIT, QUERY or
# REGISTER; request: the bytes to send there (for the faucet, the signed ``Faucet``).
Forward = collections.namedtuple("Forward", "key to request")


class Router:
    """Turns (topic, payload) into what to do, and answers into replies; counts in ``stats``.

    ``faucet`` (a ``faucet.Faucet``) enables faucet requests and ``serve_ra`` the RA
    topics; without them those topics are answered ``NOT_FAUCET`` / not subscribed."""

    def __init__(self, faucet=None, serve_ra=False):
        self.faucet = faucet
        self.kinds = (topics.LEDGER_SUBMIT, topics.LEDGER_QUERY, topics.FAUCET_REQUEST)
        if serve_ra:
            self.kinds += (topics.RA_REGISTER,)
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
        if kind == topics.RA_REGISTER:  # the RA answers bad input itself, without its database
            action = Forward(key, REGISTER, payload)
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
            if kind == topics.LEDGER_QUERY:
                L.Query.decode(payload, L.MAX_REQUEST_BYTES)
                return Forward(key, QUERY, payload)
            if self.faucet is None:
                raise Refused(L.NOT_FAUCET, "this gateway has no faucet")
            request = L.FaucetRequest.decode(payload, L.MAX_REQUEST_BYTES)
        except L.UnknownOp as e:
            raise Refused(L.UNKNOWN_OP, str(e))
        except DecodeError as e:
            raise Refused(L.MALFORMED, str(e))
        return Forward(key, SUBMIT, self.faucet.mint(request).encode())

    def finish(self, key, answer):
        """The replies carrying ``answer`` to everyone who asked for ``key``.

        A faucet answer is the ledger's ``Result`` of the ``Faucet`` the gateway signed;
        it is re-stamped with the digest of the device's ``FaucetRequest``, the only
        digest the device knows (its data is the minted txhash)."""
        kind, payload = key
        if kind == topics.FAUCET_REQUEST:
            result = L.Result.decode(answer)
            answer = L.Result(sha256(payload), result.ok, result.reason, result.detail, result.data).encode()
            self.stats["faucet_minted" if result.ok else "faucet_refused_by_ledger"] += 1
        askers = self.waiting.pop(key)
        self.stats["replies"] += len(askers)
        return [Reply(topic, answer) for topic in askers]

    def abandon(self, key):
        """Forget a request that got no answer; returns how many askers go unanswered."""
        self.stats["unanswered"] += 1
        return len(self.waiting.pop(key))


class Gateway:
    """The running gateway: MQTT on one side, the PBFT client (and the RA) on the other.

    ``ra_directory`` and ``ra_vault`` (an unsealed ``ra.Vault``) serve RA registration;
    the RA's SQLite connection lives in a thread of its own, so a batch being stored never
    holds up ledger traffic. ``mqtt_tls`` (a verifying ``ssl.SSLContext``) and
    ``mqtt_login`` ``(user, password)`` are for a deployment broker's gateway listener.
    The MQTT client id ends in random hex: client ids are one namespace across a broker's
    listeners, and a device that knew the gateway's could connect under it and push the
    gateway off."""

    def __init__(self, config, secrets, mqtt_host, mqtt_port, faucet=None, ra_directory=None, ra_vault=None,
                 name="gateway", lanes=256, timeout=10.0, mqtt_tls=None, mqtt_login=None):
        self.router = Router(faucet, serve_ra=ra_directory is not None)
        self.client = Client(config, secrets, name=name, lanes=lanes)
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
        """Open the RA, the replica connections and the MQTT session; all or nothing."""
        try:
            if self.ra_directory is not None:
                self.ra_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plugpay-ra")
                await asyncio.get_running_loop().run_in_executor(self.ra_thread, self._open_ra)
            await self.client.start()
            await self.mqtt.connect()
        except BaseException:
            await self.stop()
            raise
        log.info("gateway up: MQTT %s, replicas %d connected of %d, faucet %s, RA %s",
                 self.mqtt.url, len(self.client.conns), self.client.n,
                 "on" if self.router.faucet else "off", self.ra_directory or "off")

    async def stop(self):
        await self.mqtt.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client.closed is not None:  # started
            await self.client.close()
        if self.ra_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self.ra_thread, self._close_ra)
            self.ra_thread.shutdown()
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
            if action.to == SUBMIT:
                answer = await self.client.submit(action.request, timeout=self.timeout)
            elif action.to == QUERY:
                answer = await self.client.query(action.request, timeout=self.timeout)
            else:
                answer = await asyncio.get_running_loop().run_in_executor(self.ra_thread, self.ra.handle, action.request)
        except TimeoutError:
            lost = self.router.abandon(action.key)
            log.warning("no answer within %.0f s to a %s request; %d asker(s) unanswered", self.timeout, action.to, lost)
            return
        except Exception:
            lost = self.router.abandon(action.key)
            log.exception("a %s request failed; %d asker(s) unanswered", action.to, lost)
            return
        replies = self.router.finish(action.key, answer)
        for reply in replies:
            self.mqtt.publish(reply.topic, reply.payload)
        if action.key[0] == topics.FAUCET_REQUEST:
            self._log_faucet(action, replies[0].payload)
        elif action.to == REGISTER:
            self._log_registration(replies)

    @staticmethod
    def _log_faucet(action, answer):
        result = L.Result.decode(answer)
        if result.ok:
            minted = L.Faucet.decode(action.request)
            log.info("faucet minted %d in %d output(s), txhash %s",
                     sum(out.amount for out in minted.outputs), len(minted.outputs), result.data.hex())
        else:
            log.info("faucet request refused by the ledger: %s %s", L.reason_name(result.reason), result.detail)

    @staticmethod
    def _log_registration(replies):
        reply = ra_messages.decode_reply(replies[0].payload)
        if isinstance(reply, ra_messages.RegistrationError):
            log.info("RA refused a registration from %s: %s", replies[0].topic, reply.reason())
        else:
            log.info("RA signed %d key(s) for %s", len(reply.ra_sigs), replies[0].topic)
