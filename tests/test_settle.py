"""``plugpay wallet settle``: what a session left open when it died is finished from the
wallet's files: an unanswered open, a channel nobody closed, a stale unilateral close,
HTLCs with preimages held or never revealed.

Real parts: the RA, 4 replica processes, the embedded broker and the gateway
(``host.stack``); wallets on files provisioned over MQTT (``tools.fleet``)."""
import os
import subprocess
import sys

import pytest

from plugpay.firmware import channels
from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.settle import settle
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host.stack import HostStack
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.port import sha256
from plugpay.protocol.structures import ChannelState
from plugpay.tools import fleet

PER = 100  # each installment of the 1,000 collateral in 10


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with HostStack(str(tmp_path_factory.mktemp("settle"))) as host:
        yield host


@pytest.fixture
def gateway(host):
    mqtt = Mqtt(host.broker_host, host.broker_port)
    mqtt.connect()
    yield GatewayClient(mqtt)
    mqtt.close()


@pytest.fixture
def pair(host, tmp_path):
    wallets = fleet.provision(host, str(tmp_path), ["consumer", "producer"], 8)
    fleet.fund(host, [(wallets["consumer"], 1200)])
    return wallets["consumer"], wallets["producer"]


def blocks_pass(host, count=3):
    """Let the ledger grow ``count`` blocks: faucet payments to a wallet of their own."""
    if "sink" not in _sinks:
        _sinks["sink"] = fleet.provision(host, host.directory, ["sink"], 64)["sink"]
    for _ in range(count):
        fleet.fund(host, [(_sinks["sink"], 1)])


_sinks = {}


def open_channel(consumer, producer, window=1):
    """The consumer signs an open; ``accept`` is the producer's part once it is on the ledger."""
    index, account = producer.new_account()
    channel_id, raw = consumer.open_channel(account, 10 * PER, 10, window)
    return channel_id, raw, lambda gateway: producer.accept_channel(
        channel_id, gateway.query(channels.query(channel_id)).encode(), index, 10 * PER, 10, window)


def update(consumer, producer, channel_id, k):
    state = consumer.channel(channel_id).propose(PER * (k + 1), 200 * k, sha256(b"receipt %d" % k))
    consumer.channel(channel_id).accept(producer.channel(channel_id).countersign(state))


def test_an_unanswered_open_and_a_channel_nobody_closed_are_settled(host, gateway, pair):
    consumer, producer = pair
    channel_id, raw, accept = open_channel(consumer, producer)  # the session died before the ledger answered
    report = settle(consumer, gateway)
    assert report[0] == "request ChannelOpen: confirmed"
    accept(gateway)  # the producer had been shown the channel, and nothing more happened
    assert "closing alone with my latest state, seq 0" in report[1]
    blocks_pass(host)
    assert settle(consumer, gateway) == ["channel %s: closed: %d paid out to me" % (channel_id.hex()[:16], 9 * PER)]
    assert settle(producer, gateway) == ["channel %s: closed: %d paid out to me" % (channel_id.hex()[:16], PER)]
    assert consumer.status()["channels"] == producer.status()["channels"] == []
    assert producer.status()["balance"] == PER
    assert settle(producer, gateway) == []  # nothing left


def test_a_stale_close_is_answered_with_the_latest_state(host, gateway, pair):
    consumer, producer = pair
    channel_id, raw, accept = open_channel(consumer, producer, window=3)
    assert consumer.handle_result(gateway.submit(raw).encode()) == "confirmed"
    accept(gateway)
    for k in (1, 2):
        update(consumer, producer, channel_id, k)
    # The consumer closes alone with seq 1, which pays the producer less, and vanishes.
    stale = producer.channel(channel_id).latest()  # seq 2; rebuild seq 1 as the consumer signed it
    c = consumer.channel(channel_id)
    old = ChannelState(channel_id, 1, 2 * PER, 200, sha256(b"receipt 1"), b"", b"")
    old.sig_consumer = signing.sign(consumer.keystore.secret(c.rec.my_index), old)
    old.sig_producer = signing.sign(producer.keystore.secret(producer.channel(channel_id).rec.my_index), old)
    op = L.ChannelDispute(old, False, b"")
    op.closer_sig = signing.sign(consumer.keystore.secret(c.rec.my_index), op)
    assert gateway.submit(op.encode()).ok
    (line,) = settle(producer, gateway)
    assert "seq %d (the other side closed with seq 1)" % stale.seq in line
    blocks_pass(host, 5)
    assert settle(producer, gateway) == ["channel %s: closed: %d paid out to me" % (channel_id.hex()[:16], 3 * PER)]


def test_htlcs_held_are_claimed_and_unrevealed_ones_wait_for_their_timeout(host, gateway, pair):
    consumer, producer = pair
    index, account = producer.new_account()
    series = consumer.start_htlcs(account, PER, 3, 10 ** 6)
    payee = producer.accept_htlcs(series.terms(), index)
    for i in range(3):
        assert consumer.handle_result(gateway.submit(consumer.fund_htlc(series.series_id, i)).encode()) == "confirmed"
    for i in range(2):
        payee.take_preimage(i, series.reveal(i))
    # Both sessions died here. The producer claims what it holds ...
    name = "HTLC series %s: " % series.series_id.hex()[:16]
    assert settle(producer, gateway) == [name + "HTLC 0: claimed", name + "HTLC 1: claimed", name + "settled, forgotten"]
    assert producer.status()["balance"] == 2 * PER
    # ... the consumer's last one refunds only from its timeout.
    (line,) = settle(consumer, gateway)
    assert "HTLC 2 refunds from block %d: run again then" % 10 ** 6 in line


def test_the_command_line(host, tmp_path):
    settle_cli = [sys.executable, "-m", "plugpay.tools.cli", "wallet", "settle", "--dir", str(tmp_path / "w"),
                  "--device-key", str(tmp_path / "device.key"), "--broker"]
    out = subprocess.run(settle_cli + ["ftp://x"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "expected mqtt://host:port" in out.stderr
    key = os.urandom(32)
    (tmp_path / "device.key").write_bytes(key)
    os.mkdir(tmp_path / "w")
    Wallet.create(Storage(str(tmp_path / "w")), key, host.ra_pubkeys)
    out = subprocess.run(settle_cli + ["mqtt://%s:%d" % (host.broker_host, host.broker_port)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "nothing open" in out.stdout, out.stderr
