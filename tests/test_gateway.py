"""The MQTT gateway: its sans-IO router, and the real thing end to end.

End to end is all real processes and sockets: four ledger replica processes, the embedded
amqtt broker or a Mosquitto subprocess (every such test runs on both), the gateway on its
own asyncio loop, and a paho client playing the device with an RA-registered wallet."""
import gc
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys

import pytest

from plugpay.host import broker, cluster, faucet, ra
from plugpay.host.gateway import QUERY, REGISTER, SUBMIT, Forward, Reply, Router
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as msg
from plugpay.protocol import signing, topics
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256

from mqtt_helpers import Device, GatewayRunner

FAST = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
        "status_interval": 0.2, "fetch_timeout": 0.3}
LIMIT = 10000
FAUCET_SECRET = hashlib.sha256(b"plugpay gateway test faucet").digest()


class Wallet:
    """One-time keys of a device, RA-signed over MQTT, and the coins they own."""

    def __init__(self, device, identity_id, device_secret, ra_pubkey):
        self.device = device
        self.identity_id = identity_id
        self.device_secret = device_secret
        self.ra_pubkey = ra_pubkey

    def register(self, count):
        """(secret, Account) pairs whose RA signatures came over MQTT and verified."""
        secrets = [signing.new_secret() for _ in range(count)]
        request = msg.make_request(self.identity_id, self.device_secret, [signing.public_key(s) for s in secrets])
        reply = msg.decode_reply(self.device.ask(topics.RA_REGISTER, request.encode()))
        assert isinstance(reply, msg.RegistrationResponse), reply
        return list(zip(secrets, msg.accounts_from(request, reply, self.ra_pubkey)))

    def fund(self, keys, amount, nonce):
        """Faucet ``amount`` to each key; returns the coins ((txhash, sn), secret, amount)."""
        request = L.FaucetRequest(nonce, [S.TxOutput(acc, amount) for _, acc in keys])
        result = L.Result.decode(self.device.ask(topics.FAUCET_REQUEST, request.encode()))
        assert (result.ok, result.request_digest) == (True, sha256(request.encode())), result
        return [((result.data, sn), secret, amount) for sn, (secret, _) in enumerate(keys)]


def pay(coin, to_account, amount):
    (txhash, sn), secret, _ = coin
    tx = S.Transaction([S.TxInput(txhash, sn)], S.Price(35, amount), [S.TxOutput(to_account, amount)], [b""])
    tx.witnesses = [signing.sign(secret, tx)]
    return tx


def result(raw):
    return L.Result.decode(raw)


# -- the real system ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    """A real RA directory, unsealed, with one identity whose device key the test holds."""
    base = tmp_path_factory.mktemp("ra")
    unlock = ra.Unlock(key_file=str(base / "ra-key.bin"))
    ra.create_key_file(unlock.key_file)
    vault = ra.init(base / "ra", unlock)
    device_secret = signing.new_secret()
    with ra.RegistrationAuthority(base / "ra", vault) as authority:
        identity = authority.register_identity(
            {"name": "Grace Hopper", "licence": "HOPPER-1906", "vehicle_id": "WVWZZZ1JZXW000002"},
            signing.public_key(device_secret))
    return base / "ra", vault, identity, device_secret


@pytest.fixture(scope="module")
def ledger(tmp_path_factory, authority):
    _, vault, _, _ = authority
    options = {"ra_pubkeys": {str(e): k.hex() for e, k in vault.epoch_keys.items()},
               "faucet_pubkey": signing.public_key(FAUCET_SECRET).hex()}
    path = cluster.generate(str(tmp_path_factory.mktemp("cluster")), app="plugpay.host.ledger:Ledger",
                            app_options=options, pbft=FAST)
    with cluster.LocalCluster(path, stop_grace=3.0) as lc:
        lc.start_all()
        lc.wait_listening()
        yield lc


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def gateway(request, ledger, authority, tmp_path_factory):
    ra_dir, vault, _, _ = authority
    options = dict(faucet=faucet.Faucet(FAUCET_SECRET, LIMIT), ra_directory=ra_dir, ra_vault=vault,
                   name="gateway-" + request.param)
    if request.param == "amqtt":
        host, port = "127.0.0.1", cluster.free_ports(1)[0]
        with GatewayRunner(ledger, host, port, embedded=True, **options) as runner:
            yield runner
    else:
        with broker.MosquittoProcess(str(tmp_path_factory.mktemp("mosquitto"))) as mosquitto:
            with GatewayRunner(ledger, mosquitto.host, mosquitto.port, embedded=False, **options) as runner:
                yield runner


@pytest.fixture
def device(gateway):
    d = Device(gateway.host, gateway.port, cid="ev-" + os.urandom(3).hex())
    yield d
    d.close()


@pytest.fixture
def wallet(device, authority):
    _, vault, identity, device_secret = authority
    return Wallet(device, identity, device_secret, vault.public_key)


def test_register_fund_spend_and_query_over_mqtt(wallet, device):
    keys = wallet.register(3)  # RA signatures checked against the RA key by accounts_from
    coins = wallet.fund(keys[:2], 700, nonce=int.from_bytes(os.urandom(6), "big"))
    tx = pay(coins[0], keys[2][1], 650)
    confirmed = result(device.ask(topics.LEDGER_SUBMIT, tx.encode()))
    assert (confirmed.ok, confirmed.request_digest, confirmed.data) == (True, sha256(tx.encode()), tx.txhash())

    utxo = result(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_UTXO, tx.txhash(), 0).encode()))
    assert utxo.ok and utxo.data[1] == 650 and utxo.data[0] == keys[2][1].encode()
    spent = result(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_UTXO, coins[0][0][0], 0).encode()))
    assert spent.ok and spent.data[3] == tx.txhash()  # spent_by

    again = result(device.ask(topics.LEDGER_SUBMIT, tx.encode()))
    assert L.reason_name(again.reason) == "DUPLICATE"


def test_many_transactions_in_flight_all_confirm(wallet, device):
    keys = wallet.register(L.MAX_FAUCET_OUTPUTS + 1)
    coins = wallet.fund(keys[:-1], 100, nonce=int.from_bytes(os.urandom(6), "big"))
    txs = [pay(coin, keys[-1][1], 100) for coin in coins]
    for tx in txs:
        device.publish(topics.topic(topics.LEDGER_SUBMIT, device.cid), tx.encode())
    answers = [result(device.answers[topics.LEDGER_RESULT].get(timeout=10)) for _ in txs]
    assert sorted(a.request_digest for a in answers) == sorted(sha256(tx.encode()) for tx in txs)
    assert all(a.ok for a in answers)


def test_faucet_refuses_over_the_limit_and_zero_amounts(wallet, device, gateway):
    keys = wallet.register(2)
    before = gateway.stats()["forwarded"]
    over = L.FaucetRequest(1, [S.TxOutput(keys[0][1], LIMIT), S.TxOutput(keys[1][1], 1)]).encode()
    zero = L.FaucetRequest(2, [S.TxOutput(keys[0][1], 0)]).encode()
    assert L.reason_name(result(device.ask(topics.FAUCET_REQUEST, over)).reason) == "FAUCET_LIMIT"
    assert L.reason_name(result(device.ask(topics.FAUCET_REQUEST, zero)).reason) == "ZERO_AMOUNT"
    assert gateway.stats()["forwarded"] == before


def rejections(lc):
    """Every replica's count of rejected requests by reason, from its database."""
    found = []
    for i in lc.running():
        conn = sqlite3.connect("file:%s?mode=ro" % lc.db_path(i), uri=True)
        try:
            found.append(dict((L.reason_name(r), n) for r, n in conn.execute("SELECT reason, count FROM ledger_rejections")))
        finally:
            conn.close()
    return found


def test_bad_payloads_are_answered_by_the_gateway_and_reach_no_replica(device, gateway, ledger):
    before = gateway.stats()
    cases = [
        (topics.LEDGER_SUBMIT, b"\xff\x00 not cbor", "MALFORMED"),
        (topics.LEDGER_SUBMIT, b"\x83\x02\x01\x00", "MALFORMED"),  # a transaction's tag, nothing valid after
        (topics.LEDGER_SUBMIT, bytes(L.MAX_REQUEST_BYTES + 1), "TOO_LARGE"),
        (topics.LEDGER_SUBMIT, L.FaucetRequest(1, [S.TxOutput(S.Account(b"\x02" * 33, 0, b""), 1)]).encode(),
         "UNKNOWN_OP"),
        (topics.LEDGER_QUERY, b"\xa0", "MALFORMED"),
        (topics.FAUCET_REQUEST, b"\x80", "MALFORMED"),
        (topics.FAUCET_REQUEST, bytes(L.MAX_REQUEST_BYTES + 1), "TOO_LARGE"),
    ]
    for kind, payload, reason in cases:
        answer = result(device.ask(kind, payload))
        assert (answer.ok, L.reason_name(answer.reason), answer.request_digest) == (False, reason, sha256(payload))
    after = gateway.stats()
    assert after["forwarded"] == before["forwarded"]
    assert after["refused_MALFORMED"] - before["refused_MALFORMED"] == 4
    for counts in rejections(ledger):
        assert not set(counts) & {"MALFORMED", "TOO_LARGE", "UNKNOWN_OP"}, counts


def test_bad_client_ids_are_dropped_and_counted(device, gateway):
    before = gateway.stats()
    for cid in ("", "has space", "x" * 41, "caf\u00e9"):
        device.publish(topics.PREFIX + topics.LEDGER_QUERY + "/" + cid, L.Query(L.QUERY_TX, bytes(32), 0).encode())
    # a good request after them: once it is answered, the bad ones were seen (one connection, in order)
    assert result(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_TX, bytes(32), 0).encode())).reason == L.NOT_FOUND
    after = gateway.stats()
    assert after["bad_client_id"] - before["bad_client_id"] == 4
    assert after["forwarded"] - before["forwarded"] == 1
    assert device.nothing_on(topics.LEDGER_RESULT)


def test_ra_refusals_come_back_over_mqtt(wallet, device):
    request = msg.make_request(wallet.identity_id, wallet.device_secret, [signing.public_key(signing.new_secret())])
    assert isinstance(msg.decode_reply(device.ask(topics.RA_REGISTER, request.encode())), msg.RegistrationResponse)
    replay = msg.make_request(wallet.identity_id, wallet.device_secret, [signing.public_key(signing.new_secret())],
                              request.nonce)
    replayed = msg.decode_reply(device.ask(topics.RA_REGISTER, replay.encode()))
    assert replayed.reason() == "REPLAYED_NONCE"
    assert msg.decode_reply(device.ask(topics.RA_REGISTER, b"junk")).reason() == "MALFORMED"


def test_tcp_nodelay_on_the_gateways_mqtt_sockets(gateway):
    sock = gateway.thread.call(gateway.gateway.mqtt.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    if gateway.broker is not None:  # the embedded broker's end of the same connection, found in this process
        peer = sock.getsockname()
        ends = [s for s in gc.get_objects() if isinstance(s, socket.socket) and s.fileno() >= 0
                and s.type == socket.SOCK_STREAM and _peer(s) == peer]
        assert len(ends) == 1 and ends[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def _peer(sock):
    try:
        return sock.getpeername()
    except OSError:
        return None


def test_a_replica_killed_with_sigkill_does_not_stop_the_gateway(wallet, device, gateway, ledger):
    keys = wallet.register(2)
    coins = wallet.fund(keys[:1], 50, nonce=int.from_bytes(os.urandom(6), "big"))
    primary = gateway.thread.call(gateway.gateway.client.primary)
    victim = (primary + 1) % ledger.config["n"]
    ledger.kill(victim)
    try:
        tx = pay(coins[0], keys[1][1], 50)
        assert result(device.ask(topics.LEDGER_SUBMIT, tx.encode())).ok
        assert result(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_UTXO, tx.txhash(), 0).encode())).ok
    finally:
        ledger.start(victim)  # it recovers from its database for the tests after this one
        ledger.wait_listening()


def test_ledger_up_serves_the_faucet_and_the_ra_over_its_embedded_broker(tmp_path, authority):
    """`plugpay ledger up` as a user runs it: replicas, amqtt, gateway; a device uses them."""
    ra_dir, vault, identity, device_secret = authority
    port = cluster.free_ports(1)[0]
    up = subprocess.Popen(
        [sys.executable, "-m", "plugpay.tools.cli", "ledger", "up", "--dir", str(tmp_path / "ledger"),
         "--ra-dir", str(ra_dir), "--key-file", str(ra_dir.parent / "ra-key.bin"), "--mqtt-port", str(port),
         "--faucet-max", "500", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("ra:"):
            line = up.stdout.readline()
            assert line, "exited early: %s" % "".join(lines)
            lines.append(line)
        out = "".join(lines)
        assert "mqtt:    mqtt://127.0.0.1:%d (embedded amqtt broker)" % port in out
        assert "at most 500 per request" in out and "plugpay/ra/register/+ -> plugpay/ra/reply/+" in out
        assert os.stat(tmp_path / "ledger" / faucet.KEY_FILE).st_mode & 0o777 == 0o600
        device = Device("127.0.0.1", port, cid="ev-cli")
        try:
            keys = Wallet(device, identity, device_secret, vault.public_key).register(1)
            request = L.FaucetRequest(1, [S.TxOutput(keys[0][1], 500)]).encode()
            assert result(device.ask(topics.FAUCET_REQUEST, request)).ok
        finally:
            device.close()
        up.send_signal(signal.SIGTERM)
        assert up.communicate(timeout=20)[0].strip().endswith("stopped") and up.returncode == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


# -- the router, without I/O -------------------------------------------------------------

def account(i):
    secret = hashlib.sha256(b"router test %d" % i).digest()
    return S.Account(signing.public_key(secret), 0, bytes(64))


def test_router_forwards_good_requests_and_answers_bad_ones_itself():
    router = Router()
    tx = S.Transaction([S.TxInput(bytes(32), 0)], S.Price(1, 5), [S.TxOutput(account(1), 5)], [bytes(64)]).encode()
    action = router.receive("plugpay/ledger/submit/ev1", tx)
    assert action == Forward((topics.LEDGER_SUBMIT, tx), SUBMIT, tx)
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    assert router.receive("plugpay/ledger/query/ev1", query).to == QUERY

    reply = router.receive("plugpay/ledger/submit/ev2", b"\xff")
    assert reply.topic == "plugpay/ledger/result/ev2"
    answer = L.Result.decode(reply.payload)
    assert (answer.reason, answer.request_digest) == (L.MALFORMED, sha256(b"\xff"))
    big = bytes(L.MAX_REQUEST_BYTES + 1)
    assert L.Result.decode(router.receive("plugpay/ledger/submit/ev2", big).payload).reason == L.TOO_LARGE
    no_faucet = router.receive("plugpay/faucet/request/ev2", L.FaucetRequest(1, [S.TxOutput(account(1), 1)]).encode())
    assert L.Result.decode(no_faucet.payload).reason == L.NOT_FAUCET
    assert router.stats["forwarded"] == 2 and router.stats["refused_MALFORMED"] == 1


def test_router_drops_unknown_topics_and_bad_client_ids():
    router = Router()  # no RA: its topics are not ours either
    for topic in ("plugpay/ledger/result/ev1", "plugpay/ra/register/ev1", "elsewhere/x", "plugpay/ledger/nope/ev1"):
        assert router.receive(topic, b"\x80") is None
    for topic in ("plugpay/ledger/submit/", "plugpay/ledger/submit/a b", "plugpay/ledger/query/" + "x" * 41):
        assert router.receive(topic, b"\x80") is None
    assert (router.stats["unknown_topic"], router.stats["bad_client_id"], router.stats["forwarded"]) == (4, 3, 0)
    assert [f for f, _ in Router(serve_ra=True).subscriptions()][-1] == "plugpay/ra/register/+"


def test_router_forwards_identical_requests_once_and_answers_everyone():
    router = Router(serve_ra=True)
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    first = router.receive("plugpay/ledger/query/a", query)
    assert router.receive("plugpay/ledger/query/b", query) is None
    assert router.receive("plugpay/ledger/query/a", query) is None  # a retry of a: answered once
    register = router.receive("plugpay/ra/register/a", query)  # same bytes, other kind: its own request
    assert register.to == REGISTER
    answer = L.Result(sha256(query), False, L.NOT_FOUND, "", None).encode()
    assert router.finish(first.key, answer) == [Reply("plugpay/ledger/result/a", answer),
                                                Reply("plugpay/ledger/result/b", answer)]
    assert router.receive("plugpay/ledger/query/b", query) == first  # nothing in flight: forwarded again
    assert router.abandon(first.key) == 1 and router.stats["joined"] == 2


def test_router_faucet_checks_limit_and_signs_the_mint():
    mint = faucet.Faucet(FAUCET_SECRET, limit=100)
    router = Router(faucet=mint)
    request = L.FaucetRequest(9, [S.TxOutput(account(1), 60), S.TxOutput(account(2), 40)]).encode()
    action = router.receive("plugpay/faucet/request/ev", request)
    op = L.decode_request(action.request)
    assert isinstance(op, L.Faucet) and (op.nonce, op.outputs) == (9, L.FaucetRequest.decode(request).outputs)
    assert signing.verify(mint.pubkey, op, op.faucet_sig)
    ledger_answer = L.Result(sha256(action.request), True, L.OK, "", op.txhash()).encode()
    (reply,) = router.finish(action.key, ledger_answer)
    answer = L.Result.decode(reply.payload)
    assert (answer.ok, answer.request_digest, answer.data) == (True, sha256(request), op.txhash())

    for outputs, reason in (([S.TxOutput(account(1), 101)], L.FAUCET_LIMIT),
                            ([S.TxOutput(account(1), 1), S.TxOutput(account(2), 0)], L.ZERO_AMOUNT)):
        refused = router.receive("plugpay/faucet/request/ev", L.FaucetRequest(1, outputs).encode())
        assert isinstance(refused, Reply) and L.Result.decode(refused.payload).reason == reason
    assert L.reason_name(L.FAUCET_LIMIT) == "FAUCET_LIMIT"


# -- topics, the faucet request and key, broker URLs ------------------------------------

def test_topics_round_trip_and_refuse_bad_client_ids():
    for kind in topics.REQUESTS + topics.REPLIES:
        assert topics.parse(topics.topic(kind, "Ev_1.a-Z")) == (kind, "Ev_1.a-Z")
        assert topics.subscription(kind) == "plugpay/%s/+" % kind
    assert topics.reply_topic(topics.RA_REGISTER, "ev") == "plugpay/ra/reply/ev"
    for cid in ("", "a/b", "a+b", "#", "x" * 41, "\u00e9", None):
        with pytest.raises(ValueError):
            topics.topic(topics.LEDGER_SUBMIT, cid)
    with pytest.raises(ValueError):
        topics.topic("ledger/other", "ev")
    assert topics.parse("plugpay/ledger/submit/a/b") is None


def test_faucet_request_is_strict():
    out = S.TxOutput(account(1), 5)
    raw = L.FaucetRequest(3, [out]).encode()
    assert L.FaucetRequest.decode(raw) == L.FaucetRequest(3, [out])
    with pytest.raises(L.UnknownOp):
        L.decode_request(raw)
    for bad in ([], [out] * (L.MAX_FAUCET_OUTPUTS + 1)):
        with pytest.raises(L.DecodeError):
            L.FaucetRequest(3, bad)


def test_faucet_key_file_is_private(tmp_path):
    path = str(tmp_path / faucet.KEY_FILE)
    pubkey = faucet.create_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert signing.public_key(faucet.load_key(path)) == pubkey
    with pytest.raises(FileExistsError):
        faucet.create_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(PermissionError):
        faucet.load_key(path)


def test_broker_urls():
    assert broker.parse_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884, False)
    assert broker.parse_url("mqtt://broker.local") == ("broker.local", 1883, False)
    assert broker.parse_url("mqtt://[::1]:1883") == ("::1", 1883, False)
    assert broker.parse_url("mqtts://broker.local") == ("broker.local", 8883, True)
    assert broker.parse_url("mqtts://[::1]:8884") == ("::1", 8884, True)
    assert broker.url("::1", 8884, tls=True) == "mqtts://[::1]:8884"
    for bad, says in (("tcp://h:1", "expected mqtt://"), ("mqtt://:1883", "no host"), ("mqtt://h:99999", "out of range"),
                      ("mqtt://h:x", "(?i)port"), ("mqtt://u:p@h:1", "passwords"), ("mqtt://h:1/topic", "path"),
                      ("127.0.0.1:1883", "expected mqtt://")):
        with pytest.raises(ValueError, match=says):
            broker.parse_url(bad)
