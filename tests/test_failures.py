"""Failures as a user meets them, through ``python -m plugpay.tools.cli`` in a process of
its own: one line on stderr naming the thing (the option, the file and field, the broker
URL, the port), the exit code of its kind (``tools/errors.py``), and nothing left running
or half-written. Ports are held by real listening sockets, replicas are real processes."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata

import board_configs
import pytest

from plugpay.host import cluster
from plugpay.tools import cli, errors

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]


def plugpay(*args, timeout=120):
    return subprocess.run(PLUGPAY + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def processes_naming(text):
    """Pids of the processes whose command line holds ``text`` (a run's own directory)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:  # gone meanwhile
            pass
    return found


@pytest.fixture
def held_port():
    """A port a real listening socket holds for the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_version_and_the_exit_codes_in_help():
    out = plugpay("--version")
    assert (out.returncode, out.stdout) == (0, "plugpay %s\n" % metadata.version("plugpay"))
    out = plugpay("--help")
    assert out.returncode == 0
    for code, meaning in errors.KINDS:
        assert "  %-4d %s\n" % (code, meaning) in out.stdout


def test_every_help_renders_whole():
    """Every (sub)command's --help formats, and says what the command does in whole
    sentences (``provision --help`` stopped mid-sentence at a list it left out)."""
    def commands(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, path + [name])

    seen = 0
    for path, parser in commands(cli.parser(), []):
        text = parser.format_help()
        assert parser.description and parser.description.rstrip()[-1] in ".)", (path, parser.description)
        assert text.startswith("usage: plugpay"), path
        seen += 1
    assert seen > 30
    out = plugpay("provision", "--help")
    assert out.returncode == 0 and "so a run that stopped is run again. options:" in " ".join(out.stdout.split())


@pytest.mark.parametrize("argv, line", [
    (["demo", "-n", "0"], "plugpay demo: error: argument -n/--installments: expected an integer 1..100000, got '0'"),
    (["demo", "--price", "-5"], "plugpay demo: error: argument --price: expected an integer 1..1000000000000, got "
     "'-5'"),
    (["hil", "--vehicle", "sim", "--charger", "sim", "--timeout", "0"], "plugpay hil: error: argument --timeout: "
     "expected a number above 0, got '0'"),
    (["session", "--role", "vehicle", "--wallet", "w", "--device-key", "k", "--region", "AT", "--position", "1,1",
      "--sessions", "0"], "plugpay session: error: argument --sessions: expected an integer of at least 1, got '0'"),
    (["ledger", "up", "-n", "5"], "plugpay ledger up: error: argument -n: expected 3f+1 replicas (4, 7, 10, ...), "
     "got '5'"),
    (["ledger", "up", "--mqtt-port", "70000"], "plugpay ledger up: error: argument --mqtt-port: expected an integer "
     "1..65535, got '70000'"),
    (["bench", "ledger", "--seconds", "nan"], "plugpay bench: error: argument --seconds: expected a number above 0, "
     "got 'nan'"),
    (["provision", "--role", "car", "--out", "x"], "plugpay provision: error: argument --role: invalid choice: 'car' "
     "(choose from 'vehicle', 'charger')"),
])
def test_out_of_range_options_are_refused_where_they_are_parsed(argv, line):
    out = plugpay(*argv)
    prog = line.split(": error: ")[0]
    assert (out.returncode, out.stdout) == (errors.USAGE, "")
    assert out.stderr == "%s (see %s --help)\n" % (line, prog)


def test_demo_and_hil_name_the_broker_they_cannot_reach(tmp_path):
    with socket.socket() as bound:  # bound, never listening: connections are refused, and no one else takes it
        bound.bind(("127.0.0.1", 0))
        url = "mqtt://127.0.0.1:%d" % bound.getsockname()[1]
        for argv in (["demo", "-n", "2"], ["hil", "--vehicle", "sim", "--charger", "sim", "-n", "2"]):
            folder = tmp_path / argv[0]
            out = plugpay(*argv, "--broker", url, "--dir", folder)
            assert (out.returncode, out.stderr) == (errors.UNREACHABLE, "plugpay %s: error: cannot reach the MQTT "
                                                    "broker at %s: Connection refused\n" % (argv[0], url))
            assert processes_naming(str(folder)) == []  # the replicas it started are gone


def test_ledger_up_checks_its_ports_before_anything_starts(tmp_path, held_port):
    folder = tmp_path / "ledger"
    for options, what in ((["--mqtt-port", held_port], "the MQTT broker, --mqtt-host/--mqtt-port"),
                          (["--base-port", held_port], "replica 0, --base-port %d" % held_port)):
        out = plugpay("ledger", "up", "--dir", folder, "--app", "kv", *options)
        assert (out.returncode, out.stdout) == (errors.PORT_IN_USE, ""), out.stderr
        assert out.stderr == ("plugpay ledger up: error: port %d on 127.0.0.1 (%s) is in use: stop what holds it or "
                              "choose another port\n" % (held_port, what))
        assert not folder.exists() and processes_naming(str(folder)) == []


def test_a_replica_that_dies_stops_ledger_up_with_exit_1(tmp_path):
    folder = tmp_path / "ledger"
    up = subprocess.Popen(PLUGPAY + ["ledger", "up", "--dir", str(folder), "--app", "kv", "--no-gateway"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in up.stdout:
            if line.startswith("app: "):  # every replica listens
                break
        config = str(folder / "cluster.json")
        (victim,) = [pid for pid in processes_naming(config) if b"--id\x002\x00" in open(
            "/proc/%d/cmdline" % pid, "rb").read()]
        os.kill(victim, signal.SIGKILL)
        _, err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == errors.FAILURE
    assert err == ("plugpay ledger up: error: replica 2 was killed by SIGKILL; the cluster is stopped; see %s\n"
                   % (folder / "data" / "replica-2.log"))
    deadline = time.monotonic() + 10
    while processes_naming(config) and time.monotonic() < deadline:  # reaped just before up exited
        time.sleep(0.1)
    assert processes_naming(config) == []


def test_a_cluster_file_missing_a_key_names_the_key_and_the_file(tmp_path):
    config_path = cluster.generate(str(tmp_path / "c"))
    secrets_path = str(tmp_path / "c" / "cluster.secrets.json")
    good = open(config_path).read()
    for path, edit, says in (
            (config_path, lambda d: d.pop("data_dir"), "data_dir: missing"),
            (config_path, lambda d: d["replicas"][1].update(port="x"),
             'replicas[1].port: expected an integer, got "x"'),
            (config_path, lambda d: d.update(n=7), "f: n = 7 replicas and f = 1 disagree: n must be 3f+1"),
            (config_path, lambda d: d.update(n=7, f=2), "replicas: expected 7 items, got 4"),
            (secrets_path, lambda d: d["replica_keys"].pop("1-3"), "replica_keys.1-3: missing")):
        with open(path) as f:
            data = json.load(f)
        edit(data)
        before = open(path).read()
        with open(path, "w") as f:
            json.dump(data, f)
        out = plugpay("ledger", "status", "--config", config_path)
        assert (out.returncode, out.stdout) == (errors.USAGE, "")
        assert out.stderr == "plugpay ledger status: error: %s: %s\n" % (path, says)
        with open(path, "w") as f:
            f.write(before)
    assert open(config_path).read() == good


def test_config_check_reports_every_problem_at_once(tmp_path):
    example = board_configs.example_path("esp32")
    out = plugpay("config", "check", example)
    assert (out.returncode, out.stdout) == (errors.USAGE, "")
    assert out.stderr.splitlines() == ["plugpay config check: error: %s: %s: still holds the example's CHANGE-ME: "
                                       "put in the real value" % (example, field)
                                       for field in ("broker", "wifi.ssid", "wifi.password")]
    session = dict(board_configs.example("esp32")["session"], scenario="grid", price=-1)
    bad = board_configs.write(tmp_path / "bad.json", "esp32", role="car", led={"pin": 26}, session=session,
                              meter={"uart": 2, "tx": 9, "rx": 16, "baud": 9600})
    out = plugpay("config", "check", bad)
    assert out.returncode == errors.USAGE and out.stdout == ""
    assert out.stderr.splitlines() == ["plugpay config check: error: %s: %s" % (bad, problem) for problem in (
        'role: expected vehicle or charger, got "car"',
        'session.scenario: expected g2v, v2g or v2v, got "grid"',
        "session.price: expected an integer 1..1000000000, got -1",
        "led.pin: GPIO 26 is taken by relay.pin: relay, LED and meter each need pins of their own",
        "meter.tx: GPIO 9 is wired to the ESP32's flash (GPIO 6-11): choose another pin")]
    htlc = board_configs.write(tmp_path / "htlc.json", "esp32", session=dict(session, scenario="g2v", price=300,
                                                                              mode="htlc"))
    out = plugpay("config", "check", htlc)
    assert out.returncode == errors.USAGE and out.stderr == (
        "plugpay config check: error: %s: session: an HTLC series has at most 64 HTLCs (each is two ledger "
        "transactions)\n" % htlc)
    good = board_configs.write(tmp_path / "good.json", "esp32")
    out = plugpay("config", "check", good)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == ("%s: ok: a charger named 'charger-1' on an esp32 board, broker mqtt://10.0.0.2:1883, "
                          "relay GPIO 26, LED GPIO 2, meter UART2 tx GPIO 17 rx GPIO 16, g2v channel sessions in "
                          "AT-5020\n" % good)
