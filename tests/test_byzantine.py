"""One Byzantine replica among four real replica processes running the payment ledger.

Replica 0 (the primary of view 0) goes silent or equivocates; or backup 2 votes for digests
that match no batch. Each fault is injected by ``byzantine_replica.py`` into what that one
process sends; the other three are the real replica. In every case clients keep getting f+1
matching results for real signed transactions, and afterwards the honest replicas' SQLite
chains are checked for forks (``cluster_checks``). The engine's counters come from the
line each replica logs when it stops, the only place they leave the process.
"""
import ast
import asyncio
import collections
import contextlib
import os
import re
import sqlite3
import sys

from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L

import ledger_helpers as H
from cluster_checks import assert_chains_agree

BYZANTINE_REPLICA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "byzantine_replica.py")
LEDGER = {"ra_pubkeys": {str(e): k.hex() for e, k in H.RA_PUBKEYS.items()}, "faucet_pubkey": H.FAUCET_PUBKEY.hex()}
# A primary that stalls is replaced within about a second.
FAST = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
        "status_interval": 0.2, "fetch_timeout": 0.3}
# Nothing here should need a view change: a timeout a loaded machine never reaches.
PATIENT = dict(FAST, request_timeout=5.0)
PAYERS = 6


@contextlib.contextmanager
def ledger_cluster(tmp_path, byzantine, mode, pbft):
    path = cluster.generate(str(tmp_path), app="plugpay.host.ledger:Ledger", app_options=LEDGER, pbft=pbft)
    commands = {byzantine: [sys.executable, BYZANTINE_REPLICA, "--mode", mode]}
    with cluster.LocalCluster(path, stop_grace=3.0, commands=commands) as lc:
        lc.start_all()
        lc.wait_listening()
        yield lc


def waves():
    """Three rounds of real transactions, each spending what the round before created: a
    faucet mint to each payer, a payment from each payer, and each payee paying on."""
    payers = [H.Key("payer %d" % i) for i in range(PAYERS)]
    payees = [H.Key("payee %d" % i) for i in range(PAYERS)]
    shops = [H.Key("shop %d" % i) for i in range(PAYERS)]
    mints = [H.faucet([(payer, 100)], nonce=i) for i, payer in enumerate(payers)]
    pays = [H.transaction(H.coins(mint.txhash(), [(payer, 100)]), [(payee, 70), (payer, 30)])
            for mint, payer, payee in zip(mints, payers, payees)]
    onward = [H.transaction(H.coins(pay.txhash(), [(payee, 70)]), [(shop, 70)])
              for pay, payee, shop in zip(pays, payees, shops)]
    return [mints, pays, onward]


def run_waves(lc):
    """Submit each wave concurrently, wait for it; return (reasons per wave, status)."""
    async def main():
        async with Client(lc.config, lc.secrets, lanes=PAYERS) as client:
            reasons = []
            for wave in waves():
                results = await asyncio.gather(*[client.submit(op.encode(), timeout=15) for op in wave])
                reasons.append(H.reasons([L.Result.decode(r) for r in results]))
            return reasons, await client.status()
    return asyncio.run(main())


def submit_while_down(lc, i, op):
    """Stop replica ``i`` and submit ``op``; restart ``i`` after a while. Return (whether
    ``op`` was still unconfirmed then, its result's reason once it is confirmed)."""
    lc.stop(i)

    async def main():
        async with Client(lc.config, lc.secrets) as client:
            confirmed = asyncio.ensure_future(client.submit(op.encode(), timeout=15))
            await asyncio.sleep(1.5)
            stalled = not confirmed.done()
            lc.start(i)
            return stalled, H.reasons([L.Result.decode(await confirmed)])[0]
    return asyncio.run(main())


def all_ok(reasons):
    return reasons == [["OK"] * PAYERS] * 3


def active_views(status, replicas):
    """The view each of ``replicas`` is active in, -1 if it is changing views or did not
    answer (``Replica.status`` is ``[id, view, active, ...]``)."""
    return [s[1] if s is not None and s[2] else -1 for s in (status[i] for i in replicas)]


def engine_stats(lc, i):
    """Replica ``i``'s engine counters, summed over the lines it logs on each clean stop."""
    with open(lc.log_path(i)) as f:
        found = re.findall(r"stopped at height \d+; engine (\{.*?\}); dropped ", f.read())
    assert found, "replica %d logged no engine counters; see %s" % (i, lc.log_path(i))
    return sum((collections.Counter(ast.literal_eval(d)) for d in found), collections.Counter())


def block_ops(lc, i):
    """The operations of each block in replica ``i``'s database, in height order."""
    conn = sqlite3.connect("file:%s?mode=ro" % lc.db_path(i), uri=True)
    try:
        return [[op for _, _, op in codec.loads(b)] for (b,) in conn.execute("SELECT batch FROM blocks ORDER BY height")]
    finally:
        conn.close()


def test_silent_primary_is_replaced_and_the_ledger_keeps_confirming(tmp_path):
    honest = (1, 2, 3)
    with ledger_cluster(tmp_path, 0, "silent-primary", FAST) as lc:
        reasons, status = run_waves(lc)
    assert all_ok(reasons)
    assert min(active_views(status, honest)) >= 1, status
    heights = assert_chains_agree(lc, honest)
    assert max(heights.values()) >= 3
    stats = {i: engine_stats(lc, i) for i in honest}
    assert sum(s["request_timeouts"] for s in stats.values()) >= 1
    assert all(s["new_views"] + s["views_adopted"] >= 1 and s["malformed"] == 0 for s in stats.values())


def test_equivocating_primary_is_replaced_and_no_honest_replica_forks(tmp_path):
    honest = (1, 2, 3)
    with ledger_cluster(tmp_path, 0, "equivocate", FAST) as lc:
        reasons, status = run_waves(lc)
    assert all_ok(reasons)
    assert min(active_views(status, honest)) >= 1, status
    heights = assert_chains_agree(lc, honest)
    assert min(heights.values()) >= 1 and max(heights.values()) >= 3
    # The mints arrive together and the primary proposes them in one batch at sequence 1,
    # but sends backups 2 and 3 the requests reversed. Neither order has 2f+1 replicas
    # behind it, so nothing commits in view 0; 2 and 3 prepared the reversed batch, so the
    # new view must carry that one into block 1.
    mints = [mint.encode() for mint in waves()[0]]
    order = [mints.index(op) for op in block_ops(lc, honest[0])[0]]
    assert len(order) >= 2 and order == sorted(order, reverse=True), order
    stats = {i: engine_stats(lc, i) for i in honest}
    assert sum(s["request_timeouts"] for s in stats.values()) >= 1
    assert all(s["new_views"] + s["views_adopted"] >= 1 and s["malformed"] == 0 for s in stats.values())


def test_backup_sending_wrong_digests_is_outvoted_without_a_view_change(tmp_path):
    honest = (0, 1, 3)
    with ledger_cluster(tmp_path, 2, "wrong-digest", PATIENT) as lc:
        reasons, status = run_waves(lc)
        # Its votes count for nothing: with replica 3 down, 0 and 1 cannot commit alone.
        stalled, late = submit_while_down(lc, 3, H.faucet([(H.Key("late"), 5)], nonce=PAYERS))
    assert all_ok(reasons)
    assert active_views(status, honest) == [0, 0, 0], status
    assert stalled and late == "OK"
    heights = assert_chains_agree(lc, honest)
    assert max(heights.values()) >= 4
    stats = {i: engine_stats(lc, i) for i in honest}
    assert all(s["view_changes"] == 0 and s["malformed"] == 0 for s in stats.values())
