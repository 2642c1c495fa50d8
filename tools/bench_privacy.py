"""``plugpay bench privacy``: what an outside observer of the broker and the ledger can tie
together, on the path a user takes (DESIGN.md, "Privacy: who may learn what").

Every part is what a user runs, as a process: ``plugpay ra init``, ``plugpay broker init``
and ``broker run`` (Mosquitto with TLS and the device ACL), ``plugpay provision`` for one
vehicle and two chargers, ``plugpay ledger up`` (4 replica processes, the gateway logged in
on the gateway listener), two ``plugpay session`` chargers serving one after another, and
one ``plugpay session`` vehicle charging ``--sessions`` times through the market. The
observer is the broker's operator: logged in on the gateway listener, it records every
message on ``#``; afterwards it reads every block of the ledger.

Which messages belong to which session is the ground truth the observer lacks, taken from
the devices' session records (``--json``: each session's client ids and link session id).
The observer's graph (``tools/privacy_observer.py``) then ties the vehicle's sessions by
shared values of 8+ bytes, transaction ancestry and queries naming another session's
objects; the RA, which may, names the vehicle behind each session from the ledger
(``RegistrationAuthority.audit``, what ``plugpay ledger audit`` runs).

Figures: ``sessions``, ``linked_pairs`` (target 0), ``components`` (target: one per
session), ``audit_linked`` (sessions the RA names the vehicle behind; target all),
``shared_values``, and what linked, if anything.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from plugpay.host import cluster, ra
from plugpay.protocol import topics
from plugpay.tools import privacy_capture, privacy_observer

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
REGION = "AT-5020"
VEHICLE = "vehicle"
# Two chargers as far from the vehicle and as dear as each other: the market's tie-break (the
# bid digest) picks either, so both serve sessions and both count in the common-value rule.
CHARGERS = (("charger-a", "47.81,13.04", "300"), ("charger-b", "47.81,13.06", "300"))
NAMES = {VEHICLE: "Privacy Test Vehicle", "charger-a": "Charger A", "charger-b": "Charger B"}
SESSION_ARGS = ["--energy-wh", "2000", "-n", "4", "--scale", "20000", "--bid-window", "1.5"]


class BenchError(Exception):
    """A part of the run failed; the text says which and shows its output."""


def _run(*args, timeout=120):
    out = subprocess.run(PLUGPAY + list(args), capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise BenchError("plugpay %s failed (exit %d): %s" % (args[0], out.returncode, out.stderr.strip()[-2000:]))
    return out.stdout


def _wait_port(port, proc, what, seconds=15):
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("%s did not start listening on port %d" % (what, port))
            time.sleep(0.05)


def _stop(proc, sig=signal.SIGTERM, timeout=30):
    """Stop a process; what it printed on stdout."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


class Deployment:
    """The RA, the deployment broker, the ledger with its gateway and three provisioned
    boards in ``base``, each a process the way a user starts it; stopped on exit."""

    def __init__(self, base, say):
        self.base = base
        self.say = say
        self.procs = []
        self.port, self.gateway_port = cluster.free_ports(2)
        self.broker_dir = os.path.join(base, "broker")
        self.ca = os.path.join(self.broker_dir, "ca.crt")
        self.ra_dir, self.ra_key = os.path.join(base, "ra"), os.path.join(base, "ra.key")
        self.ledger_dir = os.path.join(base, "ledger")
        self.boards = {}

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self):
        _run("ra", "init", "--dir", self.ra_dir, "--key-file", self.ra_key)
        _run("broker", "init", "--dir", self.broker_dir, "--host", "localhost", "--port", str(self.port),
             "--bind", "127.0.0.1", "--gateway-port", str(self.gateway_port))
        broker = self._spawn(["broker", "run", "--dir", self.broker_dir])
        _wait_port(self.port, broker, "plugpay broker run")
        _wait_port(self.gateway_port, broker, "plugpay broker run")
        for n, role in enumerate([VEHICLE] + [name for name, _, _ in CHARGERS]):
            folder = os.path.join(self.base, role)
            vin = ["--vehicle-id", "WVWZZZ1JZXW%06d" % n] if role == VEHICLE else []  # a charger has none
            _run("provision", "--role", "vehicle" if role == VEHICLE else "charger", "--out", folder, "--keys", "64",
                 "--ra-dir", self.ra_dir, "--key-file", self.ra_key, "--name", NAMES[role],
                 "--licence", "LIC-%d" % n, *vin)
            self.boards[role] = ["--wallet", os.path.join(folder, "wallet"),
                                 "--device-key", os.path.join(folder, "device.key")]
        up = self._spawn(["ledger", "up", "--dir", self.ledger_dir, "--ra-dir", self.ra_dir, "--key-file",
                          self.ra_key, "--broker", "mqtts://127.0.0.1:%d" % self.gateway_port, "--ca", self.ca,
                          "--gateway-password-file", self.password_file],
                         stdout=subprocess.PIPE)
        lines = []
        while not lines or not lines[-1].startswith("ra:"):
            line = up.stdout.readline()
            if not line:
                raise BenchError("plugpay ledger up exited early: %s" % "".join(lines))
            lines.append(line)
        self.say("deployment up: Mosquitto (TLS, device ACL), 4 replicas, gateway, RA; 1 vehicle, 2 chargers")

    @property
    def password_file(self):
        return os.path.join(self.broker_dir, "gateway.password")

    @property
    def config(self):
        return os.path.join(self.ledger_dir, "cluster.json")

    def _spawn(self, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        proc = subprocess.Popen(PLUGPAY + args, stdout=stdout, stderr=stderr, text=True)
        self.procs.append(proc)
        return proc

    def session(self, role, mode, *args):
        """A ``plugpay session`` process of board ``role`` on the device listener."""
        return self._spawn(["session", "--role", "vehicle" if role == VEHICLE else "charger", "--broker",
                            "mqtts://localhost:%d" % self.port, "--ca", self.ca, "--region", REGION, "--json",
                            "--mode", mode] + self.boards[role] + SESSION_ARGS + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def observer(self):
        """The broker's operator, subscribed to ``#`` on the gateway listener."""
        with open(self.password_file) as f:
            password = f.read().strip()
        return privacy_capture.Capture("127.0.0.1", self.gateway_port, "gateway", password, self.ca)

    def __exit__(self, *exc):
        for proc in reversed(self.procs):
            _stop(proc, signal.SIGINT if proc.args[3:5] == ["broker", "run"] else signal.SIGTERM)


def _records(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def attribute(messages, records):
    """Ground truth: ``({label: [message]}, {label: device}, unattributed count)``. Every
    session of every device is a label; a message belongs to the session whose connection
    published or received it (its client id in a gateway topic), or to both sides of the
    link session it carries."""
    by_cid, by_link, devices, sessions = {}, {}, {}, {}
    for device, recs in records.items():
        for i, rec in enumerate(recs):
            label = "%s/%02d" % (device, i + 1)
            devices[label] = device
            sessions[label] = []
            for cid in rec.get("client_ids", ()):
                by_cid[cid] = label
            by_link.setdefault(rec["session_id"], []).append(label)
    lost = 0
    for message in messages:
        topic = message[1]
        parsed = topics.parse(topic)
        if parsed is not None:
            labels = [by_cid[parsed[1]]] if parsed[1] in by_cid else []
        else:
            level = topic.split("/")
            labels = by_link.get(level[2], []) if len(level) == 4 and level[:2] == ["plugpay", "link"] else []
        for label in labels:
            sessions[label].append(message)
        lost += not labels
    return sessions, devices, lost


def audit(deployment, sessions, devices, requests):
    """How many of the vehicle's sessions the RA names the vehicle behind: the ledger
    requests each submitted (matched by their bytes), audited as ``plugpay ledger audit``."""
    known = set(requests)
    named = 0
    with ra.RegistrationAuthority.open(deployment.ra_dir, ra.Unlock(key_file=deployment.ra_key)) as authority:
        for label, messages in sessions.items():
            if devices[label] != VEHICLE:
                continue
            mine = [bytes(m[2]) for m in messages if bytes(m[2]) in known]
            found = authority.audit(mine)
            if any(who is not None and who.name == NAMES[VEHICLE] for who in found.values()):
                named += 1
    return named


class Observation:
    """What a run gave: ``labelled`` ({session label: messages}), ``devices`` ({label:
    device}), ``requests`` (every request in every block), the devices' session
    ``records``, and the ``report``."""

    def __init__(self, labelled, devices, requests, records, report):
        self.labelled = labelled
        self.devices = devices
        self.requests = requests
        self.records = records
        self.report = report


def run(sessions=20, directory=None, say=print, mode="channel"):
    """The whole measurement, as an ``Observation`` whose report is
    ``privacy_observer.observe``'s plus ``audit_linked``, ``settled``,
    ``unattributed_messages`` and each device's session count."""
    base = directory or tempfile.mkdtemp(prefix="plugpay-privacy-")
    with Deployment(base, say) as d:
        with d.observer() as observer:
            chargers = [d.session(name, mode, "--position", site, "--price", price, "--sessions", "1000", "--timeout",
                                  "100000") for name, site, price in CHARGERS]
            vehicle = d.session(VEHICLE, mode, "--position", "47.81,13.05", "--fund", str(1000 * sessions),
                                "--sessions", str(sessions), "--timeout", "120")
            say("vehicle charging %d times through the market (two chargers bidding, %s)" % (sessions, mode))
            try:
                v_out, v_err = vehicle.communicate(timeout=120 + 60 * sessions)
            except subprocess.TimeoutExpired:
                vehicle.kill()
                v_out, v_err = vehicle.communicate()
            c_out = [_stop(c) for c in chargers]
            records = {VEHICLE: _records(v_out)}
            for (name, _, _), out in zip(CHARGERS, c_out):
                records[name] = _records(out)
            if vehicle.returncode != 0 or len(records[VEHICLE]) != sessions:
                raise BenchError("the vehicle finished %d of %d sessions (exit %s): %s" % (
                    len(records[VEHICLE]), sessions, vehicle.returncode, v_err.strip()[-3000:]))
            messages = observer.messages()
        requests = privacy_capture.ledger_requests(d.config)
        labelled, devices, lost = attribute(messages, records)
        report = privacy_observer.observe(labelled, devices, requests, target=VEHICLE)
        report["audit_linked"] = audit(d, labelled, devices, requests)
    report["unattributed_messages"] = lost
    report["messages"] = len(messages)
    report["sessions_by_device"] = dict((k, len(v)) for k, v in records.items())
    report["settled"] = sum(1 for r in records[VEHICLE] if r["finished"] and r["stop_code"] == "OK")
    report["directory"] = base
    return Observation(labelled, devices, requests, records, report)


def main(args):
    """``plugpay bench privacy``."""
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    try:
        report = run(args.sessions or 20, say=say, mode=args.mode).report
    except BenchError as e:
        print("plugpay bench privacy: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        keys = ("sessions", "linked_pairs", "components", "audit_linked", "shared_values", "settled",
                "unattributed_messages", "messages", "requests", "reasons", "sessions_by_device")
        print(json.dumps(dict((k, report[k]) for k in keys), sort_keys=True))
    else:
        for line in privacy_observer.report_lines(report):
            print(line)
        print("the RA names the vehicle behind %d of %d sessions; %d settled OK" % (
            report["audit_linked"], report["sessions"], report["settled"]))
    return 0
