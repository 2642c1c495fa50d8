"""``plugpay bench ledger``: the payment ledger on four replica processes, real transactions;
with ``--engine cometbft`` also on four CometBFT validators, the same transactions in the
same run (``tools.bench_engines``), PBFT's figures beside as the baseline.

Every transaction is a signed 2-input/2-output Gao transaction paying two fresh RA-signed
one-time accounts, built before the clock starts and funded through the faucet over
consensus. Printed beside the ceiling measured in the same run (one replica's cost to
execute one transaction, times replicas, over cores) and Gao et al.'s figures (300 tx/s,
under 2 s confirmation, 536-byte transactions, on four Fabric v0.6 nodes with a machine each).

That ceiling assumes four executors on two cores each run as fast as one alone. The bench
also measures what they do run at: four processes executing the same work at once, with no
consensus, network or client. Throughput over that figure is what the replication costs.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from plugpay.host.ledger import Ledger
from plugpay.host.replica import open_database
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.tools import bench_engines

PAPER = {"tps": 300, "confirmation_s": 2.0, "tx_bytes": 536}
FAUCET_OUTPUTS = 16
CEILING_TXS = 1000


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


def timed_execution(count, synchronous, block=50, start=None):
    """One replica's work on ``count`` fresh transactions (decode, verify, store, commit in
    blocks of ``block``), in this process: (wall ms, CPU ms) per transaction. Building them
    is not timed; with ``start`` the clock starts when that function returns."""
    funds = Funds()
    mints, owned = funds.mints(2 * count)
    txs = funds.transactions(owned)
    with tempfile.TemporaryDirectory(prefix="plugpay-ceiling-") as d:
        conn = open_database(os.path.join(d, "ledger.sqlite"), synchronous)
        ledger = Ledger(conn, {0: funds.ra_pubkey}, faucet_pubkey=funds.faucet_pubkey)
        ledger.execute(1, mints)
        conn.commit()
        if start is not None:
            start()
        wall, cpu = time.perf_counter(), time.thread_time()
        height = 2
        for i in range(0, len(txs), block):
            results = ledger.execute(height, txs[i : i + block])
            conn.commit()
            height += 1
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if not all(L.Result.decode(r).ok for r in results):
            raise RuntimeError("the ceiling's own transactions were refused")
        conn.close()
    return wall * 1000 / len(txs), cpu * 1000 / len(txs)


def _party(count, synchronous):
    """One executor of ``contended_execution``, in its own interpreter: says ``ready`` once
    it has built its transactions, starts on ``go``, prints its (wall, CPU) as JSON."""
    print(json.dumps(timed_execution(count, synchronous, start=_ready_go)), flush=True)


def _ready_go():
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no start signal")


def contended_execution(parties, count, synchronous):
    """``parties`` processes executing at once, sharing the cores as the replicas do, with
    no consensus, network or client: what the ceiling's formula assumes scales linearly.
    Returns each party's (wall ms, CPU ms) per transaction."""
    code = "from plugpay.tools.bench_ledger import _party; _party(%d, %r)" % (count, synchronous)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(parties)]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a contended ceiling executor failed: %s" % _last_line(proc))
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        out = []
        for proc in procs:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a contended ceiling executor failed: %s" % _last_line(proc))
            out.append(tuple(json.loads(line)))
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()


def _last_line(proc):
    """The last line a failed executor wrote to stderr (its exception)."""
    proc.kill()
    lines = proc.stderr.read().strip().splitlines()
    return lines[-1] if lines else "exit status %s" % proc.wait()


def verify_cost_ms(count=1000):
    """The floor under the execute cost: the four ECDSA verifications a 2-in/2-out
    transaction needs (two witnesses, two new accounts' RA signatures), each by a
    different key over a different digest as in a block, and nothing else."""
    items = []
    for _ in range(count):
        secret, digest = signing.new_secret(), os.urandom(32)
        items.append((signing.public_key(secret), digest, signing.sign_digest(secret, digest)))
    start = time.perf_counter()
    for pubkey, digest, sig in items:
        signing.verify_digest(pubkey, digest, sig)
    return 4 * (time.perf_counter() - start) * 1000 / count


def run(seconds=5.0, rate=300.0, lanes=256, synchronous="FULL", progress=print, engines=("pbft",)):
    """The figures of the PBFT engine (flat keys) and, with "cometbft" in ``engines``, of
    CometBFT under the key "cometbft", from the same signed transactions in the same run."""
    funds = Funds()
    cores = os.cpu_count() or 1
    n = 4
    progress("  measuring one replica's execute cost (the ceiling) ...")
    cost_ms, cost_cpu = timed_execution(CEILING_TXS, synchronous)
    verify_ms = verify_cost_ms()
    ceiling = cores * 1000.0 / (n * cost_ms)
    progress("  the same with %d executors at once on %d cores, no consensus ..." % (n, cores))
    contended = contended_execution(n, CEILING_TXS, synchronous)
    contended_wall = sum(w for w, _ in contended) / n
    contended_cpu = sum(c for _, c in contended) / n
    contended_ceiling = 1000.0 / contended_wall
    offered_count = int(rate * seconds)
    saturated_count = int(max(ceiling, rate) * seconds * 1.5)
    progress("  building %d signed transactions with fresh RA-signed accounts ..." % (offered_count + saturated_count))
    mints, owned = funds.mints(2 * (offered_count + saturated_count))
    txs = funds.transactions(owned)
    options = {"ra_pubkeys": {"0": funds.ra_pubkey.hex()}, "faucet_pubkey": funds.faucet_pubkey.hex()}
    work = (options, synchronous, mints, txs[:offered_count], txs[offered_count:], rate, lanes, seconds, progress)
    progress("PBFT: %d replica processes" % n)
    report = bench_engines.pbft(*work)
    report.update({
        "engine": "pbft",
        "replicas": n,
        "cores": cores,
        "tx_bytes": len(txs[0]),
        "cpu_ms_per_tx_per_node": bench_engines.per_node(report["cpu_ms_per_tx"], n),
        "execute_ms_per_tx": cost_ms,
        "ceiling_tps": ceiling,
        "ceiling_ratio": report["tps"] / ceiling,
        "contended_ceiling_tps": contended_ceiling,
        "contended_ratio": report["tps"] / contended_ceiling,
        "execute_cpu_ms_per_tx": cost_cpu,
        "contended_cpu_ms_per_tx": contended_cpu,
        "verify_ms_per_tx": verify_ms,
        "verify_bound_tps": cores * 1000.0 / (n * verify_ms),
        "sqlite_synchronous": synchronous,
        "paper": PAPER,
    })
    if "cometbft" in engines:
        progress("CometBFT: %d validators, each with its ABCI application process" % n)
        comet = bench_engines.cometbft(*work)
        comet["cpu_ms_per_tx_per_node"] = bench_engines.per_node(comet["cpu_ms_per_tx"], n)
        comet["tps_ratio_to_pbft"] = comet["tps"] / report["tps"]
        report["cometbft"] = comet
    return report


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
        "%-44s %12.0f %14s" % ("%d executors at once, no consensus, tx/s" % r["replicas"],
                                r["contended_ceiling_tps"], "-"),
        "%-44s %11.0f%% %14s" % ("throughput / that", 100 * r["contended_ratio"], "-"),
        "%-44s %12s %14s" % ("an executor's CPU ms per tx, alone -> at once",
                             "%.3f->%.3f" % (r["execute_cpu_ms_per_tx"], r["contended_cpu_ms_per_tx"]), "-"),
        "%-44s %12.3f %14s" % ("of which 4 ECDSA verifications, ms per tx", r["verify_ms_per_tx"], "-"),
        "%-44s %12.0f %14s" % ("bound if verifying were all a replica did", r["verify_bound_tps"], "-"),
        "rejected during the runs: %d (expected 0); requests re-sent to every replica: %d" % (r["rejected"], r["resent"]),
        "CPU ms per tx per node at saturation: %.2f" % r["cpu_ms_per_tx_per_node"],
    ] + (comet_table(r) if "cometbft" in r else []))


def comet_table(r):
    """The CometBFT figures beside the PBFT ones of the same run, and where its time goes."""
    c = r["cometbft"]
    cpu = c["cpu_ms_per_tx"]
    consensus = sum(v for k, v in cpu.items() if k.endswith("cometbft")) / r["replicas"]
    app = sum(v for k, v in cpu.items() if k.endswith("app")) / r["replicas"]
    busy = c["busy_ms_per_tx"]
    rows = [
        "",
        "CometBFT %s, %d validators each with its ABCI application, timeout_commit %s, same transactions"
        % (c["version"], r["replicas"], c["timeout_commit"]),
        "%-44s %12s %14s" % ("figure", "PBFT", "CometBFT"),
        "%-44s %12.0f %14.0f" % ("confirmed tx/s at saturation", r["tps"], c["tps"]),
        "%-44s %12.1f %14.1f" % ("confirmation p50 ms at %.0f tx/s offered" % r["offered_tps"], r["p50_ms"], c["p50_ms"]),
        "%-44s %12.1f %14.1f" % ("confirmation p99 ms at %.0f tx/s offered" % r["offered_tps"], r["p99_ms"], c["p99_ms"]),
        "%-44s %12.2f %14.2f" % ("CPU ms per tx per node at saturation", r["cpu_ms_per_tx_per_node"],
                                 c["cpu_ms_per_tx_per_node"]),
        "%-44s %12s %14.2f" % ("  of which the cometbft process", "-", consensus),
        "%-44s %12s %14.2f" % ("  of which the ABCI application process", "-", app),
        "%-44s %12s %14.1f" % ("blocks per second", "-", c["blocks_per_s"]),
        "the applications' time in ABCI methods, ms per tx per node: %s" % ", ".join(
            "%s %.3f" % (kind, ms / r["replicas"]) for kind, ms in sorted(busy.items(), key=lambda kv: -kv[1])[:4]),
        "rejected during the runs: %d (expected 0)" % c["rejected"],
    ]
    return rows


def main(args):
    progress = (lambda s: None) if args.json else print
    engines = ("pbft", "cometbft") if getattr(args, "engine", "pbft") == "cometbft" else ("pbft",)
    report = run(seconds=args.seconds, rate=args.rate, lanes=args.lanes, progress=progress, engines=engines)
    print(json.dumps(report) if args.json else table(report))
    return 0
