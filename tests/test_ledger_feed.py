"""The ledger feed behind ``ledger up``'s event lines, ``ledger watch`` and the dashboard,
on both engines, as real networks of processes: every confirmed request comes out once, in
commit order, under the id ``ledger tx`` takes and with the block's UTC time; each replica
(or validator) has a status row; and when fewer than f+1 nodes answer the feed says so once and
carries on where it was once they are back, instead of ending."""
import asyncio
import threading
import time

import pytest

import ledger_helpers as H
from ledger_engines import ENGINES, network
from plugpay.protocol import ledger_ops as L
from plugpay.tools.ledger_follow import LedgerFeed

WAIT_S = 60.0


class Recorder:
    """A feed listener that keeps what it is told; the feed runs in a thread of its own."""

    def __init__(self):
        self.blocks, self.problems, self.rows = [], [], None

    def on_block(self, c):
        self.blocks.append(c)

    def on_problem(self, text):
        self.problems.append(text)

    def on_replicas(self, rows):
        self.rows = rows

    def events(self):
        return [e for c in list(self.blocks) for e in c.events]

    def until(self, done, what):
        deadline = time.monotonic() + WAIT_S
        while not done():
            assert time.monotonic() < deadline, "the feed never showed %s" % what
            time.sleep(0.05)


class Following:
    """``LedgerFeed(...).run(1)`` on a loop in a thread, cancelled on the way out."""

    def __init__(self, net):
        self.recorder = Recorder()
        self.feed = LedgerFeed(net.config, getattr(net.lc, "secrets", None), [self.recorder], timeout=2.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ended = None

    def _run(self):
        self.task = self.loop.create_task(self.feed.run(1))
        try:
            self.loop.run_until_complete(self.task)
        except BaseException as e:  # cancelled on the way out, or what ended it
            self.ended = e

    def __enter__(self):
        self.thread.start()
        return self.recorder

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)


def mint(net, key, amount):
    op = H.faucet([(key, amount)], nonce=next(net.nonces))
    (result,) = net.submit(op)
    assert result.ok, result.detail
    return op, H.coins(result.data, [(key, amount)])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_feed_shows_every_request_and_outlives_a_quorum_loss(engine, tmp_path):
    this_year = time.strftime("%Y", time.gmtime())
    with network(engine, tmp_path) as net:
        following = Following(net)
        with following as seen:
            alice, bob, con, pro = H.Key("f-alice"), H.Key("f-bob"), H.Key("f-con"), H.Key("f-pro")
            minted, (coin,) = mint(net, alice, 1000)
            pay = H.transaction([coin], [(bob, 600), (con, 365)])
            bob_coin, con_coin = H.coins(pay.txhash(), [(bob, 600), (con, 365)])
            opened = H.channel_open([con_coin], con, pro, 300, installments=3, window=2)
            request = H.market_request(bob, net.height() + 50)
            ops = [pay, opened, request]
            assert all(r.ok for r in net.submit(*ops))
            ids = [L.request_id(op, op.encode()).hex() for op in [minted] + ops]

            seen.until(lambda: all(i in {e["id"] for e in seen.events()} for i in ids), "every request")
            events = dict((e["id"], e) for e in seen.events())
            assert [events[i]["kind"] for i in ids] == ["faucet", "transaction", "channel_open", "market_request"]
            assert all(events[i]["ok"] and events[i]["result"] == "OK" for i in ids)
            assert [events[i]["height"] for i in ids] == sorted(events[i]["height"] for i in ids)
            assert all(events[i]["time"].startswith(this_year) and events[i]["time"].endswith("Z") for i in ids)
            assert events[ids[2]]["channel"] == opened.channel_id().hex()
            heights = [c.height for c in seen.blocks]
            assert heights == list(range(1, len(heights) + 1))  # each block once, in order, from the first
            seen.until(lambda: seen.rows is not None and all(r["reachable"] for r in seen.rows), "the nodes' status")
            assert [r["id"] for r in seen.rows] == list(range(net.n))

            # three of four stop: fewer than f+1 answer any read, and the feed says so once
            for i in (1, 2, 3):
                net.lc.stop(i)
            seen.until(lambda: any(seen.problems), "the lost quorum")
            assert len([p for p in seen.problems if p]) == 1 and "does not answer" in seen.problems[-1]
            seen.until(lambda: seen.rows is not None and not seen.rows[3]["reachable"], "a stopped node's row")
            for i in (1, 2, 3):
                net.lc.start(i)
            if engine == "cometbft":
                net.lc.wait_ready()
            else:
                net.lc.wait_listening()
            (later,) = net.submit(H.transaction([bob_coin], [(alice, 565)]))
            assert later.ok, later.detail
            seen.until(lambda: later.data.hex() in {e["id"] for e in seen.events()}, "a request after the loss")
            assert seen.problems[-1] is None  # answered again
            assert following.thread.is_alive() and following.ended is None
        heights = [c.height for c in seen.blocks]
        assert heights == list(range(1, len(heights) + 1))
