"""``plugpay ledger up --engine cometbft`` as a user runs it: four validators with their
applications, the embedded broker and the gateway; a device submits over MQTT and gets the
ledger's answers; then ``ledger status``, ``tx``, ``block`` and ``audit`` read the network
on f+1 matching answers and the RA names the accounts."""
import json
import os
import signal
import subprocess
import sys

import pytest

import ledger_helpers as H
from ledger_engines import skip_without_cometbft
from mqtt_helpers import Device
from plugpay.host import faucet, ra
from plugpay.host.comet_testnet import free_ports
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing, topics
from plugpay.protocol import structures as S
from plugpay.tools import cli
from test_ledger_inspect import ADA, ALAN, register


def plugpay(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def ledger_up(tmp_path):
    """A running ``ledger up --engine cometbft``: (its directory, the RA's, the key file, the
    MQTT port, what it printed)."""
    skip_without_cometbft()
    ra_dir, key_file = str(tmp_path / "ra"), str(tmp_path / "ra.key")
    ra.create_key_file(key_file)
    ra.init(ra_dir, ra.Unlock(key_file=key_file))
    port = free_ports(1)[0]
    directory = tmp_path / "ledger"
    up = subprocess.Popen([sys.executable, "-m", "plugpay.tools.cli", "ledger", "up", "--engine", "cometbft",
                           "--dir", str(directory), "--ra-dir", ra_dir, "--key-file", key_file,
                           "--mqtt-port", str(port), "--duration", "120"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("ra:"):
            line = up.stdout.readline()
            assert line, "exited early: %s" % "".join(lines)
            lines.append(line)
        yield directory, ra_dir, key_file, port, "".join(lines)
        up.send_signal(signal.SIGTERM)
        out = up.communicate(timeout=30)[0]
        assert out.strip().endswith("stopped") and "stopping validators [0, 1, 2, 3]" in out and up.returncode == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_ledger_up_on_cometbft_serves_devices_and_every_inspect_command(ledger_up, capsys):
    directory, ra_dir, key_file, port, printed = ledger_up
    config = str(directory / "cluster.json")
    assert "validator 3: rpc http://127.0.0.1:" in printed and "on CometBFT v0.38.26" in printed
    assert "mqtt:    mqtt://127.0.0.1:%d (embedded amqtt broker)" % port in printed
    with ra.RegistrationAuthority.open(ra_dir, ra.Unlock(key_file=key_file)) as authority:
        ada, alan = register(authority, ADA, 3), register(authority, ALAN, 2)
    mint = L.Faucet(1, [S.TxOutput(ada[0].account, 1000), S.TxOutput(ada[1].account, 500)], b"")
    mint.faucet_sig = signing.sign(faucet.load_key(os.path.join(directory, faucet.KEY_FILE)), mint)
    coins = H.coins(mint.txhash(), [(ada[0], 1000), (ada[1], 500)])
    pay = H.transaction(coins, [(alan[0], 1200), (ada[2], 250)])
    double = H.transaction(coins[:1], [(alan[1], 1000)])

    device = Device("127.0.0.1", port, cid="ev-comet")
    try:
        answers = [L.Result.decode(device.ask(topics.LEDGER_SUBMIT, op)) for op in
                   (mint.encode(), pay.encode(), double.encode(), b"\x86\x02")]
        height = L.Result.decode(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_HEIGHT, bytes(32), 0).encode()))
        found = L.Result.decode(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_TX, pay.txhash(), 0).encode()))
    finally:
        device.close()
    assert H.reasons(answers) == ["OK", "OK", "DOUBLE_SPEND", "MALFORMED"]
    assert answers[1].data == pay.txhash()
    assert height.ok and height.data[0] >= found.data[0] > 1

    code, out, _ = plugpay(capsys, "ledger", "status", "--config", config, "--json")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == [0, 1, 2, 3] and all(r["reachable"] for r in rows)
    assert all(r["peers"] == 3 for r in rows) and rows[0]["refused"] >= 1  # the double spend, before ordering

    code, out, _ = plugpay(capsys, "ledger", "tx", pay.txhash().hex(), "--config", config, "--json")
    described = json.loads(out)
    assert code == 0 and described["op"] == "transaction" and described["height"] == found.data[0]
    assert [o["amount"] for o in described["outputs"]] == [1200, 250] and described["fee"] == 50

    code, out, _ = plugpay(capsys, "ledger", "block", found.data[0], "--config", config, "--json")
    block = json.loads(out)
    assert code == 0 and [(r["op"], r["result"]) for r in block["requests"]] == [("transaction", "OK")]
    assert block["requests"][0]["id"] == pay.txhash().hex() and block["requests"][0]["client"] == "-"

    code, out, _ = plugpay(capsys, "ledger", "audit", "--config", config, "--dir", ra_dir, "--key-file", key_file,
                           "--tx", pay.txhash().hex())
    assert code == 0
    named = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(named) == {k.address() for k in (ada[0], ada[1], ada[2], alan[0])}
    assert "Ada Lovelace" in named[ada[0].address()] and "Alan Turing" in named[alan[0].address()]
