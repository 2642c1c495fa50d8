"""Device -> MQTT gateway -> PBFT ledger -> device round trips, on amqtt and on Mosquitto.

``python -m plugpay.tools.bench_gateway [--count 200] [--json]``

Four replica processes run the payment ledger; the gateway runs in this process (with the
embedded amqtt broker in the same loop, as ``plugpay ledger up`` runs it), or against a
Mosquitto subprocess. The device is a paho client in a process of its own sending real
signed 2-in/2-out transactions, first one at a time (each waits for its ``Result``), then
all at once. The baseline, measured in the same run, is the same transactions submitted
straight through a PBFT client, without MQTT. Figures, never a pass/fail.
"""
import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import socket
import tempfile
import time

from plugpay.host import cluster
from plugpay.host.broker import EmbeddedBroker, MosquittoProcess
from plugpay.host.client import Client
from plugpay.host.gateway import Gateway
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import topics
from plugpay.protocol.port import sha256
from plugpay.tools import load
from plugpay.tools.bench_ledger import Funds

MOSQUITTO = "/usr/sbin/mosquitto"


def _device(host, port, txs, concurrent, answer):
    """The device process: publish ``txs`` and send back each one's round trip in seconds."""
    import paho.mqtt.client as paho

    replies = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-device", protocol=paho.MQTTv311)
    client.max_inflight_messages_set(len(txs))
    client.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_message = lambda c, u, m: replies.put((time.perf_counter(), L.Result.decode(m.payload)))
    client.connect(host, port)
    client.loop_start()
    client.subscribe(topics.topic(topics.LEDGER_RESULT, "bench"), 1)
    time.sleep(0.3)  # SUBACK
    submit = topics.topic(topics.LEDGER_SUBMIT, "bench")
    sent, done = {}, []
    t0 = time.perf_counter()
    for tx in txs:
        sent[sha256(tx)] = time.perf_counter()
        client.publish(submit, tx, 1)
        if not concurrent:
            done.append(replies.get(timeout=30))
    print("device published %d in %.0f ms" % (len(txs), (time.perf_counter() - t0) * 1e3), flush=True)
    while len(done) < len(txs):
        done.append(replies.get(timeout=30))
    client.loop_stop()
    client.disconnect()
    answer.send([(at - sent[r.request_digest], r.ok) for at, r in done])


def _receive(conn, proc):
    while not conn.poll(0.5):
        if not proc.is_alive():
            raise RuntimeError("the device process exited with %s" % proc.exitcode)
    return conn.recv()


async def _through_device(host, port, txs, concurrent):
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_device, args=(host, port, txs, concurrent, child))
    proc.start()
    try:
        rows = await asyncio.get_running_loop().run_in_executor(None, _receive, parent, proc)
    finally:
        proc.join(10)
    return [lat for lat, _ in rows], sum(1 for _, ok in rows if not ok)


async def _direct(client, txs, concurrent):
    async def one(tx):
        t = time.perf_counter()
        ok = L.Result.decode(await client.submit(tx)).ok
        return time.perf_counter() - t, ok

    if concurrent:
        rows = await asyncio.gather(*[one(tx) for tx in txs])
    else:
        rows = [await one(tx) for tx in txs]
    return [lat for lat, _ in rows], sum(1 for _, ok in rows if not ok)


def _summary(latencies, bad):
    return {"count": len(latencies), "p50_ms": load.percentile(latencies, 50) * 1e3,
            "p99_ms": load.percentile(latencies, 99) * 1e3, "rejected": bad}


@contextlib.asynccontextmanager
async def _broker(name, directory):
    """The port of a running broker: the embedded amqtt (in this loop) or Mosquitto."""
    if name == "mosquitto":
        with MosquittoProcess(directory, MOSQUITTO) as mosquitto:
            yield mosquitto.port
    else:
        async with EmbeddedBroker("127.0.0.1", cluster.free_ports(1)[0]) as embedded:
            yield embedded.port


def run(count=200, progress=print):
    funds = Funds()
    brokers = ["amqtt"] + (["mosquitto"] if shutil.which(MOSQUITTO) else [])
    runs = [("direct", mode) for mode in ("sequential", "concurrent")]
    runs += [(b, mode) for b in brokers for mode in ("sequential", "concurrent")]
    progress("  building %d signed transactions with fresh RA-signed accounts ..." % (count * len(runs)))
    mints, owned = funds.mints(2 * count * len(runs))
    txs = funds.transactions(owned)
    options = {"ra_pubkeys": {"0": funds.ra_pubkey.hex()}, "faucet_pubkey": funds.faucet_pubkey.hex()}
    report = {"replicas": 4, "cores": os.cpu_count(), "tx_bytes": len(txs[0]), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-gateway-") as d:
        path = cluster.generate(d, app="plugpay.host.ledger:Ledger", app_options=options)
        with cluster.LocalCluster(path) as lc:
            lc.start_all()
            lc.wait_listening()

            async def measure():
                async with Client(lc.config, lc.secrets, name="bench-direct", lanes=count) as client:
                    progress("  funding %d coins through the faucet ..." % len(owned))
                    await asyncio.gather(*[client.submit(m) for m in mints])
                    batches = iter(txs[i:i + count] for i in range(0, len(txs), count))
                    for mode in ("sequential", "concurrent"):
                        progress("  direct PBFT client, %s ..." % mode)
                        report["runs"]["direct/" + mode] = _summary(*await _direct(client, next(batches), mode == "concurrent"))
                    for name in brokers:
                        async with _broker(name, d) as port:
                            async with Gateway(lc.config, lc.secrets, "127.0.0.1", port, name="bench-" + name):
                                for mode in ("sequential", "concurrent"):
                                    progress("  device -> %s -> gateway -> ledger, %s ..." % (name, mode))
                                    lat = await _through_device("127.0.0.1", port, next(batches), mode == "concurrent")
                                    report["runs"][name + "/" + mode] = _summary(*lat)

            asyncio.run(measure())
    return report


def table(report):
    lines = ["gateway bench: 4 replica processes on %d cores, real 2-in/2-out transactions (%d bytes)"
             % (report["cores"], report["tx_bytes"]),
             "%-24s %6s %9s %9s %10s %10s" % ("run", "count", "p50 ms", "p99 ms", "p50/direct", "rejected")]
    runs = report["runs"]
    for name, r in runs.items():
        base = runs["direct/" + name.split("/")[1]]["p50_ms"]
        lines.append("%-24s %6d %9.2f %9.2f %9.1fx %10d" % (name, r["count"], r["p50_ms"], r["p99_ms"],
                                                             r["p50_ms"] / base, r["rejected"]))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m plugpay.tools.bench_gateway", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=200, help="transactions per run (default 200)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = p.parse_args(argv)
    report = run(args.count, progress=(lambda s: None) if args.json else print)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
