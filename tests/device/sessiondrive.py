"""What drives whole charging sessions inside one MicroPython process: the ledger's answers
for a channel session, and a pump that carries link messages between two sessions on a
manual clock.

Why here: a MicroPython process must be able to be a whole vehicle or charger with a
simulated board (boards/sim), so tests/device/test_session_mp.py runs ``firmware.session``
end to end with real wallets. The ledger is host code (tests/test_session.py runs the real
one); here it is a stand-in that applies a channel's open and close and answers queries
with the row the real ledger keeps, as the ``Result`` structures it sends.
"""
import heapq

from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256


class ChannelLedger:
    """Applies ``ChannelOpen`` and ``ChannelClose``; answers channel queries with
    ``[consumer, producer, collateral, installments, window, status, seq, paid, deadline,
    height]``. ``applied`` lists the op tags in order."""

    def __init__(self):
        self.rows = {}
        self.applied = []

    def answer(self, kind, raw):
        digest = sha256(raw)
        if kind == "query":
            row = self.rows.get(L.Query.decode(raw).key)
            if row is None:
                return L.Result(digest, False, L.NOT_FOUND, "no such channel", None).encode()
            return L.Result(digest, True, L.OK, "", list(row)).encode()
        op = L.decode_request(raw)
        if op.TAG == L.TAG_CHANNEL_OPEN:
            data = op.channel_id()
            self.rows[data] = [op.consumer.encode(), op.producer.encode(), op.collateral, op.installments, op.window,
                               L.STATUS_OPEN, 0, op.first_installment(), 0, 2]
        elif op.TAG == L.TAG_CHANNEL_CLOSE and self.rows[op.state.channel_id][5] == L.STATUS_OPEN:
            row = self.rows[op.state.channel_id]
            row[5], row[6], row[7] = L.STATUS_CLOSED, op.state.seq, op.state.paid_to_producer
            data = L.channel_payout_txhash(op.state.channel_id)
        else:
            return L.Result(digest, False, L.CHANNEL_CLOSED, "closed already", None).encode()
        self.applied.append(op.TAG)
        return L.Result(digest, True, L.OK, "", data).encode()


class Pump:
    """Two sessions, the ledger and the link's clock (a ``ManualClock``): link messages take
    ``latency`` ms, ledger requests are answered at once. With ``poll_ms`` it also steps at
    least that often, as a runner polls, and calls ``on_step(now)`` after every step."""

    def __init__(self, a, b, ledger, clock, latency=1, poll_ms=None, on_step=None):
        self.sides = ((a, b), (b, a))
        self.ledger = ledger
        self.clock = clock
        self.latency = latency
        self.poll_ms = poll_ms
        self.on_step = on_step
        self.queue = []  # (when, order, to, bytes)
        self.order = 0

    def _flush(self, now):
        for side, peer in self.sides:
            for kind, raw in side.ledger_requests():
                side.ledger_answer(self.ledger.answer(kind, raw), now)
            for data in side.link_messages():
                self.order += 1
                heapq.heappush(self.queue, (now + self.latency, self.order, peer, data))

    def run(self, limit_ms):
        """Until both sides are finished; yields the installments as the consumer pays them,
        so the WebAssembly port collects between them (see mpyunit.ticker)."""
        a, b = self.sides[0]
        consumer = b if a.producer else a
        paid = consumer.installments_paid
        now = self.clock.now_ms()
        self._flush(now)
        while not (a.finished and b.finished):
            times = [t for t in (a.next_deadline(), b.next_deadline()) if t is not None]
            if self.queue:
                times.append(self.queue[0][0])
            if self.poll_ms is not None:
                times.append(now + self.poll_ms)
            assert times, "nothing left to happen and not finished"
            t = max(now, min(times))
            assert t <= limit_ms, "not finished by %d ms" % limit_ms
            self.clock.advance(t - now)
            now = t
            while self.queue and self.queue[0][0] <= now:
                _, _, to, data = heapq.heappop(self.queue)
                to.link_received(data, now)
            for side, _ in self.sides:
                side.tick(now)
            self._flush(now)
            if self.on_step is not None:
                self.on_step(now)
            if consumer.installments_paid != paid:
                paid = consumer.installments_paid
                yield "installment %d accepted" % (paid - 1)
