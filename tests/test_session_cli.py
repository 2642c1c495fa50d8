"""``plugpay session`` as users run it: an RA from ``plugpay ra init``, two wallets from
``plugpay wallet init`` with identities the RA registered, ``plugpay ledger up`` as a
process, and a charger and a vehicle as two more processes that meet in the market on the
ledger and settle a session over the embedded broker."""
import json
import signal
import subprocess
import sys

import pytest

from plugpay.host import cluster

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
REGION = "AT-5020"
FAST = ["--energy-wh", "2000", "-n", "10", "--scale", "20000", "--timeout", "40"]


def plugpay(*args):
    out = subprocess.run(PLUGPAY + list(args), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _value(out, label):
    return [line for line in out.splitlines() if line.startswith(label)][0].split()[-1]


def _wallet(base, name, ra_dir, ra_key, ra_pubkey, vin):
    """A provisioned device: wallet, device key, identity registered with the RA."""
    folder, key = str(base / ("wallet-" + name)), str(base / (name + ".key"))
    out = plugpay("wallet", "init", "--dir", folder, "--device-key", key, "--ra-pubkey", "0:" + ra_pubkey)
    identity = plugpay("ra", "register-identity", "--dir", ra_dir, "--key-file", ra_key, "--name", "Test " + name,
                       "--licence", "LIC-" + name, "--vehicle-id", vin,
                       "--device-pubkey", _value(out, "device public key:")).strip()
    plugpay("wallet", "identity", "--dir", folder, "--device-key", key, "--identity", identity)
    return ["--wallet", folder, "--device-key", key]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("session-cli")


@pytest.fixture(scope="module")
def host(base):
    """``plugpay ledger up`` with the RA served over its embedded broker, and two wallets."""
    ra_dir, ra_key = str(base / "ra"), str(base / "ra.key")
    ra_pubkey = _value(plugpay("ra", "init", "--dir", ra_dir, "--key-file", ra_key), "epoch 0 public key:")
    wallets = {name: _wallet(base, name, ra_dir, ra_key, ra_pubkey, vin)
               for name, vin in (("vehicle", "WVWZZZ1JZXW000001"), ("charger", "CHARGER0000000001"))}
    port = cluster.free_ports(1)[0]
    up = subprocess.Popen(PLUGPAY + ["ledger", "up", "--dir", str(base / "ledger"), "--ra-dir", ra_dir,
                                     "--key-file", ra_key, "--mqtt-port", str(port), "--duration", "120"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("ra:"):
            line = up.stdout.readline()
            assert line, "ledger up exited early: %s" % "".join(lines)
            lines.append(line)
        yield ["--broker", "mqtt://127.0.0.1:%d" % port, "--region", REGION], wallets
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=20)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def session(*args):
    return subprocess.Popen(PLUGPAY + ["session"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_charger_and_a_vehicle_meet_in_the_market_and_settle_a_channel(host, base):
    common, wallets = host
    charger = session("--role", "charger", "--position", "47.80,13.04", "--json", *(common + wallets["charger"] + FAST))
    vehicle = session("--role", "vehicle", "--position", "47.81,13.05", "--fund", "5000", "--json",
                      *(common + wallets["vehicle"] + FAST))
    v_out, v_err = vehicle.communicate(timeout=60)
    c_out, c_err = charger.communicate(timeout=60)
    assert (vehicle.returncode, charger.returncode) == (0, 0), v_err + c_err
    v, c = json.loads(v_out), json.loads(c_out)
    assert (v["producer"], v["initiator"], c["producer"], c["initiator"]) == (False, True, True, False)
    for key in ("session_id", "unit_price", "installments", "energy_wh", "budget", "mode"):
        assert v[key] == c[key], key
    assert v["stop_code"] == c["stop_code"] == "OK" and v["finished"] and c["finished"]
    assert v["installments_paid"] == c["installments_paid"] == 10
    assert c["payout"] == c["budget"] == 2000 * c["unit_price"] // 1000 and v["payout"] == 0
    assert len(set(v["onchain"]) | set(c["onchain"])) == 2  # channel open and cooperative close
    for ident in set(v["onchain"]) | set(c["onchain"]):  # one id per thing: the record's is the ledger's
        shown = json.loads(plugpay("ledger", "tx", ident, "--config", str(base / "ledger" / "cluster.json"), "--json"))
        assert shown["id"] == ident and shown["op"] in ("channel_open", "channel_close")
    assert 0 < v["max_exposure"] <= v["exposure_bound"] == -(-v["budget"] // 10)  # the largest installment
    assert c["max_exposure"] <= 0 and c["measured_wh"] == 2000
    # The vehicle's board stands alone in its process: it takes what it paid for, to the tolerance.
    tolerance_wh = 2  # 1 % of an installment's energy (session_cli.charge_parameters)
    assert 2000 - tolerance_wh <= v["measured_wh"] <= 2000 + tolerance_wh
    assert "market: my bid of %d per kWh was chosen" % c["unit_price"] in c_err
    assert "47.81" not in v_out + v_err and "47810000" not in v_out + v_err  # the position stays private


def test_v2g_the_vehicle_sells_and_the_charger_meters_what_it_buys(host):
    common, wallets = host
    v2g = ["--scenario", "v2g"]
    charger = session("--role", "charger", "--position", "47.80,13.04", "--fund", "5000", "--json",
                      *(common + wallets["charger"] + FAST + v2g))
    vehicle = session("--role", "vehicle", "--position", "47.81,13.05", "--json", *(common + wallets["vehicle"] + FAST + v2g))
    v_out, v_err = vehicle.communicate(timeout=60)
    c_out, c_err = charger.communicate(timeout=60)
    assert (vehicle.returncode, charger.returncode) == (0, 0), v_err + c_err
    v, c = json.loads(v_out), json.loads(c_out)
    assert (v["producer"], v["initiator"], c["producer"], c["initiator"]) == (True, True, False, False)
    assert v["stop_code"] == c["stop_code"] == "OK" and v["finished"] and c["finished"]
    assert v["payout"] == c["budget"] and c["payout"] == 0
    assert c["measured_wh"] == 2000  # the charger's meter
    # Each process simulates its own end of the cable: the vehicle's stops at what was paid for
    # plus the agreed tolerance by its own measurement, or when the charger's reading comes.
    tolerance_wh = 2  # 1 % of an installment's energy (session_cli.charge_parameters)
    assert 2000 <= v["measured_wh"] <= 2000 + tolerance_wh
    assert v["max_exposure"] <= v["exposure_bound"] == -(-tolerance_wh * v["unit_price"] // 1000)
    # b/N, and whole money units: at 302 per kWh, 400 Wh are worth 120 while 3 of 10 installments of 604 are 181.
    assert 0 < c["max_exposure"] <= c["exposure_bound"] + 2


def test_a_consumer_without_bids_gives_up_after_its_bid_window(host):
    common, wallets = host
    vehicle = session("--role", "vehicle", "--position", "47.81,13.05", "--bid-window", "1", "--fund", "100",
                      *(common + wallets["vehicle"] + ["--region", "AT-9999"]))
    out, err = vehicle.communicate(timeout=60)
    assert vehicle.returncode == 1
    assert "no bids on the request in AT-9999 within the 1 s bid window" in err
    assert "market: request withdrawn" in out  # no producer that comes later waits for it


def test_an_unreachable_broker_is_a_clear_error(host):
    _, wallets = host
    port = cluster.free_ports(1)[0]  # nothing listens there
    out = subprocess.run(PLUGPAY + ["session", "--role", "vehicle", "--broker", "mqtt://127.0.0.1:%d" % port,
                                    "--region", REGION, "--position", "47.81,13.05"] + wallets["vehicle"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.startswith("plugpay session: error: cannot connect to the MQTT broker at mqtt://127.0.0.1:%d:"
                                 % port) and out.stderr.count("\n") == 1
