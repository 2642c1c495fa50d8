"""The deployment broker against the real Mosquitto: what ``plugpay broker init`` writes,
TLS that every client verifies, and the ACL that keeps each device in its lane.

Real parts: Mosquitto running a deployment directory (``host.broker.MosquittoProcess``),
a ledger of four replica processes with the gateway logged in on the gateway listener,
devices on ``firmware.mqtt`` (paho) and, for what a device must not be able to do, raw
paho clients. A client that "receives nothing" is checked after a message it may receive
came through behind the traffic it must not see (Mosquitto handles publications in order),
never by elapsed time.
"""
import asyncio
import base64
import hashlib
import os
import queue
import socket
import ssl
import subprocess
import sys

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugpay.firmware import mqtt as device_mqtt
from plugpay.firmware import mqtt_tls
from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.mqtt import MqttError
from plugpay.host import broker, broker_pki, cluster, deployment, ra
from plugpay.host.broker import Endpoint, MosquittoProcess
from plugpay.host.mqtt import AsyncMqttClient
from plugpay.host.mqtt import MqttError as HostMqttError
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing, topics

from mqtt_helpers import GatewayRunner

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
FAST = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
        "status_interval": 0.2, "fetch_timeout": 0.3}

def _init(base, hosts=("broker.test",)):
    port, gateway_port = cluster.free_ports(2)
    return deployment.init(str(base / "broker"), list(hosts), port=port, bind="127.0.0.1", gateway_port=gateway_port)


def _ca(record):
    return os.path.join(record["dir"], "ca.crt")


def _password(record):
    with open(os.path.join(record["dir"], "gateway.password")) as f:
        return f.read().strip()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    base = tmp_path_factory.mktemp("deployment")
    record = _init(base)
    with MosquittoProcess(str(base), deployment=record) as m:
        yield record, m


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mosquitto):
    """Four replicas of the payment ledger and the gateway, logged in on the gateway listener."""
    record, m = mosquitto
    base = tmp_path_factory.mktemp("ledger")
    unlock = ra.Unlock(key_file=str(base / "ra-key.bin"))
    ra.create_key_file(unlock.key_file)
    vault = ra.init(base / "ra", unlock)
    options = {"ra_pubkeys": {str(e): k.hex() for e, k in vault.epoch_keys.items()}}
    path = cluster.generate(str(base / "cluster"), app="plugpay.host.ledger:Ledger", app_options=options, pbft=FAST)
    at = Endpoint(m.gateway_url, _ca(record), ("gateway", _password(record)))
    with cluster.LocalCluster(path, stop_grace=3.0) as lc:
        lc.start_all()
        lc.wait_listening()
        with GatewayRunner(lc, at.host, at.port, embedded=False, mqtt_tls=at.tls, mqtt_login=at.login) as runner:
            yield runner


def device(mosquitto, username=None):
    record, m = mosquitto
    mqtt = Endpoint(m.url, _ca(record)).device(username=username)
    mqtt.connect()
    return mqtt


class Raw:
    """A paho client over TLS with its own network thread, for what ``Mqtt`` never sends:
    no user name, wildcard client ids, subscriptions to other clients' topics."""

    def __init__(self, mosquitto, client_id, username=None):
        record, m = mosquitto
        self.client_id = client_id
        self.got = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        self.client.tls_set_context(broker.tls_context(_ca(record)))
        if username is not None:
            self.client.username_pw_set(username)
        self.acks = queue.Queue()
        self.client.on_connect = lambda client, userdata, flags, reason, props: self.acks.put(reason)
        self.client.on_subscribe = lambda client, userdata, mid, reasons, props: self.acks.put(reasons)
        self.client.on_message = lambda client, userdata, message: self.got.put((message.topic, message.payload))
        self.client.connect(m.host, m.port)
        self.client.loop_start()
        reason = self.acks.get(timeout=5)
        assert not reason.is_failure, reason

    def subscribe(self, *filters):
        self.client.subscribe([(f, 1) for f in filters])
        return [str(r) for r in self.acks.get(timeout=5)]

    def publish(self, topic, payload):
        self.client.publish(topic, payload, 1).wait_for_publish(5)

    def received(self):
        out = []
        while not self.got.empty():
            out.append(self.got.get())
        return out

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _query():
    return L.Query(L.QUERY_TX, os.urandom(32), 0).encode()


# -- what init writes ----------------------------------------------------------------------

def test_init_writes_every_file_once_and_explains_it(tmp_path):
    port, gateway_port = cluster.free_ports(2)
    args = ["broker", "init", "--dir", str(tmp_path / "d"), "--host", "broker.test", "--host", "10.0.0.7",
            "--port", str(port), "--gateway-port", str(gateway_port)]
    out = subprocess.run(PLUGPAY + args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name, mode, what in deployment.FILES:
        assert os.stat(tmp_path / "d" / name).st_mode & 0o777 == mode, name
        assert "%s %04o  %s" % (name.ljust(17), mode, what) in out.stdout
    named = [line for line in out.stdout.splitlines() if line.startswith("server certificate for ")][0]
    assert named.startswith("server certificate for broker.test, 10.0.0.7, ")
    assert all(name in named for name in ("localhost", "127.0.0.1", "::1"))
    assert "mqtts://broker.test:%d" % port in out.stdout and "mqtts://127.0.0.1:%d" % gateway_port in out.stdout
    cert = x509.load_pem_x509_certificate((tmp_path / "d" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"broker.test", "localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.7", "127.0.0.1", "::1"}
    before = {name: (tmp_path / "d" / name).read_bytes() for name, _, _ in deployment.FILES}
    again = subprocess.run(PLUGPAY + args, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already holds a deployment" in again.stderr
    assert again.stderr.count("\n") == 1
    assert before == {name: (tmp_path / "d" / name).read_bytes() for name, _, _ in deployment.FILES}
    conf = (tmp_path / "d" / "mosquitto.conf").read_text()
    for line in ("per_listener_settings true", "set_tcp_nodelay true", "listener %d\n" % port,
                 "listener %d 127.0.0.1" % gateway_port, "allow_anonymous true", "allow_anonymous false"):
        assert line in conf


@pytest.mark.parametrize("args, says", [
    (["--host", "bad host"], "host 'bad host': expected a DNS name"),
    (["--host", "b.test", "--port", "9000", "--gateway-port", "9000"], "both 9000"),
    (["--host", "b.test", "--port", "0"], "--port 0: expected a port"),
])
def test_init_refuses_bad_options_and_writes_nothing(tmp_path, args, says):
    out = subprocess.run(PLUGPAY + ["broker", "init", "--dir", str(tmp_path / "d")] + args, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and says in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_the_device_acl_names_the_ledger_topics_of_protocol_topics():
    rules = dict((pattern, access) for access, pattern in deployment.DEVICE_ACL)
    for kind in (topics.LEDGER_SUBMIT, topics.LEDGER_QUERY):
        assert rules[topics.PREFIX + kind + "/%c"] == "write"
    assert rules[topics.PREFIX + topics.LEDGER_RESULT + "/%c"] == "read"
    assert not any("#" in p or "+" in p for p in rules if not p.startswith("plugpay/link/%u/"))


def test_the_password_file_is_what_mosquitto_passwd_writes(tmp_path):
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "gateway", "s3cret"], check=True, timeout=30)
    line = path.read_text()
    salt = base64.b64decode(line.split("$")[3])
    assert deployment.password_line("gateway", "s3cret", salt) == line


def test_broker_run_needs_a_deployment(tmp_path):
    out = subprocess.run(PLUGPAY + ["broker", "run", "--dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "no deployment in %s" % tmp_path in out.stderr


# -- TLS -----------------------------------------------------------------------------------

def test_a_device_verifies_the_broker_and_keeps_tcp_nodelay(mosquitto):
    record, m = mosquitto
    for host in ("127.0.0.1", "localhost"):  # an IP and a DNS name of the certificate
        mqtt = Endpoint(broker.url(host, m.port, tls=True), _ca(record)).device()
        mqtt.connect()
        try:
            assert mqtt.url.startswith("mqtts://") and mqtt.socket().version() in ("TLSv1.2", "TLSv1.3")
            assert mqtt.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            mqtt.close()
    context = Endpoint(m.url, _ca(record)).tls
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_a_broker_of_another_ca_is_refused_naming_it(mosquitto, tmp_path):
    record, m = mosquitto
    stranger = _init(tmp_path)
    mqtt = Endpoint(m.url, _ca(stranger)).device()
    with pytest.raises(MqttError) as e:
        mqtt.connect()
    assert str(e.value).startswith("cannot connect to the MQTT broker at %s: the broker's TLS certificate failed "
                                   "verification: " % m.url)
    assert "\n" not in str(e.value)


def test_a_certificate_for_another_name_is_refused(tmp_path):
    record = _init(tmp_path)
    folder = record["dir"]
    with open(os.path.join(folder, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(_ca(record), "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    key, cert = broker_pki.server_certificate(ca_key, ca_cert, ["elsewhere.test"])
    with open(os.path.join(folder, "server.key"), "wb") as f:
        f.write(broker_pki.pem_key(key))
    with open(os.path.join(folder, "server.crt"), "wb") as f:
        f.write(broker_pki.pem_cert(cert))
    with MosquittoProcess(str(tmp_path), deployment=record) as m:
        with pytest.raises(MqttError, match="certificate failed verification: IP address mismatch"):
            Endpoint(m.url, _ca(record)).device().connect()


def test_ca_options_are_checked_before_anything_connects(tmp_path, mosquitto):
    record, m = mosquitto
    common = ["session", "--role", "vehicle", "--region", "AT-5020", "--position", "47.8,13.0",
              "--wallet", str(tmp_path), "--device-key", str(tmp_path / "k")]
    for extra, says in ((["--broker", m.url, "--ca", str(tmp_path / "none.pem")], "CA file %s: No such file"
                         % (tmp_path / "none.pem")),
                        (["--broker", "mqtt://127.0.0.1:1", "--ca", _ca(record)], "is not TLS (use mqtts://)"),
                        (["--broker", m.url, "--ca", os.path.join(record["dir"], "acl-devices")], "no PEM")):
        out = subprocess.run(PLUGPAY + common + extra, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and says in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_the_gateway_needs_its_password(mosquitto):
    record, m = mosquitto
    at = Endpoint(m.gateway_url, _ca(record))

    async def connect(login):
        client = AsyncMqttClient(at.host, at.port, lambda t, p: None, [("plugpay/ledger/query/+", 0)],
                                 tls=at.tls, login=login)
        await client.connect()
        await client.close()

    for login in (None, ("gateway", "wrong"), ("device", _password(record))):
        with pytest.raises(HostMqttError, match="refused the connection: Not authorized"):
            asyncio.run(connect(login))
    asyncio.run(connect(("gateway", _password(record))))


def test_the_device_side_tls_context_verifies_on_cpython_too(mosquitto, tmp_path):
    """``mqtt_tls.context`` is what a MicroPython device builds (tests/test_device_mqtt_unix.py
    runs it there); on CPython it gives paho the same verifying context."""
    record, m = mosquitto
    tls = mqtt_tls.context(_ca(record))
    assert tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
    mqtt = device_mqtt.Mqtt("localhost", m.port, tls=tls)
    mqtt.connect()
    mqtt.close()
    stranger = mqtt_tls.context(_ca(_init(tmp_path)))
    with pytest.raises(MqttError, match="failed verification"):
        device_mqtt.Mqtt("localhost", m.port, tls=stranger).connect()


def test_a_context_that_would_not_verify_is_refused():
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    for context in (unverified, ssl._create_unverified_context()):
        with pytest.raises(ValueError, match="the TLS context does not verify the broker"):
            device_mqtt.Mqtt("broker.test", 8883, tls=context)


def test_ca_files_are_read_as_pem_and_bad_ones_named(mosquitto, tmp_path):
    record, _ = mosquitto
    with open(_ca(record)) as f:
        pem = f.read()
    (der,) = mqtt_tls.certificates(pem)
    assert der == ssl.PEM_cert_to_DER_cert(pem)
    assert mqtt_tls.certificates("junk\n" + pem + pem) == [der, der]
    for name, text, says in (("none.pem", "no certificate", "no PEM certificate in it"),
                             ("cut.pem", pem[:-30], "a certificate without its END line"),
                             ("bad.pem", "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
                              "a certificate (that is not base64|this platform cannot load)")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match="CA file %s: (%s)" % (tmp_path / name, says)):
            mqtt_tls.context(str(tmp_path / name))
    with pytest.raises(ValueError, match="CA file %s: .*No such file" % (tmp_path / "missing.pem")):
        mqtt_tls.context(str(tmp_path / "missing.pem"))


# -- the ACL -------------------------------------------------------------------------------

def test_the_gateway_serves_devices_over_tls_and_its_socket_has_tcp_nodelay(gateway, mosquitto):
    mqtt = device(mosquitto)
    try:
        client = GatewayClient(mqtt)
        assert client.cid == mqtt.client_id  # the %c of the ACL
        query = _query()
        result = client.query(query)
        assert result.request_digest == hashlib.sha256(query).digest() and not result.ok
        assert result.reason == L.NOT_FOUND
    finally:
        mqtt.close()
    sock = gateway.thread.call(lambda: gateway.gateway.mqtt.socket())
    assert sock.version() and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_link_session_is_open_only_to_connections_named_by_its_id(mosquitto):
    session_id = os.urandom(16)
    to_responder, to_initiator = topics.link_topics(session_id)
    initiator, responder = device(mosquitto, session_id.hex()), device(mosquitto, session_id.hex())
    outsider = device(mosquitto)  # a random user name
    try:
        initiator.subscribe(to_initiator)
        responder.subscribe(to_responder)
        outsider.subscribe(to_responder)
        outsider.subscribe(to_initiator)
        assert outsider.publish(to_responder, b"forged")
        assert initiator.publish(to_responder, b"hello")
        assert _wait(responder) == [(to_responder, b"hello")]  # behind the forgery: it was dropped
        assert responder.publish(to_initiator, b"hi")
        assert _wait(initiator) == [(to_initiator, b"hi")]
        assert outsider.poll(200) == []
    finally:
        for mqtt in (initiator, responder, outsider):
            mqtt.close()


def _wait(mqtt, until=5000):
    got = []
    while not got and until > 0:
        got = mqtt.poll(100)
        until -= 100
    return got


def test_no_device_sees_the_traffic_of_others(gateway, mosquitto):
    """Spies with every wildcard, without a user name, with wildcard ids and names, while
    two devices run a link session and ask the gateway; the spies read nothing of it."""
    spies = {
        "hash": (Raw(mosquitto, "spy-hash"), ["#"]),
        "plugpay": (Raw(mosquitto, "spy-plugpay", "a" * 32), ["plugpay/#", "$SYS/#"]),
        "links": (Raw(mosquitto, "spy-links"), ["plugpay/link/+/+", "plugpay/link/+/to-responder"]),
        "replies": (Raw(mosquitto, "spy-replies", "b" * 32), ["plugpay/ledger/result/+", "plugpay/+/+/+"]),
    }
    wildcards = [Raw(mosquitto, cid, name) for cid, name in (("+", None), ("#", None), ("w+", None),
                                                           ("ok-1", "+"), ("ok-2", "#"), ("ok-3", "x/#"))]
    for spy, filters in spies.values():
        assert spy.subscribe(*filters) == ["Granted QoS 1"] * len(filters)  # Mosquitto 2.0 grants, then filters
        spy.subscribe(topics.topic(topics.LEDGER_RESULT, spy.client_id))
    for spy in wildcards:
        spy.subscribe("#", "plugpay/ledger/result/+", "plugpay/link/+/+")
    session_id = os.urandom(16)
    to_responder, to_initiator = topics.link_topics(session_id)
    a, b = device(mosquitto, session_id.hex()), device(mosquitto, session_id.hex())
    try:
        a.subscribe(to_initiator)
        b.subscribe(to_responder)
        for mqtt in (a, b):
            assert GatewayClient(mqtt).query(_query()).reason == L.NOT_FOUND
        assert a.publish(to_responder, b"link message") and b.publish(to_initiator, b"link message")
        assert _wait(b) == [(to_responder, b"link message")] and _wait(a) == [(to_initiator, b"link message")]
        for name, (spy, _) in spies.items():  # each spy's own query and answer come behind all of it
            query = _query()
            spy.publish(topics.topic(topics.LEDGER_QUERY, spy.client_id), query)
            topic, payload = spy.got.get(timeout=10)
            assert topic == topics.topic(topics.LEDGER_RESULT, spy.client_id)
            assert L.Result.decode(payload).request_digest == hashlib.sha256(query).digest()
            assert spy.received() == [], name
        for spy in wildcards:  # Mosquitto refuses them every pattern: not even their own topics
            assert spy.received() == [], spy.client_id
    finally:
        for mqtt in (a, b):
            mqtt.close()
        for spy in [s for s, _ in spies.values()] + wildcards:
            spy.close()


def test_a_device_cannot_read_or_write_the_topics_of_another_client_id(gateway, mosquitto):
    victim = device(mosquitto)
    thief = Raw(mosquitto, "thief-1")
    try:
        client = GatewayClient(victim)
        thief.subscribe(topics.topic(topics.LEDGER_RESULT, victim.client_id),
                        "plugpay/host/sealed-reply/" + victim.client_id, topics.topic(topics.LEDGER_RESULT, "thief-1"))
        received = gateway.stats()["received"]
        forged = _query()
        thief.publish(topics.topic(topics.LEDGER_QUERY, victim.client_id), forged)  # would be answered to the victim
        thief.publish(topics.topic(topics.LEDGER_SUBMIT, victim.client_id), b"\x80")
        thief.publish("plugpay/host/sealed/" + victim.client_id, b"\x80")
        thief.publish(topics.topic(topics.LEDGER_RESULT, victim.client_id), L.Result(
            hashlib.sha256(forged).digest(), True, L.OK, "", None).encode())  # a forged answer
        own = _query()
        thief.publish(topics.topic(topics.LEDGER_QUERY, "thief-1"), own)
        assert thief.got.get(timeout=10)[0] == topics.topic(topics.LEDGER_RESULT, "thief-1")
        assert gateway.stats()["received"] - received == 1  # the thief's own query, nothing on the victim's topics
        assert client.query(_query()).reason == L.NOT_FOUND  # the victim's own answer comes, and nothing else:
        assert client.requests.dropped == {"other_topic": 0, "malformed": 0, "not_awaited": 0}
        assert thief.received() == []
    finally:
        victim.close()
        thief.close()
