"""Two charging-session sides, an in-process ledger and a simulated clock, for tests.

Why: the money rules of ``firmware/session.py`` (deposit, installments, receipts, closing,
disputes, exposure) must be checked for every scenario and misbehaviour without sleeping
and with the same result every run. The ledger is the real state machine
(``host.ledger.Ledger`` on SQLite), each submitted request in a block of its own; the
wallets are real wallets on real files; the link messages go through a queue with a fixed
latency that a test can make drop messages.
"""
import heapq

from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L


class InProcessLedger:
    """The real ledger state machine without replicas: a block per submitted request."""

    def __init__(self, conn, ra_pubkeys, faucet_pubkey, height=1):
        self.ledger = Ledger(conn, ra_pubkeys, faucet_pubkey=faucet_pubkey)
        self.height = height
        self.submitted = []  # (height, op tag, ok, reason) of everything submitted

    def submit(self, raw):
        self.height += 1
        (answer,) = self.ledger.execute(self.height, [raw])
        self.ledger.conn.commit()
        result = L.Result.decode(answer)
        self.submitted.append((self.height, raw[1], result.ok, L.reason_name(result.reason)))
        return answer

    def query(self, raw):
        return self.ledger.query(raw)

    def serve(self, session, now):
        """Answer every ledger request the session has, and the ones the answers cause."""
        while True:
            requests = session.ledger_requests()
            if not requests:
                return
            for kind, raw in requests:
                session.ledger_answer(self.submit(raw) if kind == "submit" else self.query(raw), now)


class Pair:
    """Carries link messages between two sessions with ``latency`` ms; ``drop(side, data)``
    returning True loses a message. ``run`` advances the clock event by event."""

    def __init__(self, a, b, ledger, clock, latency=1):
        self.sides = {"a": a, "b": b}
        self.ledger = ledger
        self.clock = clock
        self.latency = latency
        self.queue = []
        self.order = 0
        self.drop = lambda side, data: False
        self.carried = 0

    def _flush(self, now):
        moved = True
        while moved:
            moved = False
            for name, side in self.sides.items():
                self.ledger.serve(side, now)
                for data in side.link_messages():
                    moved = True
                    if self.drop(name, data):
                        continue
                    self.order += 1
                    heapq.heappush(self.queue, (now + self.latency, self.order, "b" if name == "a" else "a", data))

    def run(self, limit_ms=10 ** 9, until=None):
        """Until both sides are finished (or ``until()``), nothing is left to happen, or the
        clock passes ``limit_ms``; returns the simulated time."""
        now = self.clock.now_ms()
        self._flush(now)
        while True:
            if until is not None and until():
                return now
            if all(s.finished for s in self.sides.values()) and not self.queue:
                return now
            times = [t for t in (s.next_deadline() for s in self.sides.values()) if t is not None]
            if self.queue:
                times.append(self.queue[0][0])
            if not times:
                return now
            t = max(now, min(times))
            if t > limit_ms:
                return now
            if t > now:
                self.clock.advance(t - now)
                now = t
            while self.queue and self.queue[0][0] <= now:
                _, _, to, data = heapq.heappop(self.queue)
                self.carried += 1
                self.sides[to].link_received(data, now)
            for side in self.sides.values():
                side.tick(now)
            self._flush(now)
