"""Checks of a CometBFT network's runs, read from every node: each application's own
record of the blocks it committed (height, app hash, requests, requests applied) and each
node's block headers over RPC, which carry the app hash of the block before. And a steady
load of requests from a thread, for faults to happen under."""
import asyncio
import sqlite3
import threading
import time
import urllib.request
import json

import ledger_helpers as H
from plugpay.host.comet_client import CometClient
from plugpay.protocol import ledger_ops as L


def app_chain(db_path):
    """``[(height, app hash, requests, applied)]`` the application committed, in order."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return conn.execute("SELECT height, app_hash, txs, applied FROM abci_blocks ORDER BY height").fetchall()
    finally:
        conn.close()


def confirmed_count(db_path):
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM ledger_confirmed").fetchone()[0]
    finally:
        conn.close()


def wait_same_height(lc, timeout=60.0):
    """Until every node's application has committed the same height; that height."""
    deadline = time.monotonic() + timeout
    while True:
        heights = [app_chain(lc.db_path(i))[-1][0] for i in range(lc.config["n"])]
        if len(set(heights)) == 1:
            return heights[0]
        assert time.monotonic() < deadline, "the nodes' applications stay at heights %s" % heights
        time.sleep(0.1)


def headers(rpc, last):
    """``{height: app hash in that header}`` for heights 1..last, from a node's RPC."""
    out = {}
    low = 1
    while low <= last:
        high = min(last, low + 19)
        url = "%s/blockchain?minHeight=%d&maxHeight=%d" % (rpc, low, high)
        with urllib.request.urlopen(url, timeout=10) as reply:
            for meta in json.load(reply)["result"]["block_metas"]:
                header = meta["header"]
                out[int(header["height"])] = bytes.fromhex(header["app_hash"])
        low = high + 1
    return out


def assert_same_app_hash_everywhere(lc):
    """Every node's application committed the same blocks with the same app hash at every
    height, each exactly once and none missing; every node's headers carry those hashes;
    and every application's ledger holds as many confirmed requests as its blocks applied."""
    height = wait_same_height(lc)
    chains = [app_chain(lc.db_path(i)) for i in range(lc.config["n"])]
    for i, chain in enumerate(chains):
        assert [row[0] for row in chain] == list(range(1, height + 1)), "node %d misses or repeats a height" % i
        assert chain == chains[0], "node %d's application disagrees with node 0's" % i
        assert confirmed_count(lc.db_path(i)) == sum(row[3] for row in chain)
    for i in range(lc.config["n"]):
        seen = headers(lc.rpc(i), height)
        for h, app_hash in seen.items():
            if h > 1:
                assert app_hash == chains[0][h - 2][1], "node %d's header %d carries another app hash" % (i, h)
    return height


class Load:
    """Mints submitted through node ``node`` at ``rate`` per second from a thread of its
    own, until ``stop()``, which returns the ids confirmed OK."""

    def __init__(self, lc, node=0, rate=40.0, label="load"):
        self.lc = lc
        self.node = node
        self.rate = rate
        self.key = H.Key(label)
        self.confirmed = []
        self.failed = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self):
        self.thread.start()
        return self

    async def _run(self):
        async with CometClient(self.lc.config, node=self.node) as client:
            tasks = []
            nonce = 0
            while not self.stopping.is_set():
                nonce += 1
                tasks.append(asyncio.ensure_future(self._one(client, H.faucet([(self.key, 1)], nonce=nonce))))
                await asyncio.sleep(1.0 / self.rate)
            await asyncio.gather(*tasks)

    async def _one(self, client, op):
        try:
            result = L.Result.decode(await client.submit(op.encode(), timeout=60))
        except TimeoutError as e:
            self.failed.append(str(e))
            return
        (self.confirmed if result.ok else self.failed).append(op.txhash() if result.ok else result.reason)

    def stop(self):
        self.stopping.set()
        self.thread.join(90)
        assert not self.thread.is_alive()
        return self.confirmed
