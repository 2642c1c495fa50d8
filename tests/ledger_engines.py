"""The ledger on either engine, driven the same way: one set of tests runs on both.

``network(engine, directory)`` starts a real network (four PBFT replica processes, or four
CometBFT validators each with its ABCI application process) trusting ``ledger_helpers``'
RA and faucet, and gives a ``Network``: submit requests (one after the other, or several
at once through different clients, on CometBFT different validators), read the height,
query, push the height on with harmless requests, and check at the end that every node
holds the same state. CometBFT is skipped with the reason when it is not built here.
"""
import asyncio
import contextlib
import itertools
import os
import sqlite3
import time

import pytest

import ledger_helpers as H
from plugpay.host import cluster, cometbft
from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L

ENGINES = ["pbft", "cometbft"]
OPTIONS = {"ra_pubkeys": {str(e): k.hex() for e, k in H.RA_PUBKEYS.items()}, "faucet_pubkey": H.FAUCET_PUBKEY.hex()}
FAST_PBFT = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
             "status_interval": 0.2, "fetch_timeout": 0.3}
FILLER = H.Key("filler")


def skip_without_cometbft():
    reason = cometbft.missing()
    if reason:
        pytest.skip(reason)


class Network:
    """A running network of ``engine``; ``lc`` is its process manager."""

    def __init__(self, engine, lc):
        self.engine = engine
        self.lc = lc
        self.config = lc.config
        self.n = lc.config["n"]
        self.nonces = itertools.count(1 << 40)

    # -- clients

    def client(self, i=0):
        if self.engine == "cometbft":
            from plugpay.host.comet_client import CometClient

            return CometClient(self.config, node=i % self.n)
        from plugpay.host.client import Client

        return Client(self.config, self.lc.secrets, lanes=4)

    def run(self, work, clients=1, **kw):
        """``await work(*clients)`` with ``clients`` started clients (node 0, 1, ...)."""
        async def main():
            async with contextlib.AsyncExitStack() as stack:
                started = [await stack.enter_async_context(self.client(i)) for i in range(clients)]
                return await work(*started, **kw)
        return asyncio.run(main())

    def submit(self, *ops, timeout=20.0):
        """Each op (a structure, or raw bytes) in turn, each after the one before is
        answered; their decoded ``Result``s."""
        async def work(client):
            out = []
            for op in ops:
                raw = op if isinstance(op, bytes) else op.encode()
                out.append(L.Result.decode(await client.submit(raw, timeout=timeout)))
            return out
        return self.run(work)

    def submit_at_once(self, *ops, timeout=20.0):
        """All ops at the same moment, each through a client of its own (on CometBFT each
        to another validator); their ``Result``s."""
        async def work(*clients):
            raws = [op if isinstance(op, bytes) else op.encode() for op in ops]
            answers = await asyncio.gather(*(c.submit(raw, timeout=timeout) for c, raw in zip(clients, raws)))
            return [L.Result.decode(a) for a in answers]
        return self.run(work, clients=len(ops))

    def query(self, kind, key, index=0):
        async def work(client):
            return L.Result.decode(await client.query(L.Query(kind, key, index).encode()))
        return self.run(work)

    def height(self):
        async def work(client):
            return await client.height(2.0)
        return self.run(work)

    def advance_to(self, height):
        """Submit harmless mints until the ledger's height reaches ``height``."""
        async def work(client):
            while await client.height(2.0) < height:
                result = L.Result.decode(await client.submit(H.faucet([(FILLER, 1)], next(self.nonces)).encode()))
                assert result.ok, result.detail
        self.run(work)

    # -- every node in one state

    def databases(self):
        return [self.lc.db_path(i) for i in range(self.n)]

    def node_heights(self):
        table = "abci_blocks" if self.engine == "cometbft" else "blocks"
        return [_read(path, "SELECT COALESCE(MAX(height), 0) FROM %s" % table)[0][0] for path in self.databases()]

    def wait_level(self, timeout=30.0):
        """Wait until every node has executed the same number of blocks."""
        deadline = time.monotonic() + timeout
        while len(set(self.node_heights())) > 1:
            assert time.monotonic() < deadline, "nodes stay at heights %s" % self.node_heights()
            time.sleep(0.05)

    def assert_one_state(self):
        """Every node ends at the same height in the same state, money conserved; on
        CometBFT every node's application also computed the same app hash at every height."""
        self.wait_level()
        digests = set()
        for path in self.databases():
            conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
            try:
                ledger = Ledger(conn, H.RA_PUBKEYS)
                digests.add(ledger.state_digest())
                assert H.conserved(ledger)
            finally:
                conn.close()
        assert len(digests) == 1
        if self.engine == "cometbft":
            chains = [_read(path, "SELECT height, app_hash FROM abci_blocks ORDER BY height") for path in self.databases()]
            assert all(chain == chains[0] for chain in chains)
            assert [h for h, _ in chains[0]] == list(range(1, len(chains[0]) + 1))
        else:
            from cluster_checks import assert_chains_agree

            assert_chains_agree(self.lc, range(self.n))


def _read(path, sql):
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@contextlib.contextmanager
def network(engine, directory, app_commands=None):
    """A started ``Network`` of ``engine`` in ``directory``; stopped on the way out."""
    if engine == "cometbft":
        skip_without_cometbft()
        from plugpay.host import comet_cluster, comet_testnet

        path = comet_testnet.generate(os.path.join(str(directory), "net"), app_options=OPTIONS)
        with comet_cluster.LocalCometCluster(path, stop_grace=3.0, app_commands=app_commands) as lc:
            lc.start_all()
            lc.wait_ready()
            yield Network(engine, lc)
        return
    path = cluster.generate(str(directory), app="plugpay.host.ledger:Ledger", app_options=OPTIONS, pbft=FAST_PBFT)
    with cluster.LocalCluster(path, stop_grace=3.0) as lc:
        lc.start_all()
        lc.wait_listening()
        yield Network(engine, lc)
