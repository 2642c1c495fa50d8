"""The device's MQTT client on MicroPython, as real unix-port processes: against
Mosquitto and the embedded amqtt broker in plain MQTT, the deployment broker with TLS and
its ACL, a broker restarted under it, brokers that refuse, and a fake broker sending
garbage; and a device wallet that registers keys, funds and pays through a real gateway.

The device side is ``tests/device/mqtt_echo.py`` and ``gateway_device.py`` run by
``tests/unix_device.DeviceProcess``; the other side is CPython (paho). A device that
"receives nothing" is checked after a message it may receive came through behind the
traffic it must not see (Mosquitto delivers in order), never by elapsed time.
"""
import datetime
import json
import os
import queue
import socket
import threading

import paho.mqtt.client as paho
import pytest

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.refill import refill
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import broker, broker_pki, cluster, deployment
from plugpay.host.broker import EmbeddedBroker, MosquittoProcess
from plugpay.host.stack import HostStack, LoopThread
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S

from unix_device import DeviceProcess

HEAP = 512 * 1024  # the device processes run in a bounded heap (64-bit: ~1.7x an ESP32's needs)


class Peer:
    """A paho client with its own network thread and TCP_NODELAY: the other end of the
    device's topics."""

    def __init__(self, host, port, tls=None, login=None):
        self.got = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="peer-" + os.urandom(6).hex(),
                                  protocol=paho.MQTTv311)
        self.client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.client.tls_set_context(tls)
        if login:
            self.client.username_pw_set(*login)
        acks = self.acks = queue.Queue()
        self.client.on_connect = lambda client, userdata, flags, reason, props: acks.put(reason)
        self.client.on_subscribe = lambda client, userdata, mid, reasons, props: acks.put(reasons)
        self.client.on_message = lambda client, userdata, message: self.got.put((message.topic, message.payload))
        self.client.connect(host, port)
        self.client.loop_start()
        assert not acks.get(timeout=10).is_failure

    def subscribe(self, *filters):
        self.client.subscribe([(f, 1) for f in filters])
        self.acks.get(timeout=10)

    def publish(self, topic, payload):
        self.client.publish(topic, payload, 1).wait_for_publish(10)

    def next(self):
        return self.got.get(timeout=30)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def link(username, direction):
    return "plugpay/link/%s/%s" % (username, direction)


def command(**order):
    return json.dumps(order).encode()


def echo_device(tmp_path, url, username, ca="-", give_up="-", keepalive=30):
    return DeviceProcess(tmp_path, "mqtt_echo.py", url, username, ca, give_up, keepalive, heap=HEAP)


def round_trips(device, peer, username, payloads):
    """Each payload goes to the device and comes back reversed, at QoS 1 both ways."""
    for payload in payloads:
        peer.publish(link(username, "to-device"), payload)
        assert peer.next() == (link(username, "to-host"), payload[::-1])
        got = device.expect("message")  # the next message the device got: nothing came before it
        assert (got["topic"], got["size"]) == (link(username, "to-device"), len(payload))


PAYLOADS = [b"installment 1", b"", bytes(range(256)) * 4, os.urandom(40000)]  # 40 KB: many reads


# -- plain MQTT: Mosquitto and amqtt ---------------------------------------------------------

@pytest.fixture(params=["mosquitto", "amqtt"])
def plain_broker(request, tmp_path_factory):
    if request.param == "mosquitto":
        with MosquittoProcess(str(tmp_path_factory.mktemp("mosquitto"))) as m:
            yield m.host, m.port
        return
    loop = LoopThread()
    embedded = EmbeddedBroker("127.0.0.1", cluster.free_ports(1)[0])
    loop.run(embedded.start())
    try:
        yield embedded.host, embedded.port
    finally:
        loop.run(embedded.stop())
        loop.close()


def test_a_micropython_device_round_trips_at_qos_1_with_a_cpython_peer(plain_broker, tmp_path):
    host, port = plain_broker
    username = os.urandom(16).hex()
    peer = Peer(host, port)
    try:
        peer.subscribe(link(username, "to-host"))
        with echo_device(tmp_path, broker.url(host, port), username) as device:
            hello = device.expect("connected")
            assert hello["connects"] == 1 and hello["url"] == broker.url(host, port)
            assert hello["client_id"].startswith("pp") and len(hello["client_id"]) == 22
            round_trips(device, peer, username, PAYLOADS)
            peer.publish(link(username, "to-device"), command(cmd="bye"))
            assert device.expect("bye")["connects"] == 1
            assert device.wait() == 0
    finally:
        peer.close()


def test_a_broker_restarted_mid_connection_is_reconnected_and_resubscribed(tmp_path):
    username = os.urandom(16).hex()
    with MosquittoProcess(str(tmp_path)) as mosquitto:
        with echo_device(tmp_path, mosquitto.url, username) as device:
            device.expect("connected")
            peer = Peer(mosquitto.host, mosquitto.port)
            peer.subscribe(link(username, "to-host"))
            round_trips(device, peer, username, [b"before"])
            peer.close()
            mosquitto.__exit__()
            mosquitto.__enter__()  # the same port, no session kept: only a re-subscription helps
            again = device.expect("reconnected")
            assert again["connects"] == 2 and again["last_error"]
            peer = Peer(mosquitto.host, mosquitto.port)
            try:
                peer.subscribe(link(username, "to-host"))
                round_trips(device, peer, username, [b"after the restart"])
                peer.publish(link(username, "to-device"), command(cmd="bye"))
                assert device.wait() == 0
            finally:
                peer.close()


# -- the deployment broker: TLS and the ACL ------------------------------------------------

@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    base = tmp_path_factory.mktemp("deployment")
    port, gateway_port = cluster.free_ports(2)
    record = deployment.init(str(base / "broker"), ["broker.test"], port=port, bind="127.0.0.1",
                             gateway_port=gateway_port)
    with open(os.path.join(record["dir"], "gateway.password")) as f:
        login = ("gateway", f.read().strip())
    with MosquittoProcess(str(base), deployment=record) as m:
        yield record, m, login


def ca_of(record):
    return os.path.join(record["dir"], "ca.crt")


def operator(deployed):
    """A CPython client on the gateway listener, which may use every plugpay topic."""
    record, m, login = deployed
    gateway = broker.Endpoint(m.gateway_url, ca_of(record))
    return Peer(gateway.host, gateway.port, gateway.tls, login)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])  # a DNS name and an IP of the certificate
def test_over_tls_a_device_uses_its_own_topics_and_no_one_elses(deployed, tmp_path, host):
    record, m, _ = deployed
    username, other = os.urandom(16).hex(), os.urandom(16).hex()
    peer = operator(deployed)
    try:
        peer.subscribe(link(username, "to-host"), link(other, "to-host"), "plugpay/ledger/query/#")
        with echo_device(tmp_path, broker.url(host, m.port, tls=True), username, ca_of(record)) as device:
            cid = device.expect("connected")["client_id"]
            round_trips(device, peer, username, PAYLOADS)

            # another session's link topics: granted by Mosquitto, filtered at delivery
            peer.publish(link(username, "to-device"), command(cmd="subscribe", topic=link(other, "#")))
            assert device.expect("subscribed")["topic"] == link(other, "#")
            peer.publish(link(other, "to-device"), b"not for this device")
            round_trips(device, peer, username, [b"behind it"])
            assert not [r for r in device.records if r["event"] == "message" and other in r["topic"]]

            # publications the ACL refuses are dropped; its own request topic works
            for topic in (link(other, "to-host"), "plugpay/ledger/query/" + "x" * 20, "plugpay/ledger/query/" + cid):
                peer.publish(link(username, "to-device"), command(cmd="publish", topic=topic, data=topic))
                device.expect("message")  # the command
            assert peer.next() == ("plugpay/ledger/query/" + cid, ("plugpay/ledger/query/" + cid).encode())
            round_trips(device, peer, username, [b"and this one"])  # nothing else came before it

            peer.publish(link(username, "to-device"), command(cmd="bye"))
            assert device.wait() == 0
    finally:
        peer.close()


def test_a_broker_of_another_ca_is_refused_naming_it(deployed, tmp_path):
    _, m, _ = deployed
    stranger = deployment.init(str(tmp_path / "stranger"), ["broker.test"])
    with echo_device(tmp_path, m.url, os.urandom(16).hex(), ca_of(stranger)) as device:
        error = device.expect("error")["error"]
        assert device.wait() == 3
    assert error == ("cannot connect to the MQTT broker at %s: the broker's TLS certificate failed verification: "
                     "The certificate is not correctly signed by the trusted CA" % m.url)


NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.mark.parametrize("names,now,says", [
    (["elsewhere.test"], None, "The certificate Common Name (CN) does not match with the expected CN"),
    (["localhost", "127.0.0.1"], NOW - datetime.timedelta(days=broker_pki.VALID_DAYS + 1),
     "The certificate validity has expired"),
    (["localhost", "127.0.0.1"], NOW + datetime.timedelta(days=1), "The certificate validity starts in the future"),
], ids=["another name", "expired", "not yet valid"])
def test_a_certificate_of_the_ca_is_refused_for_another_name_or_outside_its_dates(tmp_path, names, now, says):
    port, gateway_port = cluster.free_ports(2)
    record = deployment.init(str(tmp_path / "broker"), ["broker.test"], port=port, bind="127.0.0.1",
                             gateway_port=gateway_port)
    folder = record["dir"]  # the deployment's CA signs the broker a certificate that does not fit
    with open(os.path.join(folder, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(ca_of(record), "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    key, cert = broker_pki.server_certificate(ca_key, ca_cert, names, now)
    with open(os.path.join(folder, "server.key"), "wb") as f:
        f.write(broker_pki.pem_key(key))
    with open(os.path.join(folder, "server.crt"), "wb") as f:
        f.write(broker_pki.pem_cert(cert))
    with MosquittoProcess(str(tmp_path), deployment=record) as m:
        with echo_device(tmp_path, m.url, os.urandom(16).hex(), ca_of(record)) as device:
            error = device.expect("error")["error"]
            assert device.wait() == 3
    assert error == ("cannot connect to the MQTT broker at %s: the broker's TLS certificate failed verification: "
                     "%s" % (m.url, says))


def test_the_gateway_listener_refuses_a_device_without_its_password(deployed, tmp_path):
    record, m, _ = deployed
    with echo_device(tmp_path, m.gateway_url, os.urandom(16).hex(), ca_of(record)) as device:
        error = device.expect("error")["error"]
        assert device.wait() == 3
    assert error == "cannot connect to the MQTT broker at %s: the broker refused the connection: not authorized" \
        % m.gateway_url


def test_plain_mqtt_to_the_tls_listener_fails_clearly(deployed, tmp_path):
    _, m, _ = deployed
    url = broker.url(m.host, m.port)
    with echo_device(tmp_path, url, os.urandom(16).hex()) as device:
        assert device.expect("error")["error"].startswith("cannot connect to the MQTT broker at %s: " % url)
        assert device.wait() == 3


# -- brokers that refuse or send garbage ------------------------------------------------------

CONNACK = b"\x20\x02\x00\x00"


class FakeBroker:
    """A TCP server that answers each connection with the next of ``scripts``: a list of
    (bytes to wait for, bytes to send) steps; the last script repeats. A step waiting for
    nothing sends at once; None as the bytes to send closes the connection."""

    def __init__(self, *scripts):
        self.scripts = list(scripts)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = []
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        n = 0
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            script = self.scripts[min(n, len(self.scripts) - 1)]
            n += 1
            threading.Thread(target=self._talk, args=(conn, script), daemon=True).start()

    def _talk(self, conn, script):
        try:
            data = b""
            for wait_for, send in script:
                while wait_for not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                data = data[data.index(wait_for) + len(wait_for):]
                if send is None:
                    conn.close()
                    return
                conn.sendall(send)
            while conn.recv(65536):  # then listen, answering nothing
                pass
        except OSError:
            pass

    @property
    def url(self):
        return broker.url("127.0.0.1", self.port)

    def close(self):
        self.server.close()
        for conn in self.conns:
            conn.close()


SUBSCRIBE_DEVICE = b"/to-device\x01"  # the end of the device's SUBSCRIBE (packet id 1 on a fresh connection)


@pytest.mark.parametrize("answer,says", [
    (b"\x20\x02\x00\x05", "the broker refused the connection: not authorized"),
    (b"\x20\x02\x00\x09", "the broker refused the connection: code 9"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "sent a malformed packet: its first packet is no CONNACK (first byte "
                                           "0x48)"),
    (b"\x20\x03\x00\x00\x00", "sent a malformed packet: CONNACK with flags 0x00 and 3 bytes"),
    (b"\x20\xff\xff\xff\xff\x7f", "sent a malformed packet: remaining length in more than four bytes"),
    (b"\x20\xff\xff\xff\x7f", "sent a malformed packet: a packet of 268435455 bytes, over the limit"),
    (None, "closed the connection"),
    (b"", "no CONNACK within 3000 ms"),  # silence
])
def test_a_broker_that_refuses_or_sends_garbage_at_connect_is_named(tmp_path, answer, says):
    fake = FakeBroker([(b"MQTT\x04", answer)] + ([(b"", None)] if answer else []))  # hangs up unless silent
    try:
        with echo_device(tmp_path, fake.url, os.urandom(16).hex()) as device:
            error = device.expect("error")["error"]
            assert device.wait() == 3
    finally:
        fake.close()
    assert error.startswith("cannot connect to the MQTT broker at %s: " % fake.url) and says in error, error


def test_a_tls_handshake_that_gets_no_answer_times_out_naming_it(deployed, tmp_path):
    record, _, _ = deployed
    fake = FakeBroker([(b"\x16\x03", b"")])  # takes the ClientHello, answers nothing
    url = broker.url("localhost", fake.port, tls=True)
    try:
        with echo_device(tmp_path, url, os.urandom(16).hex(), ca_of(record)) as device:
            error = device.expect("error")["error"]
            assert device.wait() == 3
    finally:
        fake.close()
    assert error.startswith("cannot connect to the MQTT broker at %s: " % url) and "ETIMEDOUT" in error, error


SUBACK = b"\x90\x03\x00\x01\x01"


@pytest.mark.parametrize("garbage,says", [
    (b"\xf0\x00", "packet type 15, which a broker does not send a client like this"),  # AUTH: MQTT 5 only
    (b"\x32\x09\x00\x03a/b\x00\x00hi", "PUBLISH at QoS 1 with packet id 0"),
    (b"\x34\x09\x00\x03a/b\x00\x07hi", "PUBLISH at QoS 2: this client subscribes at QoS 0 or 1"),
    (b"\x40\x02\x00\x09", "PUBACK for packet 9, which is not awaited"),
    (b"\x90\x03\x00\x01\x01", "SUBACK for packet 1, which is not awaited"),
    (CONNACK, "packet type 2, which a broker does not send"),  # a second CONNACK
    (b"\x30\xff\xff\x7f", "a packet of 2097151 bytes, over the limit of"),
])
def test_garbage_mid_session_drops_the_link_and_the_device_reconnects(tmp_path, garbage, says):
    fake = FakeBroker([(b"MQTT\x04", CONNACK), (SUBSCRIBE_DEVICE, SUBACK), (b"", garbage)],
                      [(b"MQTT\x04", CONNACK), (SUBSCRIBE_DEVICE, SUBACK)])
    try:
        with echo_device(tmp_path, fake.url, os.urandom(16).hex()) as device:
            assert device.expect("connected")["connects"] == 1
            again = device.expect("reconnected")
    finally:
        fake.close()
    assert again["connects"] == 2
    assert again["last_error"].startswith("the broker at 127.0.0.1:%d sent a malformed packet: " % fake.port)
    assert says in again["last_error"], again


def test_a_broker_that_stops_answering_is_noticed_by_the_keep_alive(tmp_path):
    fake = FakeBroker([(b"MQTT\x04", CONNACK), (SUBSCRIBE_DEVICE, SUBACK)])  # then silence: no PINGRESP
    try:
        with echo_device(tmp_path, fake.url, os.urandom(16).hex(), keepalive=2) as device:
            device.expect("connected")
            again = device.expect("reconnected")
    finally:
        fake.close()
    assert again["connects"] == 2 and again["last_error"] == "the broker at 127.0.0.1:%d sent no PINGRESP within " \
        "1000 ms" % fake.port


def test_a_broker_that_is_gone_ends_in_a_clear_error_after_give_up(tmp_path):
    fake = FakeBroker([(b"MQTT\x04", CONNACK), (SUBSCRIBE_DEVICE, SUBACK), (b"", None)],
                      [(b"MQTT\x04", None)])
    try:
        with echo_device(tmp_path, fake.url, os.urandom(16).hex(), give_up=300) as device:
            device.expect("connected")
            error = device.expect("error")["error"]
            assert device.wait() == 3
    finally:
        fake.close()
    assert error.startswith("lost the MQTT broker at %s " % fake.url) and "could not reconnect" in error, error


# -- a wallet through the real gateway -------------------------------------------------------

def test_a_micropython_wallet_registers_funds_and_pays_through_the_gateway(deployed, tmp_path):
    """Over the deployment broker: TLS, and the ACL that gives the device its own request
    and reply topics by its client id."""
    record, m, login = deployed
    with HostStack(str(tmp_path / "host"), broker_url=m.url, broker_ca=ca_of(record), gateway_url=m.gateway_url,
                   gateway_login=login) as host:
        for n, name in enumerate(("device", "payee"), 1):  # identities registered in person
            os.mkdir(tmp_path / name)
            key = os.urandom(32)
            (tmp_path / (name + ".key")).write_bytes(key)
            wallet = Wallet.create(Storage(str(tmp_path / name)), key, host.ra_pubkeys)
            document = {"name": "Owner %d" % n, "licence": "LIC-%06d" % n, "vehicle_id": "1HGCM82633A%06d" % n}
            wallet.set_identity(host.authority.register_identity(document, wallet.device_pubkey()))
        payee = wallet  # a CPython wallet, its keys registered over MQTT too
        mqtt = host.devices.device()
        mqtt.connect()
        try:
            assert refill(payee, GatewayClient(mqtt), count=2, threshold=1).added == 2
        finally:
            mqtt.close()
        index, account = payee.new_account()

        with DeviceProcess(tmp_path, "gateway_device.py", tmp_path / "device", tmp_path / "device.key", m.url,
                           ca_of(record), account.encode().hex(), 120, heap=1 << 20) as device:
            refilled = device.expect("refill", timeout=120)
            funded = device.expect("funded", timeout=120)
            paid = device.expect("paid", timeout=120)
            assert device.wait() == 0, device.output()
        assert (refilled["status"], refilled["added"], refilled["available"]) == ("refilled", 8, 8), refilled
        assert funded == {"event": "funded", "ok": True, "balance": 300}
        assert (paid["ok"], paid["state"], paid["balance"]) == (True, "confirmed", 180), paid

        # the ledger has it, the payee can book it, and the wallet on disk agrees with the device
        txhash = bytes.fromhex(paid["txhash"])
        assert payee.receive(txhash, 0, index, 120, txhash)
        device_wallet = Wallet.open(Storage(str(tmp_path / "device")), (tmp_path / "device.key").read_bytes())
        assert device_wallet.status()["balance"] == 180 and device_wallet.check()["ok"]
        mqtt = host.devices.device()
        mqtt.connect()
        try:
            tx = GatewayClient(mqtt).query(L.Query(L.QUERY_TX, txhash, 0).encode())
        finally:
            mqtt.close()
        assert tx.ok and tx.data[1] == S.TAG_TRANSACTION
