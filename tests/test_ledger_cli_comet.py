"""``plugpay ledger up --engine cometbft`` as a user runs it: four validators with their
applications, the embedded broker and the gateway; a device submits over MQTT and gets the
ledger's answers; then ``ledger status``, ``tx``, ``block`` and ``audit`` read the network
on f+1 matching answers and the RA names the accounts."""
import json
import os
import signal
import subprocess
import sys
import time

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
from test_ledger_watch import Lines, stop


def plugpay(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def ledger_up(tmp_path):
    """A running ``ledger up --engine cometbft``: (its directory, the RA's, the key file, the
    MQTT port, what it printed up to its dashboard's address, its later lines)."""
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
        lines = Lines(up)
        printed = lines.until(lambda seen: seen and seen[-1].startswith("dashboard:"), "ledger up's dashboard")
        yield directory, ra_dir, key_file, port, "\n".join(printed), lines
        up.send_signal(signal.SIGTERM)
        out = "\n".join(lines.until(lambda seen: seen and seen[-1] == "stopped", "ledger up stopping"))
        assert "stopping validators [0, 1, 2, 3]" in out and up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_ledger_up_on_cometbft_serves_devices_and_every_inspect_command(ledger_up, capsys):
    directory, ra_dir, key_file, port, printed, lines = ledger_up
    config = str(directory / "cluster.json")
    assert "validator 3: rpc http://127.0.0.1:" in printed and "on CometBFT v0.38.26" in printed
    assert printed.splitlines()[-1].startswith("dashboard: http://127.0.0.1:")
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
    assert all(r["peers"] == 3 for r in rows) and rows[0]["refused"] >= 1, json.dumps(rows)  # the double spend, before ordering

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

    # the event log: ledger up's lines and ledger watch --json, with the block's time and the ids above
    pay_line = lines.until(lambda seen: any(pay.txhash().hex() in line for line in seen), "the payment's event")[-1]
    assert pay_line.startswith("#%d " % found.data[0]) and " transaction " in pay_line
    watch = subprocess.Popen([sys.executable, "-m", "plugpay.tools.cli", "ledger", "watch", "--json", "--from", "1",
                              "--config", config], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        watched = Lines(watch).until(lambda seen: any(pay.txhash().hex() in line for line in seen), "ledger watch")
    finally:
        stop(watch)
    events = dict((e["id"], e) for e in map(json.loads, watched))
    assert events[mint.txhash().hex()]["kind"] == "faucet" and events[pay.txhash().hex()]["height"] == found.data[0]
    paid_at = events[pay.txhash().hex()]["time"]  # the block's BFT time, where PBFT's come from request timestamps
    assert paid_at.startswith(time.strftime("%Y-", time.gmtime())) and paid_at.endswith("Z") and len(paid_at) == 20


def test_init_writes_a_network_for_machines_and_validator_runs_one_node_each(tmp_path, capsys):
    """``ledger init`` for four machines writes what each needs; on loopback, four
    ``ledger validator`` processes (``ledger replica``'s counterpart) form the network."""
    skip_without_cometbft()
    ra_dir, key_file = str(tmp_path / "ra"), str(tmp_path / "ra.key")
    ra.create_key_file(key_file)
    ra.init(ra_dir, ra.Unlock(key_file=key_file))
    hosts = "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4"
    code, out, _ = plugpay(capsys, "ledger", "init", "--dir", tmp_path / "lan", "--hosts", hosts, "--ra-dir", ra_dir)
    assert code == 0 and "plugpay ledger validator --id N --config cluster.json" in out
    lan = json.loads((tmp_path / "lan" / "cluster.json").read_text())
    assert [n["p2p"].split("@")[1] for n in lan["nodes"]] == ["10.0.0.%d:26656" % i for i in range(1, 5)]
    assert lan["nodes"][2]["rpc"] == "http://10.0.0.3:26657" and lan["nodes"][2]["abci"] == "tcp://127.0.0.1:26658"
    toml = (tmp_path / "lan" / "node2" / "config" / "config.toml").read_text()
    assert 'laddr = "tcp://0.0.0.0:26656"' in toml and "@10.0.0.4:26656" in toml and "@10.0.0.3:" not in toml
    assert os.stat(tmp_path / "lan" / "node2" / "config" / "priv_validator_key.json").st_mode & 0o777 == 0o600
    code, _, err = plugpay(capsys, "ledger", "init", "--dir", tmp_path / "x", "--hosts", "h,h,h,h", "--ra-dir", ra_dir)
    assert code == 2 and "repeats an address" in err  # bad input

    from plugpay.host import comet_testnet
    from plugpay.host.comet_client import CometClient

    config = comet_testnet.generate(str(tmp_path / "local"), app_options={
        "ra_pubkeys": {str(e): k.hex() for e, k in H.RA_PUBKEYS.items()}, "faucet_pubkey": H.FAUCET_PUBKEY.hex()})
    validators = [subprocess.Popen([sys.executable, "-m", "plugpay.tools.cli", "ledger", "validator", "--id", str(i),
                                    "--config", config], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                  for i in range(4)]
    try:
        for i, v in enumerate(validators):
            assert v.stdout.readline().startswith("validator %d: home " % i)

        async def submit():
            async with CometClient(comet_testnet.load(config), node=2) as client:
                return L.Result.decode(await client.submit(H.faucet([(H.Key("v"), 5)]).encode(), timeout=60))
        import asyncio

        assert asyncio.run(submit()).ok
    finally:
        for v in validators:
            v.send_signal(signal.SIGTERM)
        outs = [v.communicate(timeout=30)[0] for v in validators]
    assert all(out.strip().endswith("stopped") for out in outs) and all(v.returncode == 0 for v in validators)
