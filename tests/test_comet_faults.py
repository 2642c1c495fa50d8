"""Faults of a CometBFT network running the ledger, real processes: a validator killed with
SIGKILL under load and restarted catches up, and every node holds the same app hash at
every height; an application killed in the middle of a block replays it on restart, and
nothing confirmed is lost or applied twice; garbage on the ABCI socket and oversized
requests are refused with a reason while the node goes on."""
import asyncio
import os
import socket
import sys
import time
import urllib.request
import json

import pytest

import ledger_helpers as H
from comet_checks import Load, assert_same_app_hash_everywhere
from ledger_engines import network
from plugpay.protocol import ledger_ops as L

HERE = os.path.dirname(os.path.abspath(__file__))


def rpc_height(lc, i):
    try:
        with urllib.request.urlopen(lc.rpc(i) + "/status", timeout=2) as reply:
            return int(json.load(reply)["result"]["sync_info"]["latest_block_height"])
    except OSError:
        return None


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


def on_node(lc, i, idents):
    """Which of ``idents`` node ``i``'s ledger answers as confirmed."""
    from plugpay.host.comet_client import CometClient

    async def ask():
        async with CometClient(lc.config, node=i) as client:
            answers = [await client.query(L.Query(L.QUERY_TX, ident, 0).encode()) for ident in idents]
        return [ident for ident, a in zip(idents, answers) if L.Result.decode(a).ok]
    return asyncio.run(ask())


def test_a_validator_killed_under_load_catches_up_with_the_same_app_hash_at_every_height(tmp_path):
    with network("cometbft", tmp_path) as net:
        lc = net.lc
        load = Load(lc, node=0, rate=40, label="killed-validator").start()
        wait_for(lambda: rpc_height(lc, 0) >= 6, "blocks under load")
        lc.kill_node(3)
        killed_at = rpc_height(lc, 0)
        wait_for(lambda: rpc_height(lc, 0) >= killed_at + 10, "three validators to go on")
        lc.start_node(3)
        wait_for(lambda: (rpc_height(lc, 3) or 0) >= rpc_height(lc, 0) - 1, "the restarted validator to catch up")
        confirmed = load.stop()
        assert confirmed and not load.failed
        height = assert_same_app_hash_everywhere(lc)
        assert height > killed_at + 10
        assert on_node(lc, 3, confirmed) == confirmed


def test_an_application_killed_mid_block_replays_it_and_loses_or_repeats_nothing(tmp_path):
    crash = [sys.executable, os.path.join(HERE, "crashing_app.py"), "--crash-at", "6"]
    with network("cometbft", tmp_path, app_commands={2: crash}) as net:
        lc = net.lc
        load = Load(lc, node=0, rate=40, label="killed-app").start()
        wait_for(lambda: lc.apps[2].poll() is not None, "the application to kill itself mid-block")
        assert lc.apps[2].returncode == -9
        wait_for(lambda: lc.nodes[2].poll() is not None, "its CometBFT to stop itself")
        stopped_at = rpc_height(lc, 0)
        wait_for(lambda: rpc_height(lc, 0) >= stopped_at + 4, "the other three to go on")
        del lc.app_commands[2]
        lc.start(2)
        wait_for(lambda: (rpc_height(lc, 2) or 0) >= rpc_height(lc, 0) - 1, "the restarted node to catch up")
        confirmed = load.stop()
        assert confirmed and not load.failed
        assert_same_app_hash_everywhere(lc)
        assert on_node(lc, 2, confirmed) == confirmed
        with open(lc.log_path(2, "app")) as log:
            starts = [line for line in log if "ABCI application on" in line]
        assert len(starts) == 2 and "height 0," not in starts[1]  # it began again from its last commit


def _frame(body):
    out = bytearray()
    n = len(body)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + body


def _answer(sock):
    """The one response the application sends before closing, and whether it closed."""
    from plugpay.host import abci_wire as W

    data = b""
    sock.settimeout(10)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    length, shift, i = 0, 0, 0
    while True:
        byte = data[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    return W.Response.FromString(data[i:i + length])


@pytest.fixture(scope="module")
def comet(tmp_path_factory):
    with network("cometbft", tmp_path_factory.mktemp("comet")) as net:
        yield net
        assert all(p.poll() is None for p in list(net.lc.apps.values()) + list(net.lc.nodes.values()))
        assert_same_app_hash_everywhere(net.lc)


@pytest.mark.parametrize("garbage, reason", [
    (b"\xff" * 11, "length prefix"),
    (_frame(b"\xff\xff\xff"), "not an ABCI request"),
    (_frame(b""), "naming no ABCI method"),
    (b"\x80\x80\x80\x80\x04", "over the"),
])
def test_garbage_on_the_abci_socket_is_refused_with_a_reason_and_the_node_goes_on(comet, garbage, reason):
    lc = comet.lc
    host, port = lc.config["nodes"][1]["abci"][len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(garbage)
        answer = _answer(sock)
    assert answer.WhichOneof("value") == "exception" and reason in answer.exception.error
    (result,) = comet.submit(H.faucet([(H.Key("after-garbage"), 5)], nonce=next(comet.nonces)))
    assert result.ok
    assert lc.apps[1].poll() is None and lc.nodes[1].poll() is None


def test_oversized_requests_are_refused_with_the_ledgers_reason(comet):
    """Over the ledger's limit CheckTx refuses; over CometBFT's mempool limit (64 KiB) the
    node does, and the client answers with the ledger's reason all the same."""
    over_ledger = b"\x86" + b"\x00" * L.MAX_REQUEST_BYTES
    over_engine = b"\x86" + b"\x00" * 70000
    results = comet.submit(over_ledger, over_engine)
    assert H.reasons(results) == ["TOO_LARGE", "TOO_LARGE"]
    assert "8192-byte limit" in results[0].detail and "70001" in results[1].detail
