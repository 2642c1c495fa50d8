"""Many simulated charging sessions at once over one broker and one ledger (``host.stack``).

What ``plugpay bench session`` drives. Provisioning is batched as a workshop would do it:
each wallet's identity is registered with the RA in person, then every wallet's key
registration goes out at once, sealed, over one MQTT connection and the RA's answers come
back matched by request (``gateway_client.Requests``); the faucet funds up to
``MAX_FAUCET_OUTPUTS`` consumers per request (each coin minted in a transaction of its
own), all requests in flight together.

Sessions run as in ``plugpay demo`` (``firmware.session`` over ``firmware.runner``, each
side with its own MQTT connection under a fresh client id, boards joined by one cable),
but many per thread: a thread waits in one ``select`` on the sockets of all its runners and
steps those with input or a deadline due, so 200 runners need not be 200 threads on a
2-core machine. Both sides of a session share a thread: their boards share one cable and
one simulated clock, which are not meant to be read from two threads at once.
"""
import os
import select
import threading
import time

from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ScaledClock
from plugpay.boards.sim.power import Battery, Meter
from plugpay.firmware.books import CLEAN
from plugpay.firmware.gateway_client import Requests, newest_ra_key
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.runner import SessionRunner
from plugpay.firmware.session import HTLC, Session, Terms
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import link, sealed
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import urandom
from plugpay.protocol.structures import TxOutput
from plugpay.tools.demo import MISBEHAVIOURS, SCENARIOS

POLL_CAP_MS = 20  # every runner is stepped at least this often (keep-alive, unsent bytes)
RESEND_S = 5.0  # a provisioning request unanswered this long goes out again


class Millis:
    """Milliseconds since creation, with microseconds kept (a float): the runners' clock,
    fine enough to time sub-millisecond round trips."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return (time.perf_counter() - self.start) * 1000.0


def provision(host, directory, names, keys, timeout_s=120.0, progress=lambda text: None, storage=Storage):
    """``{name: Wallet}``: wallets on files under ``directory`` (``storage(folder)`` each),
    each with its identity and ``keys`` RA-signed one-time keys registered over MQTT, all
    registrations in flight at once."""
    wallets = {}
    for name in names:
        folder = os.path.join(directory, "wallet-" + name)
        os.makedirs(folder)
        wallet = Wallet.create(storage(folder), urandom(32), host.ra_pubkeys)
        fields = {"name": "Bench " + name, "licence": "BENCH-" + name.upper(),
                  "vehicle_id": "1PLUGPAY0%08d" % (int.from_bytes(urandom(4), "big") % 10 ** 8)}
        wallet.set_identity(host.authority.register_identity(fields, wallet.device_pubkey()))
        wallets[name] = wallet
    progress("%d wallets created, identities registered; registering %d keys each over MQTT ..." % (len(names), keys))
    by_key = {}
    with _Station(host) as station:
        for wallet in wallets.values():
            by_key[station.ask(wallet.refill_request(keys), wallet.ra_pubkeys)] = wallet
        for key, answer in station.answers(len(by_key), timeout_s, "key registrations"):
            by_key[key].refill_reply(answer)
    return wallets


def fund(host, grants, timeout_s=60.0):
    """Faucet money to ``grants`` (``[(wallet, amount)]``), ``MAX_FAUCET_OUTPUTS`` a request."""
    with _Station(host) as station:
        waiting = {}
        for start in range(0, len(grants), L.MAX_FAUCET_OUTPUTS):
            chunk = [(wallet, amount, wallet.new_account()) for wallet, amount in grants[start:start + L.MAX_FAUCET_OUTPUTS]]
            request = L.FaucetRequest(int.from_bytes(urandom(6), "big"),
                                      [TxOutput(account, amount) for _, amount, (_, account) in chunk])
            waiting[station.ask(request.encode(), host.ra_pubkeys)] = chunk
        for key, answer in station.answers(len(waiting), timeout_s, "faucet requests"):
            result = L.Result.decode(answer)
            if not result.ok:
                raise RuntimeError("the faucet refused: %s %s" % (L.reason_name(result.reason), result.detail))
            for txhash, (wallet, amount, (index, _)) in zip(result.data, waiting[key]):
                wallet.receive(txhash, 0, index, amount, CLEAN)  # each minted alone


class _Station:
    """One MQTT connection to the gateway with many requests in flight."""

    def __init__(self, host):
        self.mqtt = Mqtt(host.broker_host, host.broker_port)
        self.requests = Requests(self.mqtt.client_id)

    def __enter__(self):
        self.mqtt.connect()
        for topic in self.requests.subscriptions():
            self.mqtt.subscribe(topic, 1)
        return self

    def __exit__(self, *exc):
        self.mqtt.close()

    def ask(self, inner, ra_pubkeys):
        """Send ``inner`` sealed to the newest of ``ra_pubkeys``; returns its key."""
        topic, payload, key = self.requests.sealed(inner, *newest_ra_key(ra_pubkeys))
        self.mqtt.publish(topic, payload, 1)
        return key

    def answers(self, count, timeout_s, what):
        """Yield ``(key, inner answer bytes)`` for ``count`` requests; the unanswered go
        out again every ``RESEND_S`` (the gateway, RA and ledger answer a repeat safely)."""
        start = last = time.monotonic()
        got = 0
        while got < count:
            now = time.monotonic()
            if now - start > timeout_s:
                raise RuntimeError("%d of %d %s unanswered after %.0f s" % (count - got, count, what, timeout_s))
            if now - last > RESEND_S:
                for topic, payload, _ in self.requests.pending():
                    self.mqtt.publish(topic, payload, 1)
                last = now
            for topic, payload in self.mqtt.poll(100):
                answer = self.requests.on_message(topic, payload)
                if answer is not None:
                    if isinstance(answer[1], sealed.SealedRefused):
                        raise RuntimeError("the gateway refused one of the %s: %s" % (what, answer[1]))
                    got += 1
                    last = time.monotonic()
                    yield answer


class Side:
    """One device of a session: its wallet, simulated board, MQTT connection and runner."""

    def __init__(self, name, wallet, producer, initiator, clock, power_w):
        self.name = name
        self.wallet = wallet
        self.producer = producer
        self.initiator = initiator
        vehicle = name.startswith("vehicle")
        battery = Battery(80000, 70000 if producer else 10000, 150000, 150000) if vehicle else None
        meter = None if initiator else Meter(urandom(32))  # the responder (the charger) meters
        self.board = SimBoard(name, clock, power_w, battery=battery, meter=meter)
        self.mqtt = None
        self.session = None
        self.runner = None

    def start(self, host, terms, cheat, timeouts, on_step=None):
        self.mqtt = Mqtt(host.broker_host, host.broker_port)
        self.mqtt.connect()
        clock = Millis()
        self.session = Session(self.wallet, self.board, terms, clock(), timeouts, cheat, timestamp=int(time.time()))
        self.runner = SessionRunner(self.session, self.mqtt, now=clock, on_step=on_step)

    def close(self):
        if self.mqtt is not None:
            self.mqtt.close()


class Pair:
    """One session between a consumer's and a producer's wallet: ``scenario`` (g2v, v2g,
    v2v) says which is the vehicle that initiates, ``misbehave`` who cheats and how (the
    names of ``plugpay demo``); boards run ``scale`` times faster than real time; a
    unilateral close may be answered for ``window`` blocks."""

    def __init__(self, consumer_wallet, producer_wallet, params, mode, scenario="g2v", misbehave="none",
                 scale=1e9, timeouts=None, window=10):
        self.params = params
        self.mode = mode
        self.scenario = scenario
        self.misbehave = misbehave
        self.timeouts = timeouts
        self.window = window
        first, second, first_produces = SCENARIOS[scenario]
        clock = ScaledClock(scale)
        self.sides = []
        for name, initiator, producer in ((first, True, first_produces), (second, False, not first_produces)):
            wallet = producer_wallet if producer else consumer_wallet
            self.sides.append(Side(name, wallet, producer, initiator, clock, params.max_power_w))
        self.consumer = [s for s in self.sides if not s.producer][0]
        self.producer = [s for s in self.sides if s.producer][0]
        self.consumer.board.connect(self.producer.board)

    @property
    def label(self):
        return "%s %s %s" % (self.scenario, "htlc" if self.mode == HTLC else "channel", self.misbehave)

    def budget(self):
        return self.consumer.session.terms.budget()

    def per_installment(self):
        return self.budget() // self.params.installments

    def start(self, host, on_consumer_step=None):
        session_id = link.new_session_id()
        who, make = MISBEHAVIOURS[self.misbehave]
        for side in self.sides:
            role = "producer" if side.producer else "consumer"
            cheat = make(self.params.installments) if who == role else None
            terms = Terms(session_id, self.params, self.mode, side.producer, side.initiator, window=self.window,
                          htlc_timeout=10 ** 6)
            side.start(host, terms, cheat, self.timeouts, None if side.producer else on_consumer_step)

    @property
    def runners(self):
        return [s.runner for s in self.sides]

    @property
    def finished(self):
        return all(s.session is not None and s.session.finished for s in self.sides)

    def onchain(self):
        """The session's distinct applied ledger requests (a close both sides sent is one)."""
        return list(dict.fromkeys(self.consumer.session.onchain + self.producer.session.onchain))

    def onchain_by_op(self):
        counts = {}
        for raw in self.onchain():
            name = L.decode_request(raw).NAME
            counts[name] = counts.get(name, 0) + 1
        return counts

    def close(self):
        for side in self.sides:
            side.close()


def drive(groups, timeout_s):
    """Run every runner of ``groups`` (a list of runner lists, one thread each) until its
    session is finished or ``timeout_s`` passed; returns the exceptions raised, if any."""
    errors = []
    deadline = time.monotonic() + timeout_s
    threads = [threading.Thread(target=_drive, args=(group, deadline, errors), daemon=True, name="plugpay-fleet")
               for group in groups if group]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    return errors


def _drive(runners, deadline, errors):
    try:
        for r in runners:
            r.flush()
        pending = list(runners)
        while pending and time.monotonic() < deadline:
            wait = POLL_CAP_MS
            sockets = {}
            for r in pending:
                sock = r.mqtt.socket()
                if sock is None:
                    wait = 0
                else:
                    sockets[sock] = r
                due = r.session.next_deadline()
                if due is not None:
                    wait = min(wait, max(0, due - r.clock()))
            ready = select.select(list(sockets), [], [], wait / 1000.0)[0] if sockets else []
            ready = set(sockets[s] for s in ready)
            everyone = not ready
            for r in pending:
                due = r.session.next_deadline()
                if everyone or r in ready or r.mqtt.socket() is None or (due is not None and due <= r.clock()):
                    r.step(0)
            pending = [r for r in pending if not r.session.finished]
    except Exception as e:  # reported by drive(); the other threads carry on
        errors.append(e)
