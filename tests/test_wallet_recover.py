"""``plugpay wallet recover`` on the real path: wallets that pay, open a channel and trade
installments on four real replica processes; then the consumer's book and channel record
are deleted with both copies and its key counters rolled back, as a half-restored card
would leave them. The command (a real process) reads and replays the chain, and the wallet
comes back with every coin the chain shows, its channel closing-only, no key handed out
twice, and ``check`` passing; ``settle`` then closes the channel on the newest state.
"""
import asyncio
import os
import shutil
import subprocess
import sys

import pytest

from plugpay.firmware import channels, names, records
from plugpay.firmware.channels import ChannelError
from plugpay.firmware.coins import CLEAN
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import cluster
from plugpay.host.client import Client
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
import ledger_helpers as H
from cluster_checks import assert_chains_agree
from test_ledger_cluster import FAST
from wallet_helpers import Party, ra_keys, receipt, update

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli", "wallet"]


@pytest.fixture
def chain(tmp_path, authority):
    options = {"ra_pubkeys": {str(e): k.hex() for e, k in ra_keys(authority).items()},
               "faucet_pubkey": H.FAUCET_PUBKEY.hex()}
    path = cluster.generate(str(tmp_path / "cluster"), app="plugpay.host.ledger:Ledger", app_options=options,
                            pbft=FAST)
    with cluster.LocalCluster(path, stop_grace=3.0) as lc:
        lc.start_all()
        lc.wait_listening()
        yield lc, path
    assert_chains_agree(lc, range(lc.config["n"]))


def submit(lc, *raws):
    async def main():
        async with Client(lc.config, lc.secrets) as client:
            return [await client.submit(raw) for raw in raws]
    return asyncio.run(main())


def query(lc, raw):
    async def main():
        async with Client(lc.config, lc.secrets) as client:
            return await client.query(raw)
    return asyncio.run(main())


def faucet(lc, party, amounts):
    for amount in amounts:
        index, account = party.wallet.new_account()
        op = L.Faucet(int.from_bytes(os.urandom(8), "big"), [S.TxOutput(account, amount)], b"")
        op.faucet_sig = signing.sign(H.FAUCET_SECRET, op)
        (answer,) = submit(lc, op.encode())
        result = L.Result.decode(answer)
        assert result.ok, result.detail
        party.wallet.receive(result.data, 0, index, amount, CLEAN)


def wipe(party, name):
    for slot in records.SLOTS:
        path = os.path.join(party.root, name + slot)
        if os.path.exists(path):
            os.remove(path)


def cli(party, key_file, *args):
    return subprocess.run(PLUGPAY + list(args) + ["--dir", party.root, "--device-key", str(key_file)],
                          capture_output=True, text=True, timeout=300)


def test_recover_rebuilds_coins_channels_and_keys_from_the_chain(tmp_path, authority, chain):
    lc, config = chain
    consumer, producer = Party(tmp_path / "c", authority, keys=40), Party(tmp_path / "p", authority, keys=40)
    backup = tmp_path / "counters-backup"
    os.mkdir(backup)
    for slot in records.SLOTS:  # a copy of the counters before any key left, restored later
        if os.path.exists(os.path.join(consumer.root, names.COUNTERS + slot)):
            shutil.copy(os.path.join(consumer.root, names.COUNTERS + slot), backup)
    faucet(lc, consumer, [700, 300, 5000])
    c = consumer.wallet
    payee_index, payee = producer.wallet.new_account()
    (answer,) = submit(lc, c.pay([(payee, 300)]))
    assert c.handle_result(answer) == "confirmed"
    producer.wallet.receive(L.Result.decode(answer).data, 0, payee_index, 300, L.Result.decode(answer).data)
    ch_index, ch_account = producer.wallet.new_account()
    channel_id, raw = c.open_channel(ch_account, 1000, 10, 3)
    (answer,) = submit(lc, raw)
    assert c.handle_result(answer) == "confirmed"
    producer.wallet.accept_channel(channel_id, query(lc, channels.query(channel_id)), ch_index, 1000, 10, 3)
    for k in (1, 2, 3):
        update(consumer, producer, channel_id, k)
    balance = c.status()["balance"]
    used = set(range(c.keystore.reserved))

    # Bad luck: the book and the channel record gone, the counters from an old backup.
    wipe(consumer, names.BOOKS)
    wipe(consumer, channels.record_name(channel_id))
    wipe(consumer, names.COUNTERS)
    for name in os.listdir(backup):
        shutil.copy(os.path.join(backup, name), consumer.root)
    key_file = tmp_path / "c.key"
    key_file.write_bytes(consumer.device_key)
    damaged = cli(consumer, key_file, "check")
    assert damaged.returncode == 1 and "both copies are gone" in damaged.stdout, damaged.stdout
    assert Wallet.open(Storage(consumer.root), consumer.device_key).keystore.reserved == 0  # key 0 would go again

    out = cli(consumer, key_file, "recover", "--config", config)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replayed block" in out.stderr  # progress while it reads the chain
    assert "recorded again from the ledger" in out.stdout
    w = Wallet.open(Storage(consumer.root), consumer.device_key)
    assert w.check()["ok"] and not w.damage()
    assert w.status()["balance"] == balance  # the change of the payment and of the open, all of it
    assert w.keystore.reserved > max(used)  # no key the chain shows in use is handed out again
    assert w.new_account()[0] not in used
    channel = w.channel(channel_id)
    assert channel.rec.status == channels.CLOSING and channel.latest().seq == 0
    with pytest.raises(ChannelError):
        channel.propose(400, 8000, receipt(4))  # a rebuilt channel signs nothing new
    # It closes alone with what it proves (the opening); the producer answers with seq 3.
    (answer,) = submit(lc, channel.dispute())
    assert L.Result.decode(answer).ok
    (answer,) = submit(lc, producer.wallet.channel(channel_id).dispute())
    assert L.Result.decode(answer).ok
    row = channels.channel_row(channel_id, query(lc, channels.query(channel_id)))
    assert row[6] == 3
