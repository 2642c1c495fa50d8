"""``plugpay bench recovery``: how soon the ledger confirms again after replicas are killed
with kill -9 and restarted, and whether anything confirmed went missing.

Four real replica processes (the kvapp application, real TCP and SQLite) run under a steady
load of puts from a client. One run goes through the phases below in order; each figure is
the seconds from the event to the confirmation of a put submitted at that moment:

* ``failover_s``: kill -9 of the primary, not restarted (a view change, for scale); then it
  is restarted and the four settle in one view;
* ``one_s``: kill -9 of the primary, restarted at once, from the restart;
* ``two_high_view_s``: primary failures until the view is above n, then kill -9 of the
  primary and a backup at once; both are restarted once the two left have timed out and
  started changing views (the wedge of issue 16); from the last restart;
* ``all_four_s``: kill -9 of all four at once, restarted in a random order; from the last
  restart.

The put timed is sent by a client of its own that re-sends it to every replica every
``PROBE_RESEND`` seconds: the load's client backs off up to 4 s after an outage, which would
be measured instead of the ledger. A phase that does not confirm within ``timeout`` seconds
is reported as None and the run goes on. Afterwards the load stops, the replicas are given time to converge and are
stopped, and their databases are read: ``lost`` counts confirmed puts missing on any
replica, ``forks`` the heights at which two replicas hold different blocks.
"""
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time

from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.protocol import codec

N = 4
WORKERS = 8
PROBE_RESEND = 0.1


class Load:
    """``WORKERS`` lanes putting fresh keys as fast as the ledger confirms them."""

    def __init__(self, client):
        self.client = client
        self.confirmed = []
        self.count = 0
        self.tasks = []

    def key(self, prefix):
        self.count += 1
        return "%s%d" % (prefix, self.count)

    async def _worker(self):
        while True:
            key = self.key("load")
            try:
                await self.client.submit(codec.dumps(["put", key, b"v"]), timeout=8.0)
            except TimeoutError:
                continue
            self.confirmed.append(key)

    def start(self):
        self.tasks = [asyncio.ensure_future(self._worker()) for _ in range(WORKERS)]

    async def stop(self):
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Phases:
    """The cluster, the load, the probing client and the phases' common moves."""

    def __init__(self, lc, client, load, prober, timeout):
        self.lc = lc
        self.client = client
        self.load = load
        self.prober = prober
        self.timeout = timeout
        self.f = lc.config["f"]

    async def view(self):
        """The view f+1 replicas report working in, or None."""
        views = sorted((s[1] for s in await self.client.status() if s is not None and s[2]), reverse=True)
        return views[self.f] if len(views) > self.f else None

    async def probe(self, since):
        """Seconds from ``since`` to the confirmation of a put submitted now, or None."""
        key = self.load.key("probe")
        try:
            await self.prober.submit(codec.dumps(["put", key, b"v"]), timeout=self.timeout)
        except TimeoutError:
            return None
        self.load.confirmed.append(key)
        return time.monotonic() - since

    async def settle(self):
        """Wait (up to the timeout) until all four work in one view; return it or None."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            status = await self.client.status()
            views = {s[1] for s in status if s is not None and s[2]}
            if all(s is not None and s[2] for s in status) and len(views) == 1:
                return views.pop()
            await asyncio.sleep(0.1)
        return None

    async def primary(self):
        view = await self.view()
        return (0 if view is None else view) % N

    async def failover(self):
        primary = await self.primary()
        self.lc.kill(primary)
        seconds = await self.probe(time.monotonic())
        self.lc.start(primary)
        await self.settle()
        return seconds

    async def one(self):
        primary = await self.primary()
        self.lc.kill(primary)
        self.lc.start(primary)
        seconds = await self.probe(time.monotonic())
        await self.settle()
        return seconds

    async def two_high_view(self, pause):
        """Returns (seconds, the view the two were killed in)."""
        view = await self.view() or 0
        while view <= N:
            await self.failover()
            view = await self.view()
            if view is None:
                return None, None
        primary, backup = view % N, (view + 1) % N
        self.lc.kill(primary)
        self.lc.kill(backup)
        await asyncio.sleep(pause)
        self.lc.start(primary)
        self.lc.start(backup)
        seconds = await self.probe(time.monotonic())
        await self.settle()
        return seconds, view

    async def all_four(self, rng):
        """Returns (seconds, the restart order)."""
        for i in range(N):
            self.lc.kill(i)
        order = rng.sample(range(N), N)
        for i in order:
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            self.lc.start(i)
        seconds = await self.probe(time.monotonic())
        await self.settle()
        return seconds, order


def read_replica(db_path):
    """``({height: hash}, {key})`` from a replica's database."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        chain = dict(conn.execute("SELECT height, hash FROM blocks"))
        keys = {k for (k,) in conn.execute("SELECT key FROM kv")}
        return chain, keys
    finally:
        conn.close()


def audit(lc, confirmed):
    """(confirmed puts missing on at least one replica, heights where the chains differ)."""
    replicas = [read_replica(lc.db_path(i)) for i in range(N)]
    lost = {k for k in confirmed if any(k not in keys for _, keys in replicas)}
    heights = set().union(*(chain for chain, _ in replicas))
    forks = sum(1 for h in heights if len({chain[h] for chain, _ in replicas if h in chain}) > 1)
    return len(lost), forks


async def _converge(lc, timeout):
    """Wait until every replica's database holds the same height (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heights = {len(read_replica(lc.db_path(i))[0]) for i in range(N)}
        if len(heights) == 1:
            return
        await asyncio.sleep(0.2)


def run(pbft=None, timeout=60.0, seed=None, say=print):
    """Measure every phase on a fresh cluster; return the figures as a dict. ``pbft``
    overrides protocol parameters (``pbft.Config``); ``seed`` fixes the restart order."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-recovery-") as d:
        path = cluster.generate(d, n=N, pbft=pbft)
        with cluster.LocalCluster(path) as lc:
            lc.start_all()
            lc.wait_listening()
            request_timeout = lc.config["pbft"].get("request_timeout", 1.0)

            async def measure():
                async with Client(lc.config, lc.secrets, lanes=WORKERS) as client, \
                        Client(lc.config, lc.secrets, retransmit=PROBE_RESEND, max_retransmit=PROBE_RESEND) as prober:
                    load = Load(client)
                    phases = Phases(lc, client, load, prober, timeout)
                    load.start()
                    await asyncio.sleep(1.0)
                    report = {}
                    say("  failover: kill -9 of the primary ...")
                    report["failover_s"] = await phases.failover()
                    say("  one: kill -9 of the primary, restarted at once ...")
                    report["one_s"] = await phases.one()
                    say("  two: primary failures until the view is above %d, then kill -9 of two ..." % N)
                    report["two_high_view_s"], report["two_view"] = await phases.two_high_view(2 * request_timeout)
                    say("  all four: kill -9 of every replica, restarted in a random order ...")
                    report["all_four_s"], report["all_four_order"] = await phases.all_four(rng)
                    await load.stop()
                    report["confirmed"] = len(load.confirmed)
                    return report, load.confirmed

            report, confirmed = asyncio.run(measure())
            say("  waiting for the replicas to converge, then reading their databases ...")
            asyncio.run(_converge(lc, timeout))
            lc.stop_all()
            report["lost"], report["forks"] = audit(lc, confirmed)
    report["request_timeout_s"] = request_timeout
    report["timeout_s"] = timeout
    return report


def _seconds(value, baseline):
    if value is None:
        return "no confirmation within the timeout"
    ratio = "" if not baseline else "   %5.1fx failover" % (value / baseline)
    return "%6.2f s%s" % (value, ratio)


def main(args):
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    say("plugpay bench recovery: 4 replica processes under load, kill -9 and restart")
    r = run(say=say)
    if args.json:
        print(json.dumps(r, sort_keys=True))
        return 0 if r["lost"] == 0 and r["forks"] == 0 else 1
    base = r["failover_s"]
    print()
    print("seconds to the next confirmed put (request timeout %.1f s; none within %.0f s: stuck)"
          % (r["request_timeout_s"], r["timeout_s"]))
    print("  failover: primary killed, not restarted        %s" % _seconds(base, None))
    print("  one: primary killed, restarted at once          %s" % _seconds(r["one_s"], base))
    print("  two at once in view %-4s (above n), restarted  %s" % (r["two_view"], _seconds(r["two_high_view_s"], base)))
    print("  all four at once, restarted in order %-9s %s" % (" ".join(map(str, r["all_four_order"])),
                                                              _seconds(r["all_four_s"], base)))
    print("confirmed puts %d; missing on some replica (lost) %d; heights where replicas differ (forks) %d"
          % (r["confirmed"], r["lost"], r["forks"]))
    return 0 if r["lost"] == 0 and r["forks"] == 0 else 1
