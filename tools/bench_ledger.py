"""``plugpay bench ledger``: the payment ledger on four replica processes, real transactions.

Every transaction is a signed 2-input/2-output Gao transaction paying two fresh RA-signed
one-time accounts, built before the clock starts and funded through the faucet over
consensus. Printed beside the ceiling measured in the same run (one replica's cost to
execute one transaction, times replicas, over cores) and Gao et al.'s figures (300 tx/s,
under 2 s confirmation, 536-byte transactions, on four Fabric v0.6 nodes with a machine each).
"""
import asyncio
import json
import os
import tempfile
import time

from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.host.ledger import Ledger
from plugpay.host.replica import open_database
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.tools import load

PAPER = {"tps": 300, "confirmation_s": 2.0, "tx_bytes": 536}
FAUCET_OUTPUTS = 16


class Funds:
    """An RA and a faucet, and the one-time keys they fund: the set-up outside the clock."""

    def __init__(self):
        self.ra = signing.new_secret()
        self.faucet = signing.new_secret()
        self.ra_pubkey = signing.public_key(self.ra)
        self.faucet_pubkey = signing.public_key(self.faucet)
        self.nonce = 0

    def account(self):
        secret = signing.new_secret()
        acc = S.Account(signing.public_key(secret), 0, b"")
        acc.ra_sig = signing.sign(self.ra, acc)
        return secret, acc

    def mints(self, coins):
        """Faucet requests minting ``coins`` outputs of 1,000 each; and the (coin, secret) list."""
        ops, owned = [], []
        for start in range(0, coins, FAUCET_OUTPUTS):
            keys = [self.account() for _ in range(min(FAUCET_OUTPUTS, coins - start))]
            op = L.Faucet(self.nonce, [S.TxOutput(acc, 1000) for _, acc in keys], b"")
            self.nonce += 1
            op.faucet_sig = signing.sign(self.faucet, op)
            txhash = op.txhash()
            owned.extend(((txhash, sn), secret) for sn, (secret, _) in enumerate(keys))
            ops.append(op.encode())
        return ops, owned

    def transactions(self, owned):
        """2-in/2-out transactions spending ``owned`` coins pairwise into fresh accounts."""
        txs = []
        for i in range(0, len(owned) - 1, 2):
            (c0, k0), (c1, k1) = owned[i], owned[i + 1]
            outs = [S.TxOutput(self.account()[1], 1500), S.TxOutput(self.account()[1], 500)]
            tx = S.Transaction([S.TxInput(*c0), S.TxInput(*c1)], S.Price(35, 2000), outs, [b"", b""])
            tx.witnesses = [signing.sign(k0, tx), signing.sign(k1, tx)]
            txs.append(tx.encode())
        return txs


def execute_cost_ms(funds, count, synchronous, block=50):
    """One replica's cost per transaction: decode, verify, store, commit, in this process."""
    mints, owned = funds.mints(2 * count)
    txs = funds.transactions(owned)
    with tempfile.TemporaryDirectory(prefix="plugpay-ceiling-") as d:
        conn = open_database(os.path.join(d, "ledger.sqlite"), synchronous)
        ledger = Ledger(conn, {0: funds.ra_pubkey}, faucet_pubkey=funds.faucet_pubkey)
        ledger.execute(1, mints)
        conn.commit()
        start = time.perf_counter()
        height = 2
        for i in range(0, len(txs), block):
            results = ledger.execute(height, txs[i : i + block])
            conn.commit()
            height += 1
        took = time.perf_counter() - start
        assert all(L.Result.decode(r).ok for r in results)
        conn.close()
    return took * 1000 / len(txs)


def verify_cost_ms(count=2000):
    """The floor under the execute cost: the four ECDSA verifications a 2-in/2-out
    transaction needs (two witnesses, two new accounts' RA signatures), nothing else."""
    secret = signing.new_secret()
    pubkey = signing.public_key(secret)
    digest = bytes(32)
    sig = signing.sign_digest(secret, digest)
    start = time.perf_counter()
    for _ in range(count):
        signing.verify_digest(pubkey, digest, sig)
    return 4 * (time.perf_counter() - start) * 1000 / count


def ok(result):
    return L.Result.decode(result).ok


def run(seconds=5.0, rate=300.0, lanes=256, synchronous="FULL", progress=print):
    funds = Funds()
    cores = os.cpu_count() or 1
    progress("  measuring one replica's execute cost (the ceiling) ...")
    cost_ms = execute_cost_ms(funds, 1000, synchronous)
    verify_ms = verify_cost_ms()
    n = 4
    ceiling = cores * 1000.0 / (n * cost_ms)
    offered_count = int(rate * seconds)
    saturated_count = int(max(ceiling, rate) * seconds * 1.5)
    progress("  building %d signed transactions with fresh RA-signed accounts ..." % (offered_count + saturated_count))
    mints, owned = funds.mints(2 * (offered_count + saturated_count))
    txs = funds.transactions(owned)
    tx_bytes = len(txs[0])
    options = {"ra_pubkeys": {"0": funds.ra_pubkey.hex()}, "faucet_pubkey": funds.faucet_pubkey.hex()}
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-ledger-") as d:
        path = cluster.generate(d, n=n, app="plugpay.host.ledger:Ledger", app_options=options, sqlite_synchronous=synchronous)
        with cluster.LocalCluster(path) as lc:
            lc.start_all()
            lc.wait_listening()

            async def measure():
                client = Client(lc.config, lc.secrets, lanes=max(lanes, int(rate * 2)))
                await client.start(wait_for=n)
                try:
                    progress("  funding %d coins through the faucet over consensus ..." % len(owned))
                    _, _, unfunded = await load.saturated(client, iter(mints), 16, check=ok, timeout=60)
                    if unfunded:
                        raise RuntimeError("%d faucet requests were refused" % unfunded)
                    funding_resent = client.stats["retransmissions"]
                    progress("  offered load: %.0f tx/s for %.0f s ..." % (rate, seconds))
                    lat, elapsed, bad = await load.offered(client, txs[:offered_count], rate, check=ok)
                    progress("  saturation: %d transactions in flight ..." % lanes)
                    sat_lat, sat_elapsed, sat_bad = await load.saturated(client, iter(txs[offered_count:]), lanes,
                                                                         seconds, check=ok)
                    resent = client.stats["retransmissions"] - funding_resent
                    return lat, elapsed, bad, sat_lat, sat_elapsed, sat_bad, resent
                finally:
                    await client.close()

            lat, elapsed, bad, sat_lat, sat_elapsed, sat_bad, resent = asyncio.run(measure())
    tps = len(sat_lat) / sat_elapsed
    return {
        "replicas": n,
        "cores": cores,
        "tx_bytes": tx_bytes,
        "offered_tps": rate,
        "offered_confirmed": len(lat),
        "p50_ms": load.percentile(lat, 50) * 1000,
        "p99_ms": load.percentile(lat, 99) * 1000,
        "tps": tps,
        "saturation_p50_ms": load.percentile(sat_lat, 50) * 1000,
        "rejected": bad + sat_bad,
        "resent": resent,
        "execute_ms_per_tx": cost_ms,
        "ceiling_tps": ceiling,
        "ceiling_ratio": tps / ceiling,
        "verify_ms_per_tx": verify_ms,
        "verify_bound_tps": cores * 1000.0 / (n * verify_ms),
        "sqlite_synchronous": synchronous,
        "paper": PAPER,
    }


def table(r):
    return "\n".join([
        "ledger bench: %d replica processes on %d cores, real 2-in/2-out transactions, SQLite %s"
        % (r["replicas"], r["cores"], r["sqlite_synchronous"]),
        "%-44s %12s %14s" % ("figure", "measured", "Gao et al."),
        "%-44s %12.0f %14d" % ("confirmed tx/s at saturation", r["tps"], PAPER["tps"]),
        "%-44s %12.1f %14s" % ("confirmation p50 ms at %.0f tx/s offered" % r["offered_tps"], r["p50_ms"], "< 2000"),
        "%-44s %12.1f %14s" % ("confirmation p99 ms at %.0f tx/s offered" % r["offered_tps"], r["p99_ms"], "-"),
        "%-44s %12d %14d" % ("transaction bytes (2 in, 2 out)", r["tx_bytes"], PAPER["tx_bytes"]),
        "%-44s %12.3f %14s" % ("one replica's execute cost, ms per tx", r["execute_ms_per_tx"], "-"),
        "%-44s %12.0f %14s" % ("ceiling tx/s (cores / (replicas x cost))", r["ceiling_tps"], "-"),
        "%-44s %11.0f%% %14s" % ("throughput / ceiling", 100 * r["ceiling_ratio"], "-"),
        "%-44s %12.3f %14s" % ("of which 4 ECDSA verifications, ms per tx", r["verify_ms_per_tx"], "-"),
        "%-44s %12.0f %14s" % ("bound if verifying were all a replica did", r["verify_bound_tps"], "-"),
        "rejected during the runs: %d (expected 0); requests re-sent to every replica: %d" % (r["rejected"], r["resent"]),
    ])


def main(args):
    progress = (lambda s: None) if args.json else print
    report = run(seconds=args.seconds, rate=args.rate, lanes=args.lanes, progress=progress)
    print(json.dumps(report) if args.json else table(report))
    return 0
