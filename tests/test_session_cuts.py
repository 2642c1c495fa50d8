"""The link cut just before and just after every message of a session, in every phase
(Core Lightning's way of testing a payment channel): after each cut the two sides resume
and the money ends where the last co-signed state or the revealed preimages say.

Each run is a whole session on the real wallets and the real ledger state machine
(``sessionsim``); the cut is a connection loss on both sides at that message (sent and lost
in flight, or delivered and then cut), and the connection comes back after ``OUTAGE_MS``,
shorter than the link's timeouts, so a resumed session must finish as if nothing happened.
"""
import heapq

import pytest

from plugpay.firmware.session import CHANNEL, HTLC
from plugpay.protocol import link_messages as M
from linksim import kind_of
from test_session import World

OUTAGE_MS = 700  # under the response (2000) and payment (3000) timeouts of test_session
INSTALLMENTS = 3


class CutPair:
    """Wraps a ``sessionsim.Pair``: the ``at``-th message either side sends cuts the
    connection, ``before`` (the message is lost with it) or after it was delivered."""

    def __init__(self, pair, at, before):
        self.pair = pair
        self.at = at
        self.before = before
        self.sent = []  # (side, kind) of every message, in order
        self.cut_at = None
        self.back_at = None
        pair.drop = self._drop

    def _drop(self, side, data):
        self.sent.append((side, kind_of(data)))
        if len(self.sent) - 1 != self.at:
            return False
        self.cut_at = self.pair.clock.now_ms()
        return self.before

    def run(self, limit_ms=10 ** 7):
        pair = self.pair
        while True:
            now = pair.run(limit_ms=limit_ms, until=lambda: self.cut_at is not None and self.back_at is None)
            if self.cut_at is None or self.back_at is not None:
                return now
            if not self.before:  # delivered first, then the connection goes
                while pair.queue:
                    _, _, to, data = heapq.heappop(pair.queue)
                    pair.sides[to].link_received(data, now)
            pair.queue = []  # whatever else was in flight is lost with the connection
            for side in pair.sides.values():
                side.connection_lost(now)
            self.back_at = now + OUTAGE_MS
            now = pair.run(limit_ms=self.back_at)
            if now < self.back_at:
                pair.clock.advance(self.back_at - now)
            for side in pair.sides.values():
                side.reconnected(self.back_at)


def _messages(tmp_path, authority, mode):
    (tmp_path / "clean").mkdir()
    w = World(tmp_path / "clean", authority, "g2v", mode, n=INSTALLMENTS, energy_wh=600)
    cut = CutPair(w.pair, at=-1, before=False)
    cut.run()
    return cut.sent


def _check_money(w, mode):
    c, p = w.consumer, w.producer
    assert c.finished and p.finished, (c.log[-5:], p.log[-5:])
    assert c.stop_code == M.OK and p.stop_code == M.OK, (c.log[-8:], p.log[-8:])
    budget = c.terms.budget()
    if mode == CHANNEL:
        assert p.payout == budget and c.payout == 0  # the last co-signed state, all of it
        assert w.ledger.ledger.supply()["channels"] == 0
    else:
        assert p.wallet.status()["balance"] == budget  # every preimage revealed and claimed
    w.check_bounds()


@pytest.mark.parametrize("mode", [CHANNEL, HTLC], ids=["channel", "htlc"])
def test_a_cut_before_or_after_any_message_loses_no_money(tmp_path, authority, mode):
    sent = _messages(tmp_path, authority, mode)
    kinds = set(k for _, k in sent)
    assert M.TAG_INSTALLMENT_REQ in kinds or len(sent) > 10  # the session really ran
    tried = 0
    for at in range(len(sent)):
        for before in (True, False):
            run = tmp_path / ("%d-%s" % (at, "before" if before else "after"))
            run.mkdir()
            w = World(run, authority, "g2v", mode, n=INSTALLMENTS, energy_wh=600)
            cut = CutPair(w.pair, at, before)
            cut.run()
            where = "cut %s message %d (%s from %s)" % ("before" if before else "after", at, sent[at][1], sent[at][0])
            try:
                _check_money(w, mode)
            except AssertionError as e:
                raise AssertionError("%s: %s" % (where, e))
            tried += 1
    assert tried == 2 * len(sent)

