"""``plugpay ledger`` on CometBFT: ``up --engine cometbft``, ``init``, ``validator``, ``status``.

* ``up --engine cometbft``: four validators on loopback (``host.comet_testnet``), each a
  ``cometbft`` process with its own ports and home, and its own ABCI application process
  and SQLite file; the MQTT broker and the gateway beside them, as for PBFT.
* ``init``: a network's files for validators on several machines (``--hosts``): copy
  ``cluster.json`` and node N's home folder to machine N.
* ``validator --id N --config FILE``: node N, its application and CometBFT, in the
  foreground (``ledger replica``'s counterpart); ``--gateway`` adds the broker and gateway.
* ``status``: per validator its height, app hash, peers, mempool and what its application
  refused, read from its RPC.
"""
import asyncio
import json
import os

from plugpay.tools import ledger_cli
from plugpay.tools.errors import UsageError


def add_parsers(sub, up):
    init = sub.add_parser("init", help="write a CometBFT network's files for validators on several machines",
                          description="Write cluster.json and one home folder per validator (keys, genesis, "
                          "config) for CometBFT validators at --hosts. Copy cluster.json and nodeN/ to machine N "
                          "and run `plugpay ledger validator --id N --config cluster.json` there.")
    init.add_argument("--engine", choices=["cometbft"], default="cometbft", help="cometbft (the only one with files "
                      "per machine; PBFT's cluster.json is written by `ledger up`)")
    init.add_argument("--dir", required=True, help="where to write the network's files")
    init.add_argument("--hosts", required=True, help="comma-separated addresses the validators reach each other at, "
                      "one per validator (3f+1 of them)")
    init.add_argument("--ra-dir", required=True, help="the RA directory whose epoch public keys the ledger trusts")
    init.add_argument("--faucet-pubkey", help="hex public key allowed to mint (default: a new DIR/faucet.key)")
    init.add_argument("--ports", default="26656,26657,26658",
                      help="P2P, RPC and ABCI ports of every validator (default 26656,26657,26658)")
    init.set_defaults(func=_init, app="ledger")

    val = sub.add_parser("validator", help="run one CometBFT validator and its ABCI application in the foreground")
    val.add_argument("--id", type=int, required=True)
    val.add_argument("--config", required=True, help="the network's cluster.json (node homes beside it)")
    val.add_argument("--gateway", action="store_true",
                     help="also run the MQTT broker (or use --broker) and the gateway, submitting through this node")
    ledger_cli.add_gateway_options(val)
    val.set_defaults(func=_validator)


def _options(args, directory):
    options = ledger_cli._app_options(args)
    options["faucet_pubkey"] = args.faucet_pubkey or ledger_cli._faucet_pubkey(directory).hex()
    return options


def up(args):
    from plugpay.host import comet_cluster, comet_testnet

    if ledger_cli._app_spec(args.app) != ledger_cli.APPS["ledger"]:
        raise UsageError("--engine cometbft runs the payment ledger only (--app ledger)")
    external = ledger_cli.gateway_endpoint(args)
    config_path = os.path.join(args.dir, "cluster.json")
    if os.path.exists(config_path):
        if comet_testnet.engine_of(config_path) != "cometbft":
            raise UsageError("%s holds a PBFT cluster: give another --dir for CometBFT" % os.path.abspath(args.dir))
        print("using the existing CometBFT network in %s" % os.path.abspath(args.dir))
    else:
        ports = None
        if args.base_port:
            ports = [tuple(range(args.base_port + 3 * i, args.base_port + 3 * i + 3)) for i in range(args.n)]
        comet_testnet.generate(args.dir, n=args.n, app_options=_options(args, args.dir), ports=ports)
        print("created a new CometBFT %s network in %s" % (comet_testnet.cometbft.VERSION, os.path.abspath(args.dir)))
    config = comet_testnet.load(config_path)
    gateway = None if args.no_gateway else ledger_cli._gateway_options(args, config)

    def started(lc):
        lc.start_all()
        lc.wait_ready()
        print("config:  %s" % lc.config_path)
        for i, node in enumerate(lc.config["nodes"]):
            print("validator %d: rpc %s  p2p %s  abci %s" % (i, node["rpc"], node["p2p"].split("@")[1], node["abci"]))
            print("             home %s  logs cometbft.log, app.log  db %s" % (node["home"], lc.db_path(i)))
        print("app: %s on CometBFT %s. Ctrl-C stops the network; `plugpay ledger status --config %s` inspects it."
              % (lc.config["app"], lc.config["cometbft"], config_path), flush=True)

    def exited(lc):
        return dict(("validator %d's %s" % key, (code, lc.log_path(key[0], "app" if key[1] == "app" else "cometbft")))
                    for key, code in lc.exited().items())

    return ledger_cli.run_until_stopped(args, comet_cluster.LocalCometCluster(config_path), "validators", started,
                                        exited, config, None, gateway, external, events=True)


def _init(args):
    from plugpay.host import comet_testnet

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if len(set(hosts)) != len(hosts):
        raise UsageError("--hosts repeats an address: validators on one machine are `plugpay ledger up --engine "
                         "cometbft`")
    try:
        ports = tuple(int(p) for p in args.ports.split(","))
    except ValueError:
        ports = ()
    if len(ports) != 3:
        raise UsageError("--ports is three port numbers: P2P,RPC,ABCI")
    path = comet_testnet.generate(args.dir, n=len(hosts), app_options=_options(args, args.dir), hosts=hosts,
                                  ports=[ports] * len(hosts))
    print("wrote %s and node0..node%d; copy cluster.json and nodeN/ to the machine at --hosts' N-th address and run"
          % (path, len(hosts) - 1))
    print("  plugpay ledger validator --id N --config cluster.json")
    return 0


def _validator(args):
    from plugpay.host import comet_cluster, comet_testnet

    config = comet_testnet.load(args.config)
    if not 0 <= args.id < config["n"]:
        raise UsageError("--id %d is not a validator of %s (0..%d)" % (args.id, args.config, config["n"] - 1))
    args.no_gateway = not args.gateway
    args.dir = os.path.dirname(os.path.abspath(args.config))
    external = ledger_cli.gateway_endpoint(args)
    gateway = ledger_cli._gateway_options(args, config) if args.gateway else None
    config["local_node"] = args.id  # the gateway submits through this validator

    def started(lc):
        lc.start(args.id)
        print("validator %d: home %s, rpc %s; logs cometbft.log and app.log there. Ctrl-C stops it."
              % (args.id, lc.home(args.id), lc.rpc(args.id)), flush=True)

    def exited(lc):
        return dict(("validator %d's %s" % key, (code, lc.log_path(key[0], key[1]))) for key, code in lc.exited().items())

    return ledger_cli.run_until_stopped(args, comet_cluster.LocalCometCluster(args.config), "validator", started,
                                        exited, config, None, gateway, external)


def status(args):
    from plugpay.host import comet_testnet

    config = comet_testnet.load(args.config)
    rows = asyncio.run(_status_rows(config, args.timeout))
    if args.json:
        print(json.dumps(rows))
        return 0
    print("%-9s %-24s %8s %-16s %5s %7s %8s  %s" % ("validator", "rpc", "height", "app hash", "peers", "mempool",
                                                   "refused", "state"))
    for row in rows:
        if not row["reachable"]:
            print("%-9d %-24s %8s %-16s %5s %7s %8s  %s" % (row["id"], row["rpc"], "-", "-", "-", "-", "-",
                                                           "unreachable"))
            continue
        print("%-9d %-24s %8d %-16s %5d %7d %8d  %s" % (
            row["id"], row["rpc"], row["height"], row["app_hash"][:16], row["peers"], row["mempool"],
            row["refused"], "catching up" if row["catching_up"] else "validator"))
    return 0 if all(r["reachable"] for r in rows) else 1


async def _status_rows(config, timeout):
    from plugpay.host.comet_rpc import Rpc, RpcError, b64

    async def one(node):
        rpc = Rpc(node["rpc"], connections=4)
        row = {"id": node["id"], "rpc": node["rpc"], "reachable": False}
        try:
            status, net, mempool, app = await asyncio.gather(
                rpc.call("status", timeout), rpc.call("net_info", timeout), rpc.call("num_unconfirmed_txs", timeout),
                rpc.call("abci_query", timeout, path="/status", data=""))
            stats = json.loads(b64(app["response"].get("value")) or b"{}")
            sync = status["sync_info"]
            row.update(reachable=True, height=int(sync["latest_block_height"]), app_hash=sync["latest_app_hash"].lower(),
                       catching_up=bool(sync["catching_up"]), peers=int(net["n_peers"]),
                       mempool=int(mempool["n_txs"]), refused=int(stats.get("stats", {}).get("check_refused", 0)),
                       app_height=stats.get("height"))
        except (RpcError, KeyError, TypeError, ValueError, asyncio.TimeoutError):
            pass
        finally:
            await rpc.close()
        return row

    return await asyncio.gather(*(one(node) for node in config["nodes"]))
