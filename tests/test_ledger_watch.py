"""The event log on a real cluster: ``plugpay ledger up`` (four replica processes) prints every
request as its block commits and serves the dashboard; ``plugpay ledger watch --json``, a
process of its own, follows the same blocks; every id either prints is accepted by ``plugpay
ledger tx``, and ``ledger block`` shows the same ids with readable times."""
import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.protocol import ledger_ops as L
from plugpay.tools import cli

import ledger_helpers as H
from ledger_story import Story

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
WAIT_S = 30


class Lines:
    """A process's stdout lines, read by a thread so a test can wait with a deadline."""

    def __init__(self, proc):
        self.proc = proc
        self.queue = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def until(self, done, what):
        deadline = time.monotonic() + WAIT_S
        while not done(self.seen):
            try:
                line = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            assert line is not None, "%s: not within %d s; got %s" % (what, WAIT_S, "\n".join(self.seen[-20:]))
            self.seen.append(line)
        return self.seen


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def submit(config, secrets, steps):
    """Each request alone, in order; its decoded result."""
    async with Client(config, secrets) as client:
        return [L.Result.decode(await client.submit(raw)) for step in steps for raw in step]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("watch")
    options = {"ra_pubkeys": {str(e): k.hex() for e, k in H.RA_PUBKEYS.items()}, "faucet_pubkey": H.FAUCET_PUBKEY.hex()}
    config_path = cluster.generate(str(base / "ledger"), app="plugpay.host.ledger:Ledger", app_options=options)
    up = subprocess.Popen(PLUGPAY + ["ledger", "up", "--dir", str(base / "ledger"), "--no-gateway", "--duration", "120"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = None
    try:
        up_lines = Lines(up)
        url = up_lines.until(lambda seen: seen and seen[-1].startswith("dashboard:"), "ledger up's dashboard")[-1]
        url = url.split()[-1]
        watch = subprocess.Popen(PLUGPAY + ["ledger", "watch", "--json", "--config", config_path, "--from", "1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        story = Story(1)
        config, secrets = cluster.load(config_path)
        results = asyncio.run(submit(config, secrets, story.encoded()))
        count = len(results)
        watched = Lines(watch).until(lambda seen: len(seen) == count, "ledger watch's events")
        printed = up_lines.until(lambda seen: sum(1 for line in seen if line.startswith("#")) == count,
                                 "ledger up's event lines")
        with urllib.request.urlopen(url + "state", timeout=10) as answer:
            state = json.loads(answer.read())
        yield {"story": story, "results": results, "events": [json.loads(line) for line in watched],
               "printed": [line for line in printed if line.startswith("#")], "state": state, "config": config_path}
    finally:
        for proc in (watch, up):
            if proc is not None:
                stop(proc)


def test_watch_prints_every_request_in_commit_order_with_its_result(run):
    story, events, results = run["story"], run["events"], run["results"]
    raws = [raw for step in story.encoded() for raw in step]
    assert [e["kind"] for e in events] == [
        L.decode_request(raw).NAME if raw != story.garbage else "unknown" for raw in raws]
    assert [e["ok"] for e in events] == [r.ok for r in results]
    assert [e["result"] for e in events] == [L.reason_name(r.reason) for r in results]
    heights = [e["height"] for e in events]
    assert heights == sorted(heights) and heights[0] >= 1


def test_ledger_up_prints_the_same_events_as_lines(run):
    assert len(run["printed"]) == len(run["events"])
    for line, e in zip(run["printed"], run["events"]):
        assert line.startswith("#%d %s %s" % (e["height"], e["time"], e["kind"])) and e["id"] in line
        assert ("REFUSED" in line) == (not e["ok"])


def test_every_id_the_event_log_prints_is_accepted_by_ledger_tx(run, capsys):
    applied = [e for e in run["events"] if e["ok"]]
    assert {e["kind"] for e in applied} >= {"redeem", "channel_open", "htlc_create", "faucet", "transaction"}
    for e in applied:
        assert cli.main(["ledger", "tx", e["id"], "--config", run["config"], "--json"]) == 0, e
        shown = json.loads(capsys.readouterr().out)
        assert (shown["id"], shown["height"], shown["op"]) == (e["id"], e["height"], e["kind"])
        if e["kind"] == "redeem":
            assert (shown["amount"], shown["fee"]) == (1000, 0)


def test_ledger_block_lists_the_same_ids_with_utc_times(run, capsys):
    e = [e for e in run["events"] if e["kind"] == "channel_settle"][0]
    assert cli.main(["ledger", "block", str(e["height"]), "--config", run["config"]]) == 0
    row = [line.split() for line in capsys.readouterr().out.splitlines() if e["id"] in line][0]
    assert row[1:] == [e["time"], "channel_settle", e["id"], "OK"]
    assert time.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ")


def test_the_dashboard_state_shows_the_replicas_and_what_is_open(run):
    state = run["state"]
    assert [r["reachable"] for r in state["replicas"]] == [True] * 4
    assert sorted(r["role"] for r in state["replicas"]) == ["backup"] * 3 + ["primary"]
    channels, htlcs, market = run["story"].open_at_end()
    view = state["view"]
    assert {c["channel"] for c in view["channels"]} == channels
    assert {h["htlc"] for h in view["htlcs"]} == htlcs
    assert {m["request"] for m in view["market"]} == market
    assert {e["id"] for e in state["events"]} <= {e["id"] for e in run["events"]}
    assert state["blocks"][-1]["height"] == run["events"][-1]["height"]


def test_status_says_what_its_counters_count(run, capsys):
    assert cli.main(["ledger", "status", "--config", run["config"]]) == 0
    out = capsys.readouterr().out
    assert "pending: client requests it holds, not yet executed" in out and "dropped: frames and connections" in out


def test_watch_refuses_a_height_below_one(run, capsys):
    assert cli.main(["ledger", "watch", "--config", run["config"], "--from", "0"]) == 2
    assert "--from: block heights start at 1" in capsys.readouterr().err
