"""The MQTT gateway: its sans-IO router, and the real thing end to end.

End to end is all real processes and sockets: four ledger replica processes, the embedded
amqtt broker or a Mosquitto subprocess (every such test runs on both), the gateway on its
own asyncio loop, and a paho client playing the device with an RA-registered wallet, its
registrations and faucet requests sealed to the RA's key (``protocol.sealed``)."""
import gc
import hashlib
import hmac
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from plugpay.host import broker, cluster, faucet, ra
from plugpay.host.gateway import HEIGHT, OPEN, QUERY, SUBMIT, Forward, Gateway, Inner, Reply, Router
from plugpay.protocol import aead, codec, sealed, signing, topics
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as msg
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256

from mqtt_helpers import Device, GatewayRunner, Observer

FAST = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
        "status_interval": 0.2, "fetch_timeout": 0.3}
LIMIT = 10000
FAUCET_SECRET = hashlib.sha256(b"plugpay gateway test faucet").digest()


class Wallet:
    """One-time keys of a device, RA-signed over MQTT, and the coins they own. Registration
    and faucet requests go sealed to the RA key of the vault's epoch."""

    def __init__(self, device, identity_id, device_secret, vault):
        self.device = device
        self.identity_id = identity_id
        self.device_secret = device_secret
        self.ra_pubkey = vault.public_key
        self.epoch = vault.epoch

    def sealed(self, inner):
        """The inner answer to ``inner`` sent sealed (a clear refusal raises)."""
        request, reply_key = sealed.seal_request(inner, self.epoch, self.ra_pubkey)
        return sealed.open_reply(reply_key, self.device.ask(topics.HOST_SEALED, request))

    def register(self, count):
        """(secret, Account) pairs whose RA signatures came over MQTT and verified."""
        secrets = [signing.new_secret() for _ in range(count)]
        request = msg.make_request(self.identity_id, self.device_secret, [signing.public_key(s) for s in secrets])
        reply = msg.decode_reply(self.sealed(request.encode()))
        assert isinstance(reply, msg.RegistrationResponse), reply
        return list(zip(secrets, msg.accounts_from(request, reply, self.ra_pubkey)))

    def faucet(self, keys, amount, nonce):
        """The faucet's ``Result`` for ``amount`` to each key."""
        request = L.FaucetRequest(nonce, [S.TxOutput(acc, amount) for _, acc in keys]).encode()
        result = L.Result.decode(self.sealed(request))
        assert result.request_digest == sha256(request), result
        return result

    def fund(self, keys, amount, nonce):
        """Faucet ``amount`` to each key; returns the coins ((txhash, sn), secret, amount)."""
        result = self.faucet(keys, amount, nonce)
        assert result.ok and len(result.data) == len(keys), result
        return [((txhash, 0), secret, amount) for txhash, (secret, _) in zip(result.data, keys)]


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
    return Wallet(device, identity, device_secret, vault)


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


def test_the_height_is_answered_from_f_plus_1_replicas(wallet, device):
    """What a device asks instead of naming an earlier coin of its own: every device asks
    the same bytes, so the question says nothing about who asks."""
    before = result(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_HEIGHT, bytes(32), 0).encode()))
    wallet.fund(wallet.register(1), 5, nonce=int.from_bytes(os.urandom(6), "big"))
    query = L.Query(L.QUERY_HEIGHT, bytes(32), 0).encode()
    after = result(device.ask(topics.LEDGER_QUERY, query))
    assert after.ok and after.request_digest == sha256(query)
    assert type(after.data[0]) is int and after.data[0] > before.data[0] >= 0


def test_the_faucet_mints_each_coin_alone_and_a_resent_request_once(wallet, device, gateway):
    keys = wallet.register(3)
    nonce = int.from_bytes(os.urandom(6), "big")
    coins = wallet.fund(keys, 40, nonce)
    txhashes = [txhash for (txhash, _), _, _ in coins]
    assert len(set(txhashes)) == 3
    nonces = []
    for (txhash, _), _, _ in coins:  # one Faucet per coin, under a nonce that is no sequence
        tx = result(device.ask(topics.LEDGER_QUERY, L.Query(L.QUERY_TX, txhash, 0).encode()))
        op = L.Faucet.decode(tx.data[2])
        assert tx.data[1] == L.TAG_FAUCET and len(op.outputs) == 1 and op.txhash() == txhash
        nonces.append(op.nonce)
    assert nonces == [faucet.output_nonce(FAUCET_SECRET, nonce, i) for i in range(3)]
    assert all(abs(a - b) > 1000 for a, b in zip(nonces, nonces[1:]))
    before = gateway.stats()["faucet_minted"]
    again = wallet.faucet(keys, 40, nonce)  # the same request again: the ledger says DUPLICATE
    assert (again.ok, again.data) == (True, txhashes)
    assert gateway.stats()["faucet_minted"] == before + 1


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
    before = gateway.stats()
    over = wallet.faucet(keys, LIMIT // 2 + 1, nonce=1)
    zero = L.FaucetRequest(2, [S.TxOutput(keys[0][1], 0)]).encode()
    assert (over.ok, L.reason_name(over.reason), over.data) == (False, "FAUCET_LIMIT", None)
    assert L.reason_name(L.Result.decode(wallet.sealed(zero)).reason) == "ZERO_AMOUNT"
    after = gateway.stats()
    assert after["faucet_refused_FAUCET_LIMIT"] - before["faucet_refused_FAUCET_LIMIT"] == 1
    assert after["faucet_refused_ZERO_AMOUNT"] - before["faucet_refused_ZERO_AMOUNT"] == 1
    assert after["faucet_minted"] == before["faucet_minted"]


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
    ]
    for kind, payload, reason in cases:
        answer = result(device.ask(kind, payload))
        assert (answer.ok, L.reason_name(answer.reason), answer.request_digest) == (False, reason, sha256(payload))
    after = gateway.stats()
    assert after["forwarded"] == before["forwarded"]
    assert after["refused_MALFORMED"] - before["refused_MALFORMED"] == 3
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


def test_ra_refusals_come_back_sealed(wallet, device):
    request = msg.make_request(wallet.identity_id, wallet.device_secret, [signing.public_key(signing.new_secret())])
    assert isinstance(msg.decode_reply(wallet.sealed(request.encode())), msg.RegistrationResponse)
    replay = msg.make_request(wallet.identity_id, wallet.device_secret, [signing.public_key(signing.new_secret())],
                              request.nonce)
    assert msg.decode_reply(wallet.sealed(replay.encode())).reason() == "REPLAYED_NONCE"
    stranger = msg.make_request(os.urandom(16), signing.new_secret(), [signing.public_key(signing.new_secret())])
    assert msg.decode_reply(wallet.sealed(stranger.encode())).reason() == "UNKNOWN_IDENTITY"


def ra_database(ra_dir):
    """Every row the RA stores, read beside the gateway's own connection."""
    conn = sqlite3.connect("file:%s?mode=ro" % (ra_dir / ra.REPOSITORY_FILE), uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_sealed_requests_that_do_not_open_or_decode_get_a_clear_refusal_and_change_nothing(
        wallet, device, gateway, authority):
    ra_dir, vault, _, _ = authority
    registration = msg.make_request(wallet.identity_id, wallet.device_secret,
                                    [signing.public_key(signing.new_secret())]).encode()
    good, _ = sealed.seal_request(registration, vault.epoch, vault.public_key)
    fields = codec.loads(good)
    box = fields[4]
    tampered = codec.dumps(fields[:4] + [box[:60] + bytes([box[60] ^ 1]) + box[61:]])
    other_ra = signing.public_key(hashlib.sha256(b"another RA").digest())

    def to_ra(inner, epoch=vault.epoch, key=vault.public_key):
        return sealed.seal_request(inner, epoch, key)[0]

    cases = [
        (b"\xff garbage", "MALFORMED"),
        (bytes(codec.MAX_BYTES + 1), "TOO_LARGE"),
        (to_ra(registration, epoch=vault.epoch + 5), "UNKNOWN_EPOCH"),
        (to_ra(registration, key=other_ra), "CANNOT_OPEN"),
        (tampered, "CANNOT_OPEN"),
        (to_ra(b"\xff not cbor"), "MALFORMED"),
        (to_ra(L.Query(L.QUERY_TX, bytes(32), 0).encode()), "UNKNOWN_KIND"),
        (to_ra(codec.dumps([msg.TAG_REGISTRATION_REQUEST, 1, b"short"])), "MALFORMED"),
    ]
    before, rows = gateway.stats(), ra_database(ra_dir)
    for payload, code in cases:
        reply = sealed.SealedReply.decode(device.ask(topics.HOST_SEALED, payload))
        assert (sealed.reason_name(reply.code), reply.request_digest, reply.box) == (code, sha256(payload), b"")
        assert reply.text
    after = gateway.stats()
    for code in ("MALFORMED", "TOO_LARGE", "UNKNOWN_EPOCH", "CANNOT_OPEN", "UNKNOWN_KIND"):
        name = "sealed_refused_" + code
        assert after[name] - before[name] == sum(1 for _, c in cases if c == code), name
    assert ra_database(ra_dir) == rows
    assert not {k: after[k] - before[k] for k in after if k.startswith("ra_") and after[k] != before[k]}
    assert after["faucet_minted"] == before["faucet_minted"]


def test_an_observer_of_every_topic_sees_no_key_account_or_identity(wallet, device, gateway):
    """Subscribed to ``#`` during a registration of N keys and a faucet request: none of
    the registered public keys (nor their addresses or RA signatures), none of the faucet
    accounts and not the identity id, in any topic or payload; sizes in 256-byte steps."""
    observer = Observer(gateway.host, gateway.port)
    try:
        keys = wallet.register(20)
        result = wallet.faucet(keys[:5], 10, nonce=int.from_bytes(os.urandom(6), "big"))
        assert result.ok
        replies = topics.topic(topics.HOST_SEALED_REPLY, device.cid)
        for _ in range(100):  # the observer's copy of the second answer is on its way
            if sum(1 for t, _ in observer.seen() if t == replies) >= 2:
                break
            time.sleep(0.05)
        seen = observer.seen()
    finally:
        observer.close()
    requests = [p for t, p in seen if t == topics.topic(topics.HOST_SEALED, device.cid)]
    assert len(requests) == 2 and sum(1 for t, _ in seen if t == replies) == 2, [t for t, _ in seen]
    secrets = [wallet.identity_id, wallet.identity_id.hex().encode()]
    for _, account in keys:
        secrets += [account.pubkey, account.address(), account.ra_sig, account.pubkey.hex().encode()]
    for topic, payload in seen:
        for value in secrets:
            assert value not in payload and value.decode("latin-1") not in topic, (topic, value.hex())
    for topic, payload in seen:
        if topic.startswith(topics.PREFIX + "host/"):
            box = codec.loads(payload)[-1]
            assert (len(box) - aead.OVERHEAD) % 256 == 0, (topic, len(box))


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
        assert "in sealed requests, at most 500 per request" in out
        assert "sealed:  plugpay/host/sealed/+ -> plugpay/host/sealed-reply/+ (sealed to RA epoch 0's key)" in out
        assert os.stat(tmp_path / "ledger" / faucet.KEY_FILE).st_mode & 0o777 == 0o600
        device = Device("127.0.0.1", port, cid="ev-cli")
        try:
            wallet = Wallet(device, identity, device_secret, vault)
            assert wallet.faucet(wallet.register(1), 500, nonce=1).ok
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


RA_SECRET = hashlib.sha256(b"router test RA").digest()
TABLE = {msg.TAG_REGISTRATION_REQUEST: Inner(msg.RegistrationRequest, "the RA"),
         L.TAG_FAUCET_REQUEST: Inner(L.FaucetRequest, "the faucet")}


def sealed_router():
    return Router(lambda epoch: RA_SECRET if epoch == 0 else None, TABLE)


def seal(inner):
    return sealed.seal_request(inner, 0, signing.public_key(RA_SECRET))


def test_router_forwards_good_requests_and_answers_bad_ones_itself():
    router = Router()
    tx = S.Transaction([S.TxInput(bytes(32), 0)], S.Price(1, 5), [S.TxOutput(account(1), 5)], [bytes(64)]).encode()
    action = router.receive("plugpay/ledger/submit/ev1", tx)
    assert action == Forward((topics.LEDGER_SUBMIT, tx), SUBMIT, tx)
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    assert router.receive("plugpay/ledger/query/ev1", query).to == QUERY
    height = L.Query(L.QUERY_HEIGHT, bytes(32), 0).encode()
    assert router.receive("plugpay/ledger/query/ev1", height).to == HEIGHT

    reply = router.receive("plugpay/ledger/submit/ev2", b"\xff")
    assert reply.topic == "plugpay/ledger/result/ev2"
    answer = L.Result.decode(reply.payload)
    assert (answer.reason, answer.request_digest) == (L.MALFORMED, sha256(b"\xff"))
    big = bytes(L.MAX_REQUEST_BYTES + 1)
    assert L.Result.decode(router.receive("plugpay/ledger/submit/ev2", big).payload).reason == L.TOO_LARGE
    assert router.stats["forwarded"] == 3 and router.stats["refused_MALFORMED"] == 1


def test_router_drops_unknown_topics_and_bad_client_ids():
    router = Router()  # no RA key: the sealed topic is not ours either
    for topic in ("plugpay/ledger/result/ev1", "plugpay/host/sealed/ev1", "elsewhere/x", "plugpay/ledger/nope/ev1",
                  "plugpay/ra/register/ev1", "plugpay/faucet/request/ev1"):
        assert router.receive(topic, b"\x80") is None
    for topic in ("plugpay/ledger/submit/", "plugpay/ledger/submit/a b", "plugpay/ledger/query/" + "x" * 41):
        assert router.receive(topic, b"\x80") is None
    assert (router.stats["unknown_topic"], router.stats["bad_client_id"], router.stats["forwarded"]) == (6, 3, 0)
    assert [f for f, _ in Router().subscriptions()] == ["plugpay/ledger/submit/+", "plugpay/ledger/query/+"]
    assert [f for f, _ in sealed_router().subscriptions()][-1] == "plugpay/host/sealed/+"


def test_router_forwards_identical_requests_once_and_answers_everyone():
    router = sealed_router()
    query = L.Query(L.QUERY_TX, bytes(32), 0).encode()
    first = router.receive("plugpay/ledger/query/a", query)
    assert router.receive("plugpay/ledger/query/b", query) is None
    assert router.receive("plugpay/ledger/query/a", query) is None  # a retry of a: answered once
    answer = L.Result(sha256(query), False, L.NOT_FOUND, "", None).encode()
    assert router.finish(first.key, answer) == [Reply("plugpay/ledger/result/a", answer),
                                                Reply("plugpay/ledger/result/b", answer)]
    assert router.receive("plugpay/ledger/query/b", query) == first  # nothing in flight: forwarded again
    assert router.abandon(first.key) == 1 and router.stats["joined"] == 2

    request, _ = seal(b"inner")
    opening = router.receive("plugpay/host/sealed/a", request)
    assert opening == Forward((topics.HOST_SEALED, request), OPEN, request)
    assert router.receive("plugpay/host/sealed/a", request) is None  # re-sent: the same bytes, joined
    assert router.receive("plugpay/host/sealed/b", request) is None
    assert [r.topic for r in router.finish(opening.key, b"sealed answer")] == [
        "plugpay/host/sealed-reply/a", "plugpay/host/sealed-reply/b"]


def test_router_opens_sealed_requests_and_dispatches_them_by_inner_tag():
    router = sealed_router()
    registration = msg.make_request(bytes(16), RA_SECRET, [signing.public_key(RA_SECRET)])
    request, device_key = seal(registration.encode())
    entry, decoded, inner, host_key = router.open_sealed(request)
    assert (entry.serve, decoded, inner) == ("the RA", registration, registration.encode())
    assert sealed.open_reply(device_key, sealed.seal_reply(host_key, b"signed")) == b"signed"
    ask = L.FaucetRequest(3, [S.TxOutput(account(1), 5)])
    entry, decoded, _, _ = router.open_sealed(seal(ask.encode())[0])
    assert (entry.serve, decoded) == ("the faucet", ask)
    for inner, code in ((L.Query(L.QUERY_TX, bytes(32), 0).encode(), sealed.UNKNOWN_KIND),
                        (codec.dumps([1, 2, 3]), sealed.UNKNOWN_KIND),
                        (codec.dumps(b"no array"), sealed.UNKNOWN_KIND),
                        (b"\xff", sealed.MALFORMED),
                        (codec.dumps([L.TAG_FAUCET_REQUEST, 1, 3, []]), sealed.MALFORMED)):
        with pytest.raises(sealed.SealedRefused) as refused:
            router.open_sealed(seal(inner)[0])
        assert refused.value.code == code, refused.value
    assert Router(lambda epoch: RA_SECRET).inner == {}  # a table without entries serves no kind

    late = sealed.seal_request(b"x", 1, signing.public_key(RA_SECRET))[0]
    action = router.receive("plugpay/host/sealed/ev", late)
    with pytest.raises(sealed.SealedRefused) as refused:
        router.open_sealed(action.request)
    (reply,) = router.refuse(action.key, refused.value)
    answer = sealed.SealedReply.decode(reply.payload)
    assert (reply.topic, answer.code, answer.request_digest) == ("plugpay/host/sealed-reply/ev", sealed.UNKNOWN_EPOCH,
                                                                 sha256(late))
    assert router.stats["sealed_refused_UNKNOWN_EPOCH"] == 1 and not router.waiting


def test_router_refuses_sealed_garbage_at_once():
    router = sealed_router()
    for payload, code in ((b"\xff", sealed.MALFORMED), (bytes(codec.MAX_BYTES + 1), sealed.TOO_LARGE),
                          (L.Query(L.QUERY_TX, bytes(32), 0).encode(), sealed.MALFORMED)):
        reply = router.receive("plugpay/host/sealed/ev", payload)
        answer = sealed.SealedReply.decode(reply.payload)
        assert (reply.topic, answer.code, answer.request_digest) == ("plugpay/host/sealed-reply/ev", code,
                                                                     sha256(payload))
    assert router.stats["forwarded"] == 0 and router.stats["sealed_refused_MALFORMED"] == 2


def test_the_faucet_signs_one_mint_per_output_deterministically():
    mint = faucet.Faucet(FAUCET_SECRET, limit=100)
    request = L.FaucetRequest(9, [S.TxOutput(account(1), 60), S.TxOutput(account(2), 40)])
    ops = mint.mint(request)
    assert [op.encode() for op in ops] == [op.encode() for op in mint.mint(request)]  # a re-send: the same ops
    for i, op in enumerate(ops):
        assert (op.nonce, op.outputs) == (faucet.output_nonce(FAUCET_SECRET, 9, i), [request.outputs[i]])
        assert signing.verify(mint.pubkey, op, op.faucet_sig)
    assert faucet.output_nonce(FAUCET_SECRET, 9, 1) == int.from_bytes(
        hmac.new(FAUCET_SECRET, b"plugpay/faucet-nonce/v1" + (9).to_bytes(8, "big") + b"\x01", "sha256").digest()[:8],
        "big")

    raw = request.encode()
    answers = [L.Result(sha256(op.encode()), True, L.OK, "", op.txhash()).encode() for op in ops]
    minted = faucet.answer(raw, ops, answers)
    assert (minted.ok, minted.request_digest, minted.data) == (True, sha256(raw), [op.txhash() for op in ops])
    duplicate = L.Result(sha256(ops[1].encode()), False, L.DUPLICATE, "already confirmed", None).encode()
    assert faucet.answer(raw, ops, [answers[0], duplicate]).data == [op.txhash() for op in ops]
    refused = L.Result(sha256(ops[1].encode()), False, L.BAD_ACCOUNT_SIGNATURE, "outputs[0].account", None).encode()
    failed = faucet.answer(raw, ops, [answers[0], refused])
    assert (failed.ok, failed.reason, failed.detail, failed.data) == (False, L.BAD_ACCOUNT_SIGNATURE,
                                                                      "outputs[0].account", None)

    for outputs, reason in (([S.TxOutput(account(1), 101)], L.FAUCET_LIMIT),
                            ([S.TxOutput(account(1), 1), S.TxOutput(account(2), 0)], L.ZERO_AMOUNT)):
        with pytest.raises(faucet.Refused) as info:
            mint.mint(L.FaucetRequest(1, outputs))
        assert info.value.reason == reason
        assert faucet.refused(raw, info.value).reason == reason
    assert L.reason_name(L.FAUCET_LIMIT) == "FAUCET_LIMIT"


def test_a_gateway_serves_the_faucet_and_the_ra_only_with_the_ras_key():
    for options in ({"faucet": faucet.Faucet(FAUCET_SECRET)}, {"ra_directory": "ra"}):
        with pytest.raises(ValueError, match="sealed requests, which need the RA's key"):
            Gateway(None, None, "127.0.0.1", 1883, **options)


# -- topics, the faucet request and key, broker URLs ------------------------------------

def test_topics_round_trip_and_refuse_bad_client_ids():
    for kind in topics.REQUESTS + topics.REPLIES:
        assert topics.parse(topics.topic(kind, "Ev_1.a-Z")) == (kind, "Ev_1.a-Z")
        assert topics.subscription(kind) == "plugpay/%s/+" % kind
    assert topics.reply_topic(topics.HOST_SEALED, "ev") == "plugpay/host/sealed-reply/ev"
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
