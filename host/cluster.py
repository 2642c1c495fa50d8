"""Cluster configuration, link keys, and a local cluster of replica processes.

A cluster is two JSON files side by side:

* ``cluster.json``: n, f, each replica's address, the application (``"module:Class"``
  plus options), protocol parameters (``pbft``), SQLite durability and the data
  directory. It holds nothing secret and can be copied to every machine.
* ``cluster.secrets.json`` (mode 0600, refused if group or others can read it): one
  random 32-byte HMAC key per pair of replicas, and per replica one secret from which the
  key it shares with a client is derived as ``HMAC(secret_i, "client:" + name)``, so any
  number of clients can be admitted without rewriting the file.

``LocalCluster`` starts one ``python -m plugpay.host.replica`` process per replica on
loopback, with its log beside its database, and always stops them (SIGTERM, then SIGKILL
after a grace period).
"""
import hmac
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

from plugpay.host.config_file import ConfigFileError, Fields, read_object

DEFAULT_APP = "plugpay.host.kvapp:KvApp"
CLIENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
MAX_REPLICAS = 100
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")  # what replica.open_database takes


def replica_name(i):
    return "replica:%d" % i


def replica_id(name):
    """The id in a ``replica:N`` link name, or None for a client name."""
    if name.startswith("replica:") and name[8:].isdigit():
        return int(name[8:])
    return None


def address(config, i):
    r = config["replicas"][i]
    return r["host"], r["port"]


def replica_key(secrets, i, j):
    a, b = min(i, j), max(i, j)
    return bytes.fromhex(secrets["replica_keys"]["%d-%d" % (a, b)])


def client_key(secrets, replica, name):
    """The key client ``name`` shares with ``replica``."""
    secret = bytes.fromhex(secrets["client_secrets"][replica])
    return hmac.digest(secret, ("client:" + name).encode(), "sha256")


def link_key(secrets, me, name):
    """The key for a connection from ``name`` to replica ``me``, or None if unknown."""
    peer = replica_id(name)
    if peer is not None:
        if peer == me or peer >= len(secrets["client_secrets"]):
            return None
        return replica_key(secrets, me, peer)
    if not CLIENT_NAME.match(name):
        return None
    return client_key(secrets, me, name)


def free_ports(count, host="127.0.0.1"):
    """Ports the kernel reports free right now (bound together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def generate(directory, n=4, host="127.0.0.1", ports=None, app=DEFAULT_APP, app_options=None,
             pbft=None, sqlite_synchronous="FULL"):
    """Write ``cluster.json`` and ``cluster.secrets.json`` into ``directory``; return the
    config path. Ports default to free ones on ``host``."""
    if n < 4 or (n - 1) % 3:
        raise ValueError("n must be 3f+1 with f >= 1 (4, 7, 10, ...), got %d" % n)
    ports = ports or free_ports(n, host)
    if len(ports) != n:
        raise ValueError("need %d ports, got %d" % (n, len(ports)))
    os.makedirs(directory, exist_ok=True)
    config = {
        "n": n,
        "f": (n - 1) // 3,
        "replicas": [{"id": i, "host": host, "port": ports[i]} for i in range(n)],
        "app": app,
        "app_options": app_options or {},
        "pbft": pbft or {},
        "sqlite_synchronous": sqlite_synchronous,
        "data_dir": "data",
        "secrets": "cluster.secrets.json",
    }
    secrets = {
        "replica_keys": {"%d-%d" % (i, j): os.urandom(32).hex() for i in range(n) for j in range(i + 1, n)},
        "client_secrets": [os.urandom(32).hex() for _ in range(n)],
    }
    path = os.path.join(directory, "cluster.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    secrets_path = os.path.join(directory, config["secrets"])
    fd = os.open(secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(secrets, f, indent=2)
    return path


def load(config_path):
    """(config, secrets); relative paths in the config are taken from its directory. A
    missing or wrong key is a ``ConfigFileError`` naming it and its file."""
    config = read_object(config_path, "cluster config")
    top = Fields(config, config_path)
    n, f = top.integer("n", 4, MAX_REPLICAS), top.integer("f", 1, MAX_REPLICAS)
    if n != 3 * f + 1:
        top.fail("f", "n = %d replicas and f = %d disagree: n must be 3f+1" % (n, f))
    replicas = top.items("replicas", n)
    for i in range(n):
        replica = replicas.inner(i)
        if replica.get("id", int) != i:
            replica.fail("id", "expected %d, got %r" % (i, config["replicas"][i]["id"]))
        replica.get("host", str)
        replica.integer("port", 1, 65535)
    top.get("app", str)
    for key in ("app_options", "pbft"):
        top.get(key, dict, required=False)
    if top.get("sqlite_synchronous", str, "FULL", required=False) not in SQLITE_SYNCHRONOUS:
        top.fail("sqlite_synchronous", "expected one of %s" % ", ".join(SQLITE_SYNCHRONOUS))
    base = os.path.dirname(os.path.abspath(config_path))
    config["data_dir"] = os.path.join(base, top.get("data_dir", str))
    secrets_path = os.path.join(base, top.get("secrets", str))
    if os.path.exists(secrets_path):
        mode = os.stat(secrets_path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigFileError("%s: readable by others (mode %o): chmod 600 it" % (secrets_path, mode & 0o777))
    return config, _load_secrets(secrets_path, n)


def _load_secrets(path, n):
    secrets = read_object(path, "cluster secrets file")
    top = Fields(secrets, path)
    pairs = top.inner("replica_keys")
    for i in range(n):
        for j in range(i + 1, n):
            pairs.hex_bytes("%d-%d" % (i, j), 32)
    clients = top.items("client_secrets", n)
    for i in range(n):
        clients.hex_bytes(i, 32)
    return secrets


class LocalCluster:
    """Replica processes of one config on this machine; a context manager that always
    stops every process it started. ``commands`` maps a replica id to the command line to
    run instead of the real replica (tests start faulty replicas this way); ``--id`` and
    ``--config`` are appended to it."""

    def __init__(self, config_path, stop_grace=5.0, commands=None):
        self.config_path = os.path.abspath(config_path)
        self.config, self.secrets = load(self.config_path)
        self.stop_grace = stop_grace
        self.commands = commands or {}
        self.procs = {}

    def log_path(self, i):
        return os.path.join(self.config["data_dir"], "replica-%d.log" % i)

    def db_path(self, i):
        return os.path.join(self.config["data_dir"], "replica-%d.sqlite" % i)

    def start(self, i):
        if i in self.procs and self.procs[i].poll() is None:
            raise RuntimeError("replica %d is already running" % i)
        os.makedirs(self.config["data_dir"], exist_ok=True)
        with open(self.log_path(i), "ab") as log:
            command = self.commands.get(i, [sys.executable, "-m", "plugpay.host.replica"])
            self.procs[i] = subprocess.Popen(
                list(command) + ["--id", str(i), "--config", self.config_path],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_all(self):
        for i in range(self.config["n"]):
            self.start(i)

    def wait_listening(self, timeout=10.0):
        """Block until every running replica accepts TCP connections."""
        deadline = time.monotonic() + timeout
        for i, proc in self.procs.items():
            host, port = address(self.config, i)
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("replica %d exited with %s; see %s" % (i, proc.returncode, self.log_path(i)))
                try:
                    socket.create_connection((host, port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("replica %d not listening on %s:%d" % (i, host, port))
                    time.sleep(0.05)

    def kill(self, i):
        """SIGKILL: the crash the durability guarantees are about."""
        proc = self.procs.pop(i, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, i):
        proc = self.procs.pop(i, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self):
        for i in list(self.procs):
            self.stop(i)

    def running(self):
        return sorted(i for i, p in self.procs.items() if p.poll() is None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
