"""A CometBFT network's processes on this machine: per node one ABCI application process
(``python -m plugpay.host.abci_app``) and one ``cometbft start``, each logging into the
node's home; a context manager that always stops what it started.

A node starts application first: CometBFT retries a refused ABCI connection only every
3 s. A node dialing a peer that is not up yet retries after seconds too, so ``wait_ready``
waits for the full mesh, not only for the first block. It stops CometBFT first, so the application sees its connections close rather than
CometBFT its application die (which CometBFT answers by stopping itself). A CometBFT
process also ends itself when its application does; ``kill_app`` is that crash.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from plugpay.host import cometbft
from plugpay.host.abci_server import parse_address
from plugpay.host.comet_testnet import load


class LocalCometCluster:
    """The nodes of one ``cluster.json``. ``app_commands`` maps a node id to the command
    line run instead of the real application (tests inject crashes this way); ``--home
    HOME`` is appended to it."""

    def __init__(self, config_path, stop_grace=5.0, app_commands=None):
        self.config_path = os.path.abspath(config_path)
        self.config = load(self.config_path)
        self.stop_grace = stop_grace
        self.app_commands = app_commands or {}
        self.apps = {}
        self.nodes = {}

    def home(self, i):
        return self.config["nodes"][i]["home"]

    def log_path(self, i, what="cometbft"):
        return os.path.join(self.home(i), what + ".log")

    def db_path(self, i):
        return os.path.join(self.home(i), "data", "plugpay-ledger.sqlite")

    def rpc(self, i):
        return self.config["nodes"][i]["rpc"]

    # -- starting -----------------------------------------------------------------------

    def _spawn(self, command, log_name, i):
        with open(self.log_path(i, log_name), "ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_app(self, i, timeout=30.0):
        if i in self.apps and self.apps[i].poll() is None:
            raise RuntimeError("the application of node %d is already running" % i)
        command = list(self.app_commands.get(i, [sys.executable, "-m", "plugpay.host.abci_app"]))
        self.apps[i] = self._spawn(command + ["--home", self.home(i)], "app", i)
        kind, host, port = parse_address(self.config["nodes"][i]["abci"])
        self._wait(lambda: _accepts(kind, host, port), self.apps[i], "the application of node %d" % i, timeout,
                   self.log_path(i, "app"))

    def start_node(self, i):
        if i in self.nodes and self.nodes[i].poll() is None:
            raise RuntimeError("CometBFT node %d is already running" % i)
        self.nodes[i] = self._spawn([cometbft.binary(), "start", "--home", self.home(i)], "cometbft", i)

    def start(self, i):
        self.start_app(i)
        self.start_node(i)

    def start_all(self):
        for i in range(self.config["n"]):
            self.start_app(i)
        for i in range(self.config["n"]):
            self.start_node(i)

    def wait_ready(self, timeout=60.0):
        """Block until every running node has a block and a peer connection to every other
        running node."""
        running = self.running()
        for i in running:
            self._wait(lambda i=i: _has_blocks(self.rpc(i)) and _peers(self.rpc(i)) >= len(running) - 1,
                       self.nodes[i], "CometBFT node %d" % i, timeout, self.log_path(i))

    @staticmethod
    def _wait(ready, proc, what, timeout, log):
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (what, proc.returncode, log))
            if time.monotonic() > deadline:
                raise TimeoutError("%s not ready within %.0f s" % (what, timeout))
            time.sleep(0.05)

    # -- stopping -----------------------------------------------------------------------

    def kill_node(self, i):
        """SIGKILL the node's CometBFT process."""
        _kill(self.nodes.pop(i, None))

    def kill_app(self, i):
        """SIGKILL the node's application (its CometBFT then stops itself)."""
        _kill(self.apps.pop(i, None))

    def stop(self, i):
        for procs in (self.nodes, self.apps):
            proc = procs.pop(i, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                _kill(proc)

    def stop_all(self):
        for i in sorted(set(self.nodes) | set(self.apps)):
            self.stop(i)

    def running(self):
        return sorted(i for i, p in self.nodes.items() if p.poll() is None)

    def exited(self):
        """``{(node, "cometbft" or "app"): exit code}`` of the processes that ended."""
        out = {}
        for name, procs in (("cometbft", self.nodes), ("app", self.apps)):
            for i, proc in procs.items():
                if proc.poll() is not None:
                    out[(i, name)] = proc.returncode
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()


def _kill(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _accepts(kind, host, port):
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    s = socket.socket(family)
    try:
        s.settimeout(0.5)
        s.connect(host if kind == "unix" else (host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _peers(rpc):
    try:
        with urllib.request.urlopen(rpc + "/net_info", timeout=1.0) as reply:
            return int(json.load(reply)["result"]["n_peers"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _has_blocks(rpc):
    try:
        with urllib.request.urlopen(rpc + "/status", timeout=1.0) as reply:
            return b'"latest_block_height":"0"' not in reply.read()
    except OSError:
        return False
