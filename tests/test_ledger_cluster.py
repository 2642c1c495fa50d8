"""The payment ledger on four real replica processes: real Gao transactions, real TCP, real
SQLite, results accepted on f+1 matching replies, and every replica ending in one state."""
import asyncio
import sqlite3
import time

import pytest

from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L

import ledger_helpers as H
from cluster_checks import assert_chains_agree

FAST = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
        "status_interval": 0.2, "fetch_timeout": 0.3}


@pytest.fixture
def ledger_cluster(tmp_path):
    options = {"ra_pubkeys": {str(e): k.hex() for e, k in H.RA_PUBKEYS.items()}, "faucet_pubkey": H.FAUCET_PUBKEY.hex()}
    path = cluster.generate(str(tmp_path), app="plugpay.host.ledger:Ledger", app_options=options, pbft=FAST)
    with cluster.LocalCluster(path, stop_grace=3.0) as lc:
        lc.start_all()
        lc.wait_listening()
        yield lc
    assert_chains_agree(lc, range(lc.config["n"]))  # every run: no replica forked


def submit_all(lc, ops):
    async def main():
        async with Client(lc.config, lc.secrets, lanes=4) as client:
            results = []
            for op in ops:  # in order: each spends what the one before created
                results.append(L.Result.decode(await client.submit(op.encode())))
            return results
    return asyncio.run(main())


def test_transactions_confirm_and_every_replica_agrees(ledger_cluster):
    alice, bob, carol = H.Key("alice"), H.Key("bob"), H.Key("carol")
    mint = H.faucet([(alice, 1000), (alice, 500)])
    minted = H.coins(mint.txhash(), [(alice, 1000), (alice, 500)])
    pay = H.transaction(minted, [(bob, 1200), (carol, 300)])
    double = H.transaction(minted[:1], [(carol, 1000)])
    overspend = H.transaction(H.coins(pay.txhash(), [(bob, 1200)]), [(carol, 1201)])
    forged = H.transaction(H.coins(pay.txhash(), [(bob, 1200)]), [(carol, 10)], signers=[carol])
    results = submit_all(ledger_cluster, [mint, pay, double, overspend, forged, pay])
    assert H.reasons(results) == ["OK", "OK", "DOUBLE_SPEND", "INPUTS_BELOW_OUTPUTS", "BAD_INPUT_SIGNATURE", "DUPLICATE"]

    # f+1 replicas answered; the others may still be a block or two behind: wait for them.
    heights = lambda: {_height(ledger_cluster.db_path(i)) for i in range(ledger_cluster.config["n"])}  # noqa: E731
    deadline = time.monotonic() + 10
    while len(heights()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    digests = set()
    for i in range(ledger_cluster.config["n"]):
        conn = sqlite3.connect("file:%s?mode=ro" % ledger_cluster.db_path(i), uri=True)
        try:
            ledger = Ledger(conn, H.RA_PUBKEYS)
            digests.add(ledger.state_digest())
            assert ledger.supply()["minted"] == 1500
        finally:
            conn.close()
    assert len(digests) == 1


def _height(db_path):
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return conn.execute("SELECT COALESCE(MAX(height), 0) FROM blocks").fetchone()[0]
    finally:
        conn.close()
