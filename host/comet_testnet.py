"""The files of a CometBFT network running the ledger: keys, genesis, each node's config.

``generate(directory, ...)`` has ``cometbft testnet`` make the validators' keys and a shared
genesis, then writes what plugpay decides into every node's home (``node0`` ...):
``config/config.toml`` (addresses, peers, and the settings below) and
``config/plugpay.json`` (the ABCI address and the ledger's options, read by
``host.abci_app``), and ``cluster.json`` beside the homes: the engine, the nodes' RPC
addresses and the ledger's options, which ``plugpay ledger status|tx|block|audit``, the
gateway and the benchmarks read. No secret is in ``cluster.json``; each home holds its
node's keys (``config/node_key.json``, ``config/priv_validator_key.json``, mode 0600).

Settings chosen for low latency on a few machines (``SETTINGS``; each can be overridden):

* ``timeout_commit`` 200 ms (default 1 s): how long a height gathers late precommits before
  the next starts. It bounds the block rate, so also the blocks' size at a given load: at
  300 tx/s on two shared cores, 2-3 blocks a second of ~100-150 transactions each.
* no empty blocks: heights advance only with requests (and the one block after them that
  commits their app hash), as with the PBFT engine, whose heights HTLC timeouts and dispute
  windows also count; a proposal starts the moment a transaction arrives.
* ``timeout_propose`` 1 s and vote timeouts 500 ms (3 s and 1 s): a round whose proposer is
  down ends sooner; with 3 of 4 validators up, votes never wait on these.
* ``flush_throttle_timeout`` 10 ms (100 ms) and ``peer_gossip_sleep_duration`` 20 ms
  (100 ms): how long a message may wait in a peer's send buffer, and a gossip routine with
  nothing to send, before it goes out.
* mempool: ``recheck`` off (the application would answer OK anyway: a request that passed
  CheckTx is decided by a block, never dropped), 10,000 requests, 64 KiB per request (the
  ledger itself refuses over 8 KiB, with its reason).
* no transaction index (the default indexes every request, ``kv``): plugpay looks nothing
  up by transaction hash (a re-sent request is checked again instead), and indexing costs
  every node CPU and disk per request.
* blocks of at most 4 MiB (22 MiB), logs at error level but for one line per block.
"""
import base64
import hashlib
import json
import os
import re
import socket
import subprocess

from plugpay.host import cometbft

APP = "plugpay.host.ledger:Ledger"
ENGINE = "cometbft"
SETTINGS = {
    ("consensus", "timeout_commit"): "200ms",
    ("consensus", "timeout_propose"): "1s",
    ("consensus", "timeout_prevote"): "500ms",
    ("consensus", "timeout_precommit"): "500ms",
    ("consensus", "create_empty_blocks"): False,
    ("consensus", "peer_gossip_sleep_duration"): "20ms",
    ("p2p", "flush_throttle_timeout"): "10ms",
    ("p2p", "pex"): False,
    ("p2p", "addr_book_strict"): False,
    ("p2p", "allow_duplicate_ip"): True,
    ("mempool", "recheck"): False,
    ("mempool", "size"): 10000,
    ("mempool", "cache_size"): 20000,
    ("mempool", "max_tx_bytes"): 65536,
    ("tx_index", "indexer"): "null",
    (None, "log_level"): "state:info,*:error",
}
MAX_BLOCK_BYTES = 4 << 20


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


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def set_options(text, options):
    """``config.toml`` text with each ``(section, key): value`` of ``options`` set; a key
    the file does not have in that section is an error (a release that renamed it)."""
    lines = text.split("\n")
    section = None
    where = {}
    for i, line in enumerate(lines):
        head = re.match(r"^\[([A-Za-z0-9_.-]+)\]\s*$", line)
        if head:
            section = head.group(1)
            continue
        key = re.match(r"^([A-Za-z0-9_-]+)\s*=", line)
        if key:
            where[(section, key.group(1))] = i
    for (section, key), value in options.items():
        if (section, key) not in where:
            raise ValueError("config.toml of CometBFT %s has no %s in [%s]" % (cometbft.VERSION, key, section or ""))
        lines[where[(section, key)]] = "%s = %s" % (key, toml_value(value))
    return "\n".join(lines)


def node_id(home):
    """The P2P id of a node: the first 20 bytes of SHA-256 of its ed25519 public key."""
    with open(os.path.join(home, "config", "node_key.json")) as f:
        secret = base64.b64decode(json.load(f)["priv_key"]["value"])
    return hashlib.sha256(secret[32:]).digest()[:20].hex()


def node_config(node, nodes, settings):
    """The options of node ``node`` (a dict of ``cluster.json``'s "nodes") in a network of ``nodes``."""
    options = dict(SETTINGS)
    options.update(settings or {})
    peers = ",".join("%s@%s:%d" % (n["node_id"], n["host"], n["p2p_port"]) for n in nodes if n is not node)
    options.update({
        (None, "moniker"): "plugpay-%d" % node["id"],
        (None, "proxy_app"): node["abci"],
        ("rpc", "laddr"): "tcp://%s:%d" % (node["listen"], node["rpc_port"]),
        ("p2p", "laddr"): "tcp://%s:%d" % (node["listen"], node["p2p_port"]),
        ("p2p", "persistent_peers"): peers,
    })
    return options


def generate(directory, n=4, app_options=None, hosts=None, ports=None, settings=None, sqlite_synchronous="FULL"):
    """Write a network of ``n`` validators into ``directory``; return ``cluster.json``'s path.

    ``hosts`` (one address per node, default all 127.0.0.1) is where each node is reached
    by its peers and by the tools (P2P and RPC); a node on loopback listens there, any other
    on all interfaces. The ABCI socket stays on loopback. ``ports`` are (p2p, rpc, abci) per
    node (default: free ones here)."""
    if n < 4 or (n - 1) % 3:
        raise ValueError("n must be 3f+1 with f >= 1 (4, 7, 10, ...), got %d" % n)
    if cometbft.missing():
        raise RuntimeError(cometbft.missing())
    hosts = list(hosts or ["127.0.0.1"] * n)
    if len(hosts) != n:
        raise ValueError("need %d hosts, got %d" % (n, len(hosts)))
    if ports is None:
        free = free_ports(3 * n)
        ports = [tuple(free[3 * i:3 * i + 3]) for i in range(n)]
    if os.path.exists(os.path.join(directory, "cluster.json")):
        raise FileExistsError("%s already holds a network" % directory)
    subprocess.run([cometbft.binary(), "testnet", "--v", str(n), "--o", directory, "--node-dir-prefix", "node",
                    "--populate-persistent-peers=false"], check=True, capture_output=True)
    nodes = []
    for i in range(n):
        home = os.path.join(directory, "node%d" % i)
        local = hosts[i] in ("127.0.0.1", "localhost", "::1")
        nodes.append({"id": i, "home": "node%d" % i, "host": hosts[i], "listen": hosts[i] if local else "0.0.0.0",
                      "p2p_port": ports[i][0], "rpc_port": ports[i][1],
                      "abci": "tcp://127.0.0.1:%d" % ports[i][2], "node_id": node_id(home)})
    chain_id = None
    for node in nodes:
        home = os.path.join(directory, node["home"])
        path = os.path.join(home, "config", "config.toml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(set_options(text, node_config(node, nodes, settings)))
        with open(os.path.join(home, "config", "plugpay.json"), "w") as f:
            json.dump({"abci": node["abci"], "app_options": app_options or {},
                       "sqlite_synchronous": sqlite_synchronous}, f, indent=2)
        chain_id = _bound_blocks(os.path.join(home, "config", "genesis.json"))
        for secret in ("node_key.json", "priv_validator_key.json"):
            os.chmod(os.path.join(home, "config", secret), 0o600)
    config = {"engine": ENGINE, "cometbft": cometbft.VERSION, "n": n, "f": (n - 1) // 3, "chain_id": chain_id,
              "app": APP, "app_options": app_options or {},
              "nodes": [{"id": x["id"], "home": x["home"], "rpc": "http://%s:%d" % (x["host"], x["rpc_port"]),
                         "p2p": "%s@%s:%d" % (x["node_id"], x["host"], x["p2p_port"]), "abci": x["abci"]}
                        for x in nodes]}
    path = os.path.join(directory, "cluster.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return path


def _bound_blocks(genesis_path):
    """Cap the genesis's block size (what a FinalizeBlock carries); return its chain id."""
    with open(genesis_path) as f:
        genesis = json.load(f)
    genesis["consensus_params"]["block"]["max_bytes"] = str(MAX_BLOCK_BYTES)
    with open(genesis_path, "w") as f:
        json.dump(genesis, f, indent=2)
    return genesis["chain_id"]


def load(config_path):
    """``cluster.json`` of a CometBFT network, homes made absolute (relative to the file)."""
    with open(config_path) as f:
        config = json.load(f)
    if config.get("engine") != ENGINE:
        raise ValueError("%s is not a CometBFT network's config" % config_path)
    base = os.path.dirname(os.path.abspath(config_path))
    for node in config["nodes"]:
        node["home"] = os.path.join(base, node["home"])
    if len(config["nodes"]) != config["n"] or config["f"] != (config["n"] - 1) // 3:
        raise ValueError("%s: n, f and the node list disagree" % config_path)
    return config


def engine_of(config_path):
    """"cometbft" or "pbft": which engine a ``cluster.json`` describes (``ConfigFileError``
    names the file if it cannot be read)."""
    from plugpay.host.config_file import read_object

    return read_object(config_path, "cluster config").get("engine", "pbft")
