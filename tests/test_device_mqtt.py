"""The device side of MQTT: ``firmware.mqtt``, the gateway client and key refill, end to end.

All real: four ledger replica processes, the RA, the gateway, and the embedded amqtt broker
or a Mosquitto process (tests/test_gateway.py's fixtures; every broker test runs on both),
with the device's own poll-driven client (the paho backend on CPython) and a wallet on files.
"""
import itertools
import os
import socket

import pytest

from plugpay.firmware import issuing
from plugpay.firmware.books import CLEAN
from plugpay.firmware.gateway_client import GatewayClient, GatewayRefused, GatewayTimeout
from plugpay.firmware.mqtt import Mqtt, MqttError
from plugpay.firmware.refill import NOT_NEEDED, REFILLED, REFUSED, refill
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import broker, cluster, faucet, ra
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256

import test_gateway
from mqtt_helpers import GatewayRunner
from test_gateway import FAUCET_SECRET, LIMIT

# The real system of tests/test_gateway.py: the RA, 4 replicas, the gateway on either broker.
authority, ledger, gateway = test_gateway.authority, test_gateway.ledger, test_gateway.gateway

_people = itertools.count(1)


def connected(host, port, **options):
    mqtt = Mqtt(host, port, **options)
    mqtt.connect()
    return mqtt


@pytest.fixture
def mqtt(gateway):
    m = connected(gateway.host, gateway.port)
    yield m
    m.close()


@pytest.fixture
def client(mqtt):
    return GatewayClient(mqtt)


def new_wallet(root, authority, ra_pubkey=None):
    """A wallet on files whose device key the RA registered in person (no keys yet)."""
    ra_dir, vault, _, _ = authority
    os.mkdir(root)
    wallet = Wallet.create(Storage(str(root)), os.urandom(32), {vault.epoch: ra_pubkey or vault.public_key})
    n = next(_people)
    document = {"name": "Device Owner %d" % n, "licence": "DEV-%06d" % n, "vehicle_id": "1HGCM82633A%06d" % n}
    with ra.RegistrationAuthority(ra_dir, vault) as authority_desk:
        wallet.set_identity(authority_desk.register_identity(document, wallet.device_pubkey()))
    return wallet


def funded(wallet, client, amount):
    """A faucet coin on a fresh key of ``wallet``, booked once the ledger confirmed it."""
    index, account = wallet.new_account()
    result = client.faucet([S.TxOutput(account, amount)], wallet.ra_pubkeys)
    assert result.ok, result
    assert wallet.receive(result.data[0], 0, index, amount, CLEAN)
    return result.data[0]


def echo_topic():
    return "plugpay-test/echo/" + os.urandom(4).hex()


# -- the connection -----------------------------------------------------------------------

def test_publish_and_poll_round_trip(gateway):
    a, b = connected(gateway.host, gateway.port), connected(gateway.host, gateway.port)
    try:
        assert a.client_id != b.client_id and a.connected and a.connects == 1
        assert a.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        ping, pong = echo_topic(), echo_topic()
        b.subscribe(ping)
        a.subscribe(pong)
        assert a.poll(50) == []
        for i in range(20):
            payload = b"installment %d" % i
            assert a.publish(ping, payload)
            (got,) = poll_until(b, 1)
            assert got == (ping, payload)
            assert b.publish(pong, got[1][::-1])
            assert poll_until(a, 1) == [(pong, payload[::-1])]
    finally:
        a.close()
        b.close()
    assert not a.connected and a.publish(ping, b"x") is False


def poll_until(mqtt, count, timeout_ms=5000):
    """Poll until ``count`` messages came (each poll returns as soon as one is there)."""
    got = []
    for _ in range(100):
        got += mqtt.poll(timeout_ms // 100)
        if len(got) >= count:
            return got
    raise AssertionError("%d of %d messages within %d ms" % (len(got), count, timeout_ms))


# -- registration and refill --------------------------------------------------------------

def test_a_wallet_registers_its_keys_over_mqtt_and_refills_below_the_threshold(client, authority, tmp_path):
    wallet = new_wallet(tmp_path / "w", authority)
    report = refill(wallet, client, count=5, threshold=3)
    assert (report.status, report.added, report.available) == (REFILLED, 5, 5), report
    assert refill(wallet, client, count=5, threshold=3).status == NOT_NEEDED
    vault = authority[1]
    for _ in range(3):
        _, account = wallet.new_account()
        assert signing.verify(vault.public_key, account, account.ra_sig)
    report = refill(wallet, client, count=5, threshold=3)
    assert (report.status, report.added, report.available) == (REFILLED, 5, 7), report
    assert wallet.check()["ok"]


def test_a_refused_or_unverifiable_registration_stores_no_key(client, authority, tmp_path):
    ra_dir, vault, _, _ = authority
    disabled = new_wallet(tmp_path / "disabled", authority)
    with ra.RegistrationAuthority(ra_dir, vault) as desk:
        desk.set_identity_enabled(disabled.identity_id, False)
    report = refill(disabled, client, count=4, threshold=1)
    assert (report.status, report.available) == (REFUSED, 0) and "IDENTITY_DISABLED" in report.detail, report
    assert disabled.keystore.capacity() == 0

    # sealed to a key that is not the RA's: the gateway cannot open it and says so in clear
    other_ra = signing.public_key(sha256(b"not this network's RA"))
    misled = new_wallet(tmp_path / "misled", authority, ra_pubkey=other_ra)
    report = refill(misled, client, count=4, threshold=1)
    assert (report.status, report.available) == (REFUSED, 0) and "CANNOT_OPEN" in report.detail, report
    assert misled.keystore.capacity() == 0 and misled.check()["ok"]


# -- the ledger through the gateway -------------------------------------------------------

def test_the_faucet_funds_an_account_and_the_wallet_books_the_coin(client, authority, tmp_path):
    wallet = new_wallet(tmp_path / "w", authority)
    assert refill(wallet, client, count=6, threshold=1).status == REFILLED
    txhash = funded(wallet, client, 500)
    assert wallet.status()["balance"] == 500
    utxo = client.query(L.Query(L.QUERY_UTXO, txhash, 0).encode())
    assert utxo.ok and utxo.data[1] == 500 and utxo.data[3] is None  # unspent
    over = client.faucet([S.TxOutput(wallet.new_account()[1], LIMIT + 1)], wallet.ra_pubkeys)
    assert L.reason_name(over.reason) == "FAUCET_LIMIT"
    accounts = [wallet.new_account() for _ in range(3)]
    several = client.faucet([S.TxOutput(account, 10 * (i + 1)) for i, (_, account) in enumerate(accounts)],
                            wallet.ra_pubkeys)
    assert several.ok and len(set(several.data)) == 3  # one transaction per coin
    for i, ((index, _), txhash) in enumerate(zip(accounts, several.data)):
        assert wallet.receive(txhash, 0, index, 10 * (i + 1), CLEAN)
    assert wallet.status()["balance"] == 560


def test_a_real_transaction_confirms_and_a_query_finds_it(client, authority, tmp_path):
    payer, payee = new_wallet(tmp_path / "payer", authority), new_wallet(tmp_path / "payee", authority)
    for w in (payer, payee):
        assert refill(w, client, count=3, threshold=1).status == REFILLED
    funded(payer, client, 800)
    index, account = payee.new_account()
    raw = payer.pay([(account, 300)], fee=0)
    result = client.submit(raw)
    assert result.ok and result.request_digest == sha256(raw), result
    assert payer.handle_result(result.encode()) == "confirmed"
    assert payer.status()["balance"] == 500
    assert payee.receive(result.data, 0, index, 300, result.data)
    tx = client.query(L.Query(L.QUERY_TX, result.data, 0).encode())
    assert tx.ok and tx.data[1] == S.TAG_TRANSACTION and tx.data[2] == raw
    again = client.submit(raw)  # a re-send after a lost answer
    assert L.reason_name(again.reason) == "DUPLICATE"


def test_garbage_on_the_reply_topics_is_dropped_and_counted(gateway, mqtt, client):
    link_topic = echo_topic()
    others = []
    mqtt.subscribe(link_topic)
    client.on_other = lambda topic, payload: others.append((topic, payload))
    stranger = connected(gateway.host, gateway.port)
    try:
        replies = client.requests.subscriptions()
        for topic in replies:
            stranger.subscribe(topic)
        unasked = L.Result(sha256(b"never asked"), True, L.OK, "", None).encode()
        sent = [(replies[0], b"\xff not cbor"), (replies[1], b"junk"), (replies[0], unasked), (link_topic, b"link")]
        for topic, payload in sent:
            assert stranger.publish(topic, payload)
        poll_until(stranger, 3)  # routed by the broker: they are on their way to the client too
        answer = client.query(L.Query(L.QUERY_TX, bytes(32), 0).encode())
    finally:
        stranger.close()
    assert L.reason_name(answer.reason) == "NOT_FOUND"
    # junk on the sealed-reply topic while nothing sealed waits is not awaited, whatever it holds
    assert client.requests.dropped == {"malformed": 1, "not_awaited": 2, "other_topic": 0}
    assert others == [(link_topic, b"link")]


# -- faults -------------------------------------------------------------------------------

def test_after_a_broker_restart_poll_reconnects_and_the_next_request_goes_through(ledger, authority,
                                                                                   tmp_path_factory):
    ra_dir, vault, _, _ = authority
    options = dict(faucet=faucet.Faucet(FAUCET_SECRET, LIMIT), ra_directory=ra_dir, ra_vault=vault,
                   name="gateway-restart")
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    with broker.MosquittoProcess(str(tmp_path_factory.mktemp("restart"))) as mosquitto:
        with GatewayRunner(ledger, mosquitto.host, mosquitto.port, embedded=False, **options):
            mqtt = connected(mosquitto.host, mosquitto.port)
            client = GatewayClient(mqtt, resend_ms=300)
            assert client.query(query).reason == L.NOT_FOUND
            mosquitto.__exit__()
            assert mqtt.poll(200) == [] and not mqtt.connected  # tried again meanwhile: refused
            mosquitto.__enter__()  # the same port
            assert client.query(query, timeout_ms=20000).reason == L.NOT_FOUND
            assert mqtt.connected and mqtt.connects == 2
            mqtt.close()


def test_timeouts_and_lost_brokers_give_clear_errors(tmp_path):
    port = cluster.free_ports(1)[0]
    with pytest.raises(MqttError, match="cannot connect to the MQTT broker at mqtt://127.0.0.1:%d: " % port):
        Mqtt("127.0.0.1", port).connect(timeout_ms=500)

    with broker.MosquittoProcess(str(tmp_path)) as mosquitto:  # a broker without a gateway
        mqtt = connected(mosquitto.host, mosquitto.port, give_up_ms=300)
        client = GatewayClient(mqtt)
        query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
        with pytest.raises(GatewayTimeout, match=r"no answer from the gateway to the ledger query [0-9a-f]{16} "
                                                 r"within 300 ms \(sent 1 time\(s\); connected to mqtt://"):
            client.query(query, timeout_ms=300)
        assert client.requests.pending() == []
    with pytest.raises(MqttError, match="lost the MQTT broker at mqtt://127.0.0.1:%d \\d+ ms ago and could not "
                                        "reconnect" % mosquitto.port):
        for _ in range(100):
            mqtt.poll(50)


def test_coins_a_session_gave_back_are_redeemed_through_the_issuer_for_fresh_ones(client, authority, tmp_path):
    wallet = new_wallet(tmp_path / "w", authority)
    assert refill(wallet, client, count=32, threshold=1).status == REFILLED
    result = issuing.fund(wallet, client, 1000)
    assert result.ok and [c.amount for c in wallet.books.coins] == [512, 256, 128, 64, 32, 8]
    # A payment's change names the payment: it waits to be redeemed.
    _, payee = wallet.new_account()
    raw = wallet.pay([(payee, 300)])
    assert wallet.handle_result(client.submit(raw).encode()) == "confirmed"
    assert wallet.status()["to_redeem"] == 1
    report = issuing.refresh(wallet, client)
    assert (report.status, report.redeemed) == (issuing.REDEEMED, 212), report
    status = wallet.status()
    assert (status["to_redeem"], status["clean_balance"], status["balance"]) == (0, 700, 700)
    for coin in wallet.books.coins:  # each fresh coin is on the ledger, minted alone, to its key
        tx = client.query(L.Query(L.QUERY_TX, coin.txhash, 0).encode())
        assert tx.ok and tx.data[1] == L.TAG_FAUCET and len(L.Faucet.decode(tx.data[2]).outputs) == 1
        utxo = client.query(L.Query(L.QUERY_UTXO, coin.txhash, 0).encode())
        assert utxo.ok and utxo.data[0] == wallet.keystore.account(coin.index).encode() and utxo.data[3] is None
    assert issuing.refresh(wallet, client).status == issuing.NOT_NEEDED


def test_a_redeem_whose_answer_was_lost_is_sent_again_and_honoured_once(client, authority, tmp_path):
    wallet = new_wallet(tmp_path / "w", authority)
    assert refill(wallet, client, count=32, threshold=1).status == REFILLED
    assert issuing.fund(wallet, client, 100).ok
    _, payee = wallet.new_account()
    raw = wallet.pay([(payee, 30)])  # the 32 coin: change 2, which names the payment
    assert wallet.handle_result(client.submit(raw).encode()) == "confirmed"
    (group,) = wallet.to_redeem()[1]
    request = wallet.redeem(group)  # stored; the answer never comes back (a power cut, a dropped link)
    first = client.redeem(request, wallet.ra_pubkeys)
    assert L.Result.decode(first).ok
    assert wallet.to_redeem() == ([request], [])
    report = issuing.refresh(wallet, client)  # the very same bytes again: honoured once
    assert (report.status, report.redeemed) == (issuing.REDEEMED, 2)
    assert wallet.status()["clean_balance"] == 70 and wallet.check()["ok"]


def test_a_redeem_the_issuer_cannot_honour_is_refused_and_the_coins_come_back(client, authority, tmp_path):
    wallet = new_wallet(tmp_path / "w", authority)
    assert refill(wallet, client, count=32, threshold=1).status == REFILLED
    assert issuing.fund(wallet, client, 100).ok
    _, payee = wallet.new_account()
    assert wallet.handle_result(client.submit(wallet.pay([(payee, 30)])).encode()) == "confirmed"
    (group,) = wallet.to_redeem()[1]
    good = L.RedeemRequest.decode(wallet.redeem(group))
    lying = L.RedeemRequest(good.redeem, bytes(32), good.outputs).encode()  # outputs not the committed ones
    answer = L.Result.decode(client.redeem(lying, wallet.ra_pubkeys))
    assert (answer.ok, answer.reason) == (False, L.MALFORMED)
    assert wallet.handle_result(answer.encode()) == "refused"  # nothing burnt: the coin is back
    assert wallet.to_redeem() == ([], [group]) and wallet.status()["balance"] == 70
    with pytest.raises(GatewayRefused, match="UNKNOWN_KIND|MALFORMED"):
        client.redeem(b"\x82\x01\x02", wallet.ra_pubkeys)
