"""``plugpay bench dashboard``: what following the ledger costs it, and how fast the page is.

Four replica processes run the payment ledger under ``plugpay bench ledger``'s load (signed
2-in/2-out transactions between fresh RA-signed accounts, ``lanes`` in flight), watched by
``plugpay ledger watch --json --dashboard 0`` (a process of its own, printing every event
and serving the page) with the page open in headless Chromium (Debian's, driven by
Playwright in a process of its own). Saturation runs alternate in the same cluster: alone,
with the watcher and the browser stopped (SIGSTOP, so they take no CPU), watch only, with
the browser stopped (what `ledger watch` and its server cost; a browser usually runs on
another machine), and observed, with both running; the order reverses every round so a
drift of the cluster's speed over the rounds falls on all alike. Between runs the watcher
and the page catch up.

Why this way: on two cores the cluster's throughput moves by tens of percent from run to
run (SQLite checkpoints, scheduling), far more than the 5 % to be resolved; paired runs
in one cluster, with the observers stopped rather than started and stopped, compare the
same cluster at the same moment with and without them.

Figures:

* throughput at saturation in each arm (medians; and the median of the paired ratios),
  the slowdowns, and the CPU each party spends per confirmed transaction;
* whether the watcher and the page keep up: how far behind the tip each is when the load
  stops, and how long each then takes to reach it;
* at light load (one request at a time), the ledger's own confirmation time as the
  baseline, then how much later the request's event line is printed and its block is on
  the screen (the page's own clock, ``Date.now()``, on the same machine);
* at saturation, how long after the watcher printed a block the page showed it;
* the page's first contentful paint and first render with data.
"""
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request

from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.tools import bench_engines, bench_ledger, load

CHROMIUM = "/usr/bin/chromium"
ARMS = ("alone", "server", "observed")  # in this order in odd rounds, reversed in even ones
ARM_NAMES = {"alone": "alone (the observers stopped)", "server": "the watcher and its server only (the browser stopped)",
             "observed": "observed (the watcher and the page)"}
PROBES = 20  # single requests timed at light load, per observed run
CATCH_UP_S = 60.0
TPS_CAP = 800  # transactions built per second of a run: more than two cores confirm


def _browser(url):
    """The page in headless Chromium, in this process: prints its paint figures as JSON,
    then answers ``shown`` (the heights on screen and when) on stdin until ``quit``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function("window.plugpayFirstRender !== undefined", timeout=30000)
        print(json.dumps(page.evaluate("""() => ({
            first_contentful_paint_ms: performance.getEntriesByName('first-contentful-paint')[0].startTime,
            first_render_ms: window.plugpayFirstRender})""")), flush=True)
        for line in sys.stdin:
            if line.strip() != "shown":
                break
            print(json.dumps(page.evaluate("window.plugpayShown")), flush=True)
        browser.close()


class Observer:
    """``ledger watch --json --dashboard 0`` and the page in Chromium, as processes: when
    each event line arrived (by request id, and the first line of each height)."""

    def __init__(self, config_path):
        self.config_path = config_path
        self.line_at = {}     # request id -> (time printed, height)
        self.height_at = {}   # height -> time its first event line was printed
        self.lines = 0
        self.watch = self.browser = None
        self.paint = None
        self.stopped = []

    async def start(self):
        self.watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plugpay.tools.cli", "ledger", "watch", "--json", "--dashboard", "0",
            "--config", self.config_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        line = (await asyncio.wait_for(self.watch.stderr.readline(), 30)).decode()
        if not line.startswith("dashboard: "):
            raise RuntimeError("ledger watch did not start its dashboard: %r" % line)
        self.url = line.split()[-1]
        self.reader = asyncio.ensure_future(self._read())
        code = "from plugpay.tools.bench_dashboard import _browser; _browser(%r)" % self.url
        self.browser = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE,
                                                            stdout=asyncio.subprocess.PIPE)
        self.paint = json.loads(await asyncio.wait_for(self.browser.stdout.readline(), 60))

    async def _read(self):
        async for line in self.watch.stdout:
            at = time.time()
            event = json.loads(line)
            self.lines += 1
            self.line_at[event["id"]] = (at, event["height"])
            self.height_at.setdefault(event["height"], at)

    def printed_height(self):
        return max(self.height_at, default=0)

    async def dashboard_height(self):
        """The newest block the dashboard's server holds (its replay done up to there)."""
        def fetch():
            with urllib.request.urlopen(self.url + "state", timeout=10) as answer:
                blocks = json.loads(answer.read())["blocks"]
            return blocks[-1]["height"] if blocks else 0
        return await asyncio.get_running_loop().run_in_executor(None, fetch)

    async def shown(self):
        """{height: time on screen (s)} from the page."""
        self.browser.stdin.write(b"shown\n")
        await self.browser.stdin.drain()
        return {int(h): t / 1000 for h, t in json.loads(await self.browser.stdout.readline()).items()}

    def pause(self, watcher=True):
        """SIGSTOP the browser helper and every process under it (Chromium starts sessions
        of its own, so by parentage, not by process group), and the watcher unless told."""
        self.stopped = [self.browser.pid] + _descendants(self.browser.pid)
        if watcher:
            self.stopped += [self.watch.pid] + _descendants(self.watch.pid)
        for pid in self.stopped:
            _signal(pid, signal.SIGSTOP)

    def resume(self):
        for pid in self.stopped:
            _signal(pid, signal.SIGCONT)
        self.stopped = []

    async def stop(self):
        self.resume()
        if self.browser is not None:
            self.browser.stdin.write(b"quit\n")
            await self.browser.stdin.drain()
            await asyncio.wait_for(self.browser.wait(), 30)
        if self.watch is not None:
            self.watch.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.watch.wait(), 30)
            self.reader.cancel()


def _descendants(pid):
    """Every process below ``pid``, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _command(pid):
    """The process's command name, from ``/proc`` ("" once it is gone)."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


async def _until(predicate, timeout=CATCH_UP_S, pause=0.02):
    """Seconds until ``await predicate()`` is true (None if it never was)."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(pause)
    return time.monotonic() - start


async def _probe(client, ops):
    """Requests one at a time: [(request id, sent, confirmed)] in wall-clock seconds."""
    out = []
    for ident, op in ops:
        sent = time.time()
        if not bench_engines.ok(await client.submit(op)):
            raise RuntimeError("a probe transaction was refused")
        out.append((ident, sent, time.time()))
    return out


def _ms(values, p):
    return round(load.percentile(values, p) * 1000, 1) if values else None


class Runs:
    """The paired runs on one cluster with one observer."""

    def __init__(self, client, observer, lanes, seconds, replica_pids):
        self.client = client
        self.observer = observer
        self.lanes = lanes
        self.seconds = seconds
        self.replica_pids = replica_pids
        self.shown = {}

    def cpu(self):
        """CPU seconds so far of the replicas, the watcher, and the browser with Chromium."""
        def total(pids):
            return sum(bench_engines.cpu_seconds(pid) or 0.0 for pid in pids)
        o = self.observer
        helper = [o.browser.pid] + _descendants(o.browser.pid)
        chromium = [pid for pid in helper if _command(pid).startswith("chrom")]
        return {"replicas": total(self.replica_pids), "watch": total([o.watch.pid] + _descendants(o.watch.pid)),
                "browser": total(chromium), "driver": total(set(helper) - set(chromium))}

    async def page_height(self):
        self.shown.update(await self.observer.shown())
        return max(self.shown, default=0)

    async def caught_up(self):
        """Once the load stops: (watch's blocks behind, page's blocks behind, seconds for
        each to reach the tip)."""
        tip = await self.client.height()
        watch_lag = tip - self.observer.printed_height()
        page_lag = tip - await self.page_height()
        watch_s = await _until(lambda: _value(self.observer.printed_height() >= tip))
        page_s = await _until(lambda: _at_least(self.page_height(), tip), pause=0.1)
        return watch_lag, page_lag, watch_s, page_s

    async def saturate(self, txs, arm):
        """One saturated run: ``arm`` is "alone" (the observers stopped), "server" (the
        watcher and its dashboard server running, the browser stopped) or "observed"."""
        observed = arm == "observed"
        first = self.observer.printed_height() + 1
        if not observed:
            self.observer.pause(watcher=arm == "alone")
        before = self.cpu()
        try:
            lat, elapsed, bad = await load.saturated(self.client, iter(txs), self.lanes, self.seconds,
                                                     check=bench_engines.ok)
        finally:
            after = self.cpu()
            self.observer.resume()
        lags = await self.caught_up()
        cpu_ms = dict((name, 1000 * (after[name] - before[name]) / max(1, len(lat))) for name in after)
        return {"tps": len(lat) / elapsed, "rejected": bad, "lags": lags, "cpu_ms_per_tx": cpu_ms,
                "screen_after_line": [self.shown[h] - at for h, at in self.observer.height_at.items()
                                      if h >= first and h in self.shown] if observed else []}

    async def probe(self, ops):
        """Light load: (confirmation, line after confirmation, screen after confirmation) s."""
        probed = await _probe(self.client, ops)
        await self.caught_up()
        rows = []
        for ident, sent, confirmed in probed:
            printed, height = self.observer.line_at[ident]
            rows.append((confirmed - sent, printed - confirmed, self.shown[height] - confirmed))
        return rows


async def _at_least(coro, value):
    return (await coro) >= value


async def _value(value):
    return value


def run(seconds=5.0, lanes=256, rounds=4, progress=print):
    if not os.path.exists(CHROMIUM):
        raise RuntimeError("%s is missing: tools/setup.sh installs Debian's chromium" % CHROMIUM)
    funds = bench_ledger.Funds()
    per_run = int(TPS_CAP * seconds)
    run_count = len(ARMS) * rounds + 1
    progress("  building %d signed transactions with fresh RA-signed accounts ..." % (run_count * per_run))
    mints, owned = funds.mints(2 * (run_count * per_run + PROBES))
    txs = funds.transactions(owned)
    probes, txs = _with_ids(txs[:PROBES]), txs[PROBES:]
    batches = [txs[i * per_run:(i + 1) * per_run] for i in range(run_count)]
    options = {"ra_pubkeys": {"0": funds.ra_pubkey.hex()}, "faucet_pubkey": funds.faucet_pubkey.hex()}
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-dashboard-") as d:
        path = cluster.generate(d, n=4, app="plugpay.host.ledger:Ledger", app_options=options)
        with cluster.LocalCluster(path) as lc:
            lc.start_all()
            lc.wait_listening()

            async def measure():
                client = Client(lc.config, lc.secrets, lanes=lanes)
                await client.start(wait_for=4)
                observer = Observer(lc.config_path)
                try:
                    progress("  funding %d coins through the faucet over consensus ..." % len(owned))
                    _, _, unfunded = await load.saturated(client, iter(mints), 16, check=bench_engines.ok, timeout=60)
                    if unfunded:
                        raise RuntimeError("%d faucet requests were refused" % unfunded)
                    progress("  ledger watch --json --dashboard and the page in Chromium: replaying the chain ...")
                    await observer.start()
                    tip = await client.height()
                    if await _until(lambda: _at_least(observer.dashboard_height(), tip)) is None:
                        raise RuntimeError("the dashboard did not replay the chain within %d s" % CATCH_UP_S)
                    runs = Runs(client, observer, lanes, seconds, [p.pid for p in lc.procs.values()])
                    progress("  warm-up: %.0f s at saturation, observed ..." % seconds)
                    await runs.saturate(batches[-1], "observed")
                    probed = await runs.probe(probes)
                    arms = dict((arm, []) for arm in ARMS)
                    for r in range(rounds):
                        for i, arm in enumerate(ARMS if r % 2 == 0 else ARMS[::-1]):
                            progress("  round %d: %.0f s at saturation, %s ..." % (r + 1, seconds, ARM_NAMES[arm]))
                            arms[arm].append(await runs.saturate(batches[len(ARMS) * r + i], arm))
                    return arms, probed, observer.paint, observer.lines
                finally:
                    await observer.stop()
                    await client.close()

            arms, probed, paint, lines = asyncio.run(measure())
    result = report(arms, probed, paint, lines, lanes, seconds)
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)  # other work on the machine shows here
    return result


def _with_ids(txs):
    """(request id, bytes) of probe transactions: their txhash is their id."""
    from plugpay.protocol import structures as S

    return [(S.Transaction.decode(tx).txhash().hex(), tx) for tx in txs]


def report(arms, probed, paint, lines, lanes, seconds):
    alone, server, observed = arms["alone"], arms["server"], arms["observed"]
    tps_alone = statistics.median(r["tps"] for r in alone)
    tps_server = statistics.median(r["tps"] for r in server)
    tps_observed = statistics.median(r["tps"] for r in observed)
    ratios = [o["tps"] / a["tps"] for a, o in zip(alone, observed)]
    server_ratios = [o["tps"] / a["tps"] for a, o in zip(alone, server)]
    column = lambda i: [row[i] for row in probed]  # noqa: E731
    return {
        "replicas": 4, "cores": os.cpu_count(), "lanes": lanes, "seconds_per_run": seconds, "rounds": len(alone),
        "tps_alone": [round(r["tps"], 1) for r in alone], "tps_observed": [round(r["tps"], 1) for r in observed],
        "tps_server": [round(r["tps"], 1) for r in server],
        "tps_alone_median": round(tps_alone, 1), "tps_observed_median": round(tps_observed, 1),
        "tps_server_median": round(tps_server, 1),
        "server_slowdown_pct": round(100 * (1 - tps_server / tps_alone), 1),
        "server_paired_slowdown_pct": round(100 * (1 - statistics.median(server_ratios)), 1),
        "slowdown_pct": round(100 * (1 - tps_observed / tps_alone), 1),
        "paired_slowdown_pct": round(100 * (1 - statistics.median(ratios)), 1),
        "rejected": sum(r["rejected"] for r in alone + server + observed),
        "confirm_p50_ms": _ms(column(0), 50),
        "line_after_confirm_p50_ms": _ms(column(1), 50), "line_after_confirm_p99_ms": _ms(column(1), 99),
        "screen_after_confirm_p50_ms": _ms(column(2), 50), "screen_after_confirm_p99_ms": _ms(column(2), 99),
        "screen_after_line_at_saturation_p50_ms": _ms(flat(observed, "screen_after_line"), 50),
        "screen_after_line_at_saturation_p99_ms": _ms(flat(observed, "screen_after_line"), 99),
        "watch_lag_blocks_at_end": [r["lags"][0] for r in observed],
        "page_lag_blocks_at_end": [r["lags"][1] for r in observed],
        "watch_catch_up_s": [_round(r["lags"][2]) for r in observed],
        "page_catch_up_s": [_round(r["lags"][3]) for r in observed],
        "cpu_ms_per_tx_alone": _cpu(alone), "cpu_ms_per_tx_server": _cpu(server),
        "cpu_ms_per_tx_observed": _cpu(observed),
        "events_printed": lines,
        "first_contentful_paint_ms": round(paint["first_contentful_paint_ms"], 1),
        "first_render_ms": round(paint["first_render_ms"], 1),
    }


def _cpu(runs):
    """Median CPU ms per confirmed transaction of each party (all four replicas together)."""
    return dict((name, round(statistics.median(r["cpu_ms_per_tx"][name] for r in runs), 3))
                for name in runs[0]["cpu_ms_per_tx"])


def flat(runs, key):
    return [v for r in runs for v in r[key]]


def _round(value):
    return None if value is None else round(value, 2)


def table(r):
    return "\n".join([
        "dashboard bench: 4 replica processes on %d cores under bench ledger's saturation load (%d lanes), %d rounds"
        " of %.0f s alone, watched by `ledger watch --json --dashboard` only, and observed (the watcher and the page"
        " in headless Chromium)"
        % (r["cores"], r["lanes"], r["rounds"], r["seconds_per_run"]),
        "%-52s %9s %12s %9s" % ("figure", "alone", "watch only", "observed"),
        "%-52s %9.1f %12.1f %9.1f" % ("confirmed tx/s at saturation (median)", r["tps_alone_median"],
                                      r["tps_server_median"], r["tps_observed_median"]),
        "%-52s %s" % ("  per round: alone", " ".join("%.0f" % v for v in r["tps_alone"])),
        "%-52s %s" % ("             watch only", " ".join("%.0f" % v for v in r["tps_server"])),
        "%-52s %s" % ("             observed", " ".join("%.0f" % v for v in r["tps_observed"])),
        "%-52s %9s %11.1f%% %8.1f%%" % ("slowdown of the ledger, medians (target: <= 5 %)", "-",
                                        r["server_slowdown_pct"], r["slowdown_pct"]),
        "%-52s %9s %11.1f%% %8.1f%%" % ("slowdown, median of the rounds' paired ratios", "-",
                                        r["server_paired_slowdown_pct"], r["paired_slowdown_pct"]),
        "observed runs:",
        "%-52s %s" % ("  blocks behind the tip when the load stops: watch", r["watch_lag_blocks_at_end"]),
        "%-52s %s" % ("                                              page", r["page_lag_blocks_at_end"]),
        "%-52s %s" % ("  seconds to reach the tip then: watch", r["watch_catch_up_s"]),
        "%-52s %s" % ("                                 page", r["page_catch_up_s"]),
        "%-52s %s/%s" % ("  block on screen after its line, p50/p99 ms", r["screen_after_line_at_saturation_p50_ms"],
                         r["screen_after_line_at_saturation_p99_ms"]),
        "%-52s %9s %12s %9s" % ("CPU ms per confirmed tx: the 4 replicas together", r["cpu_ms_per_tx_alone"]["replicas"],
                                r["cpu_ms_per_tx_server"]["replicas"], r["cpu_ms_per_tx_observed"]["replicas"]),
        "%-52s %9s %12s %9s" % ("  ledger watch (feed, event lines, dashboard server)", "-",
                                r["cpu_ms_per_tx_server"]["watch"], r["cpu_ms_per_tx_observed"]["watch"]),
        "%-52s %9s %12s %9s" % ("  the page in headless Chromium", "-", "-", r["cpu_ms_per_tx_observed"]["browser"]),
        "%-52s %9s %12s %9s" % ("  the bench's Playwright driver reading the page", "-", "-",
                                r["cpu_ms_per_tx_observed"]["driver"]),
        "light load, one request at a time (%d):" % PROBES,
        "%-52s %16s" % ("  confirmation p50 ms (the baseline)", r["confirm_p50_ms"]),
        "%-52s %16s" % ("  event line printed after confirmation, p50/p99 ms",
                        "%s/%s" % (r["line_after_confirm_p50_ms"], r["line_after_confirm_p99_ms"])),
        "%-52s %16s" % ("  block on screen after confirmation, p50/p99 ms",
                        "%s/%s" % (r["screen_after_confirm_p50_ms"], r["screen_after_confirm_p99_ms"])),
        "%-52s %16s" % ("page: first contentful paint / first render, ms",
                        "%s / %s" % (r["first_contentful_paint_ms"], r["first_render_ms"])),
        "event lines printed: %d; rejected during the runs: %d (expected 0)" % (r["events_printed"], r["rejected"]),
        "load average at the end: %.2f (this bench's own processes: ~5; more is other work sharing the cores)"
        % r["load_average_1min_at_end"],
    ])


def main(args):
    progress = (lambda s: None) if args.json else print
    report_ = run(seconds=args.seconds, lanes=args.lanes, progress=progress)
    print(json.dumps(report_) if args.json else table(report_))
    return 0
