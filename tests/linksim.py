"""A deterministic, fault-injecting link between two link state machines, for tests.

Why: every timeout and error path of ``protocol/link.py`` must run without sleeping and
give the same result on every run. The clock is simulated (milliseconds); the channel
between the two sides can drop, delay, duplicate, reorder and rewrite messages by rules,
cut the connection for a while, and let a test play a dishonest counterparty by injecting
raw bytes (forged, replayed, from other sessions).

    sim = SimLink(vehicle, charger, latency=5)        # two linkdrive.App objects
    sim.rules.append(drop("i", M.TAG_INSTALLMENT_REQ))
    sim.run()
    sim.events["r"]                                   # [(time, event), ...]

Sides are named ``"i"`` (initiator) and ``"r"`` (responder). A rule sees each message
as it is sent and returns None (no opinion) or the list of ``(delay_ms, bytes)`` copies
to deliver: ``[]`` drops it, two entries duplicate it, a long delay reorders it.
"""
import heapq
import random

from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError

OTHER = {"i": "r", "r": "i"}


def kind_of(data):
    """The message kind of ``data``, or None if it does not decode."""
    try:
        return M.decode_message(data)[0].kind
    except DecodeError:
        return None


class SimLink:
    def __init__(self, initiator, responder, latency=5):
        self.apps = {"i": initiator, "r": responder}
        self.latency = latency
        self.now = 0
        self.rules = []
        self.events = {"i": [], "r": []}
        self.wire = []  # (time, from, kind, bytes) of everything each side sent
        self._queue = []  # heap of (due, order, to, bytes)
        self._actions = []  # heap of (due, order, callable(now))
        self._order = 0
        self._sent = {}  # (from, kind) -> how many were sent, for rules counting them

    # ---- scripting -----------------------------------------------------------------

    def inject(self, to, data, delay=0):
        """Deliver raw ``data`` to side ``to`` after ``delay`` ms: the dishonest peer."""
        self._push(self._queue, self.now + delay, to, data)

    def at(self, time, action):
        """Call ``action(now)`` at simulated ``time``."""
        self._push(self._actions, time, action)

    def outage(self, start, end, notify=("i", "r")):
        """The connection is down from ``start`` to ``end``: everything sent meanwhile is
        lost. The ``notify`` sides' transports notice: their machines pause at ``start``
        and their apps resume at ``end``."""
        self.rules.insert(0, lambda frm, kind, n, data: [] if start <= self.now < end else None)
        for side in notify:
            app = self.apps[side]
            self.at(start, lambda now, app=app: app.machine.connection_lost(now))
            self.at(end, app.reconnected)

    def sent(self, frm, kind=None):
        """The bytes side ``frm`` sent, of ``kind`` if given, in order."""
        return [data for t, f, k, data in self.wire if f == frm and (kind is None or k == kind)]

    # ---- running -------------------------------------------------------------------

    def run(self, until=None, max_steps=200000):
        """Advance until nothing is left to do (or ``until`` ms); return the time."""
        for _ in range(max_steps):
            self._flush()
            due = self._next_time()
            if due is None or (until is not None and due > until):
                return self.now
            self.now = max(self.now, due)
            if self._actions and self._actions[0][0] <= self.now:
                heapq.heappop(self._actions)[2](self.now)
            elif self._queue and self._queue[0][0] <= self.now:
                _, _, to, data = heapq.heappop(self._queue)
                self._handle(to, self.apps[to].machine.receive(data, self.now))
            else:
                for side in ("i", "r"):
                    app = self.apps[side]
                    self._handle(side, app.machine.tick(self.now))
                    app.poll(self.now)
        raise AssertionError("the simulation did not settle in %d steps" % max_steps)

    def _handle(self, side, events):
        for ev in events:
            self.events[side].append((self.now, ev))
        self.apps[side].handle(events, self.now)

    def _flush(self):
        for side in ("i", "r"):
            for data in self.apps[side].machine.messages_to_send():
                self._send(side, data)

    def _send(self, frm, data):
        kind = kind_of(data)
        key = (frm, kind)
        n = self._sent[key] = self._sent.get(key, 0) + 1
        self.wire.append((self.now, frm, kind, data))
        copies = None
        for rule in self.rules:
            copies = rule(frm, kind, n, data)
            if copies is not None:
                break
        if copies is None:
            copies = [(0, data)]
        for delay, copy in copies:
            self._push(self._queue, self.now + self.latency + delay, OTHER[frm], copy)

    def _push(self, heap, due, *item):
        self._order += 1
        heapq.heappush(heap, (due, self._order) + item)

    def _next_time(self):
        times = []
        if self._queue:
            times.append(self._queue[0][0])
        if self._actions:
            times.append(self._actions[0][0])
        for app in self.apps.values():
            for t in (app.machine.next_deadline(), app.next_time()):
                if t is not None:
                    times.append(t)
        return min(times) if times else None


# ---- rules: each matches the nth message (1-based) of a kind from one side ------------------


def _matches(side, kind, nth, frm, k, n):
    return frm == side and (kind is None or k == kind) and (nth is None or n == nth)


def drop(side, kind=None, nth=1):
    """Lose the ``nth`` message of ``kind`` from ``side`` (every one if ``nth`` is None)."""
    return lambda frm, k, n, data: [] if _matches(side, kind, nth, frm, k, n) else None


def duplicate(side, kind=None, nth=1, gap=0):
    return lambda frm, k, n, data: [(0, data), (gap, data)] if _matches(side, kind, nth, frm, k, n) else None


def delay(side, kind=None, nth=1, ms=100):
    """Hold a message back: it arrives after whatever is sent in the next ``ms``."""
    return lambda frm, k, n, data: [(ms, data)] if _matches(side, kind, nth, frm, k, n) else None


def rewrite(side, kind, change, nth=1):
    """Replace a message in flight with ``change(bytes)``: a dishonest side or a forger."""
    return lambda frm, k, n, data: [(0, change(data))] if _matches(side, kind, nth, frm, k, n) else None


def chaos(seed, drop_p=0.1, duplicate_p=0.1, delay_p=0.1, max_delay=300):
    """Random loss, duplication and reordering, the same for the same seed."""
    rng = random.Random(seed)

    def rule(frm, k, n, data):
        x = rng.random()
        if x < drop_p:
            return []
        if x < drop_p + duplicate_p:
            return [(0, data), (rng.randrange(max_delay), data)]
        if x < drop_p + duplicate_p + delay_p:
            return [(rng.randrange(max_delay), data)]
        return None

    return rule
