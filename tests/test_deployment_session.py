"""A charging session through the deployment broker, every part the command a user runs:
``plugpay broker init`` and ``broker run`` (Mosquitto with TLS and ACLs), ``plugpay ledger
up`` with the gateway logged in on the gateway listener, boards from ``plugpay provision``,
and a charger and a vehicle as two ``plugpay session`` processes on the TLS device
listener, each session on a connection named by its session id. The vehicle is funded by
the faucet over the sealed host topics, the only way the device ACL leaves open. A device
subscribed to ``#`` meanwhile sees none of it.
"""
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time

import paho.mqtt.client as paho

from plugpay.host import broker, cluster
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import topics

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
REGION = "AT-5020"
FAST = ["--energy-wh", "2000", "-n", "10", "--scale", "20000", "--timeout", "40"]


def plugpay(*args):
    out = subprocess.run(PLUGPAY + list(args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _listening(port, proc, what):
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "%s did not start" % what
            time.sleep(0.05)


class Client:
    """A paho client over TLS with its own network thread: the operator or a spy."""

    def __init__(self, port, ca, client_id, login=None):
        self.got = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        self.client.tls_set_context(broker.tls_context(ca))
        if login:
            self.client.username_pw_set(*login)
        acks = self.acks = queue.Queue()
        self.client.on_connect = lambda client, userdata, flags, reason, props: acks.put(reason)
        self.client.on_subscribe = lambda client, userdata, mid, reasons, props: acks.put(reasons)
        self.client.on_message = lambda client, userdata, message: self.got.put((message.topic, message.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert not acks.get(timeout=5).is_failure

    def subscribe(self, *filters):
        self.client.subscribe([(f, 1) for f in filters])
        self.acks.get(timeout=5)

    def ask(self, kind, cid, payload):
        self.client.publish(topics.topic(kind, cid), payload, 1).wait_for_publish(5)
        return self.got.get(timeout=20)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_a_session_through_the_deployment_broker(tmp_path):
    port, gateway_port = cluster.free_ports(2)
    folder = str(tmp_path / "broker")
    plugpay("broker", "init", "--dir", folder, "--host", "localhost", "--port", str(port), "--bind", "127.0.0.1",
            "--gateway-port", str(gateway_port))
    ca, password_file = os.path.join(folder, "ca.crt"), os.path.join(folder, "gateway.password")
    mosquitto = subprocess.Popen(PLUGPAY + ["broker", "run", "--dir", folder], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    up = spy = None
    try:
        _listening(port, mosquitto, "plugpay broker run")
        _listening(gateway_port, mosquitto, "plugpay broker run")
        ra_dir, ra_key = str(tmp_path / "ra"), str(tmp_path / "ra.key")
        plugpay("ra", "init", "--dir", ra_dir, "--key-file", ra_key)
        boards = {}
        for role, vin in (("vehicle", ["--vehicle-id", "WVWZZZ1JZXW000001"]), ("charger", [])):  # a charger has none
            boards[role] = str(tmp_path / role)
            plugpay("provision", "--role", role, "--out", boards[role], "--keys", "32", "--ra-dir", ra_dir,
                    "--key-file", ra_key, "--name", "Test " + role, "--licence", "LIC-" + role, *vin)
        up = subprocess.Popen(PLUGPAY + ["ledger", "up", "--dir", str(tmp_path / "ledger"), "--ra-dir", ra_dir,
                                         "--key-file", ra_key, "--broker", "mqtts://127.0.0.1:%d" % gateway_port,
                                         "--ca", ca, "--gateway-password-file", password_file, "--duration", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = []
        while not lines or not lines[-1].startswith("ra:"):
            line = up.stdout.readline()
            assert line, "ledger up exited early: %s" % "".join(lines)
            lines.append(line)
        assert "mqtt:    mqtts://127.0.0.1:%d (external broker, as user gateway)\n" % gateway_port in lines
        spy = Client(port, ca, "spy")
        spy.subscribe("#")

        common = ["--broker", "mqtts://localhost:%d" % port, "--region", REGION, "--json"] + FAST

        def session(role, position, env=None, extra=()):
            wallet = ["--wallet", os.path.join(boards[role], "wallet"),
                      "--device-key", os.path.join(boards[role], "device.key")]
            return subprocess.Popen(PLUGPAY + ["session", "--role", role, "--position", position] + common + wallet
                                    + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

        charger = session("charger", "47.80,13.04", extra=["--ca", ca])
        vehicle = session("vehicle", "47.81,13.05", env=dict(os.environ, PLUGPAY_BROKER_CA=ca), extra=["--fund", "5000"])
        v_out, v_err = vehicle.communicate(timeout=90)
        c_out, c_err = charger.communicate(timeout=90)
        assert (vehicle.returncode, charger.returncode) == (0, 0), v_err + c_err
        v, c = json.loads(v_out), json.loads(c_out)
        assert v["session_id"] == c["session_id"]
        assert v["stop_code"] == c["stop_code"] == "OK" and v["finished"] and c["finished"]
        assert v["installments_paid"] == c["installments_paid"] == 10
        assert c["payout"] == c["budget"] and len(set(v["onchain"]) | set(c["onchain"])) == 2

        query = L.Query(L.QUERY_TX, os.urandom(32), 0).encode()  # the spy's own answer comes behind all of it
        topic, _ = spy.ask(topics.LEDGER_QUERY, "spy", query)
        assert topic == topics.topic(topics.LEDGER_RESULT, "spy") and spy.got.empty()
    finally:
        if spy is not None:
            spy.close()
        if up is not None:
            up.send_signal(signal.SIGTERM)
            up.communicate(timeout=30)
        mosquitto.send_signal(signal.SIGINT)  # Ctrl-C: `broker run` became Mosquitto
        out, _ = mosquitto.communicate(timeout=10)
    assert mosquitto.returncode == 0, out
    assert "devices: mqtts://localhost:%d" % port in out and "running " in out
