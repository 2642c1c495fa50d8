"""One measurement of the ledger on either engine: ``bench ledger``'s runs.

The same signed transactions and the same load (``tools.load``) go through our PBFT
replicas or through CometBFT validators, each network on its own throw-away directory:
fund the coins through the faucet over consensus, an open loop at the offered rate, then
a closed loop at saturation. Around the saturated run the CPU time of every process of
every node is read from ``/proc``, so each figure is per confirmed transaction and per
node; on CometBFT split between the ``cometbft`` process and the ABCI application, whose
time per ABCI method (its own ``/status``) says where the application's share goes.
"""
import asyncio
import json
import os
import tempfile
import time

from plugpay.protocol import ledger_ops as L
from plugpay.tools import load

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid):
    """User + system CPU time of a running process, from ``/proc`` (None elsewhere)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def ok(result):
    return L.Result.decode(result).ok


async def measure(client, mints, offered, saturated, rate, lanes, seconds, progress, pids, busy=None):
    """Fund, offered load, saturation; figures, and the CPU seconds of ``pids`` (name ->
    pid) and of ``await busy()`` ({name: seconds}) over the saturated run, per transaction."""
    progress("  funding through the faucet over consensus (%d mints) ..." % len(mints))
    _, _, unfunded = await load.saturated(client, iter(mints), 64, check=ok, timeout=60)
    if unfunded:
        raise RuntimeError("%d faucet requests were refused" % unfunded)
    progress("  offered load: %.0f tx/s for %.0f s ..." % (rate, seconds))
    lat, elapsed, bad = await load.offered(client, offered, rate, check=ok)
    progress("  saturation: %d transactions in flight for %.0f s ..." % (lanes, seconds))
    before = dict((name, cpu_seconds(pid)) for name, pid in pids.items())
    busy_before = await busy() if busy else {}
    sat_lat, sat_elapsed, sat_bad = await load.saturated(client, iter(saturated), lanes, seconds, check=ok)
    cpu = dict((name, cpu_seconds(pid) - before[name]) for name, pid in pids.items()
               if before[name] is not None and cpu_seconds(pid) is not None)
    busy_after = await busy() if busy else {}
    confirmed = len(sat_lat)
    return {
        "offered_tps": rate,
        "offered_confirmed": len(lat),
        "p50_ms": load.percentile(lat, 50) * 1000,
        "p99_ms": load.percentile(lat, 99) * 1000,
        "tps": confirmed / sat_elapsed,
        "saturation_p50_ms": load.percentile(sat_lat, 50) * 1000,
        "saturation_p99_ms": load.percentile(sat_lat, 99) * 1000,
        "rejected": bad + sat_bad,
        "cpu_ms_per_tx": dict((name, 1000.0 * s / max(confirmed, 1)) for name, s in sorted(cpu.items())),
        "busy_ms_per_tx": dict((name, 1000.0 * (s - busy_before.get(name, 0)) / max(confirmed, 1))
                               for name, s in sorted(busy_after.items())),
        "saturation_seconds": sat_elapsed,
        "saturation_confirmed": confirmed,
    }


def pbft(options, synchronous, mints, offered, saturated, rate, lanes, seconds, progress):
    from plugpay.host import cluster
    from plugpay.host.client import Client

    with tempfile.TemporaryDirectory(prefix="plugpay-bench-pbft-") as d:
        path = cluster.generate(d, n=4, app="plugpay.host.ledger:Ledger", app_options=options,
                                sqlite_synchronous=synchronous)
        with cluster.LocalCluster(path) as lc:
            lc.start_all()
            lc.wait_listening()
            pids = dict(("replica %d" % i, p.pid) for i, p in lc.procs.items())

            async def run():
                client = Client(lc.config, lc.secrets, lanes=max(lanes, int(rate * 2)))
                await client.start(wait_for=4)
                try:
                    figures = await measure(client, mints, offered, saturated, rate, lanes, seconds, progress, pids)
                    figures["resent"] = client.stats["retransmissions"]
                    return figures
                finally:
                    await client.close()

            return asyncio.run(run())


def cometbft(options, synchronous, mints, offered, saturated, rate, lanes, seconds, progress):
    from plugpay.host import comet_cluster, comet_testnet
    from plugpay.host.comet_client import CometClient

    with tempfile.TemporaryDirectory(prefix="plugpay-bench-cometbft-") as d:
        path = comet_testnet.generate(d, n=4, app_options=options, sqlite_synchronous=synchronous)
        with comet_cluster.LocalCometCluster(path) as lc:
            lc.start_all()
            lc.wait_ready()
            pids = {}
            for i in range(4):
                pids["node %d cometbft" % i] = lc.nodes[i].pid
                pids["node %d app" % i] = lc.apps[i].pid

            async def run():
                async with CometClient(lc.config, connections=64) as client:
                    heights = []

                    async def busy():
                        heights.append((await client.latest_height(), time.monotonic()))
                        return await _app_seconds(lc.config)

                    figures = await measure(client, mints, offered, saturated, rate, lanes, seconds, progress, pids,
                                            busy)
                    (h0, t0), (h1, t1) = heights
                    figures["blocks_per_s"] = (h1 - h0) / (t1 - t0)
                    figures["refused_before_ordering"] = client.stats["refused_before_ordering"]
                    return figures

            figures = asyncio.run(run())
            figures.update(version=comet_testnet.cometbft.VERSION,
                           timeout_commit=comet_testnet.SETTINGS[("consensus", "timeout_commit")])
            return figures


async def _app_seconds(config):
    """Seconds every node's application spent in each ABCI method so far, summed over the
    nodes: {method: seconds}."""
    from plugpay.host.comet_rpc import Rpc, b64

    total = {}
    for node in config["nodes"]:
        rpc = Rpc(node["rpc"], connections=1)
        try:
            answer = await rpc.call("abci_query", path="/status", data="")
        finally:
            await rpc.close()
        for kind, seconds in json.loads(b64(answer["response"].get("value")) or b"{}").get("busy_seconds", {}).items():
            total[kind] = total.get(kind, 0) + seconds
    return total


def per_node(cpu_ms_per_tx, nodes=4):
    """Per-node CPU ms per transaction: the sum over a node's processes, averaged over nodes."""
    return sum(cpu_ms_per_tx.values()) / nodes
