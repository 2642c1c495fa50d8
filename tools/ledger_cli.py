"""``plugpay ledger …``: run, inspect and measure the ledger, on either engine.

``add_parser(subparsers)`` registers the ``ledger`` command on the ``plugpay`` parser:

* ``ledger up``: a local cluster on loopback (default n=4) in one command; prints where
  the config, databases and logs live, then every request as its block commits (the event
  log, ``host.events``), serves the live dashboard (``tools/dashboard.py``), and stops
  every replica cleanly on Ctrl-C. With ``--engine cometbft``, four CometBFT validators,
  each with its ABCI application (``tools.ledger_comet``).
* ``ledger watch``: follow a running cluster's event log (``tools/watch_cli.py``).
* ``ledger replica --id N --config FILE``: one replica alone, for clusters spanning
  several machines (copy ``cluster.json`` and, with mode 0600, the secrets file);
  ``ledger init --engine cometbft`` and ``ledger validator`` are CometBFT's counterparts.
* ``ledger status``: per replica its height, view, last stable checkpoint, pending
  requests and dropped frames, or that it is unreachable (``STATUS_LEGEND`` says what
  each counts; per validator on CometBFT).
* ``ledger tx``, ``ledger block``, ``ledger audit``: a confirmed request, a block, or the
  RA's names for the accounts in them, read from the cluster (``ledger_inspect``).
* ``ledger bench``: confirmed requests/s and latency p50/p99 at an offered rate and at
  saturation, on a throw-away local cluster. It prints figures and never fails on a slow
  machine.
"""
import asyncio
import itertools
import json
import os
import signal
import tempfile
import time

from plugpay.tools import arg_types, errors
from plugpay.tools.errors import UsageError

APPS = {"kv": "plugpay.host.kvapp:KvApp", "ledger": "plugpay.host.ledger:Ledger"}
STATUS_LEGEND = (
    "height: the newest block the replica executed; view: its PBFT view (the primary is view mod n)",
    "checkpoint: the newest block 2f+1 replicas agree on; pending: client requests it holds, not yet executed",
    "dropped: frames and connections it refused since it started: unauthenticated, malformed, oversized,",
    "  a failed handshake, a peer too slow to read (a connection cut mid-frame counts too)",
)


def add_parser(subparsers):
    p = subparsers.add_parser("ledger", help="run, inspect and measure the ledger (PBFT replicas or CometBFT)")
    sub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")
    sub.required = True

    up = sub.add_parser("up", help="start a local cluster on loopback, an MQTT broker and the gateway, until Ctrl-C")
    up.add_argument("--engine", choices=["pbft", "cometbft"], default="pbft",
                    help="pbft: our PBFT replica processes (default); cometbft: CometBFT validators, each with the "
                    "ledger as its ABCI application process")
    up.add_argument("--dir", default="plugpay-ledger", help="cluster directory (default: ./plugpay-ledger)")
    up.add_argument("-n", type=arg_types.replicas, default=4, help="number of replicas, 3f+1 (default 4)")
    up.add_argument("--app", default="ledger", help="ledger (the payment ledger), kv (a key/value store for smoke "
                    "tests) or module:Class (default ledger)")
    up.add_argument("--faucet-pubkey", help="hex public key allowed to mint test funds (default: a new faucet key "
                    "in DIR/faucet.key, used by the gateway)")
    up.add_argument("--base-port", type=arg_types.PORT, help="ports base..base+n-1 (CometBFT: base..base+3n-1, "
                    "P2P, RPC and ABCI of each node; default: free ones)")
    add_gateway_options(up)
    up.add_argument("--no-gateway", action="store_true", help="run the replicas only: no MQTT broker, no gateway")
    from plugpay.tools import dashboard

    dashboard.add_options(up)
    up.set_defaults(func=_up)

    rep = sub.add_parser("replica", help="run one replica of a cluster in the foreground")
    rep.add_argument("--id", type=arg_types.integer(0), required=True)
    rep.add_argument("--config", required=True, help="cluster.json (secrets file beside it)")
    rep.set_defaults(func=_replica)

    from plugpay.tools import ledger_comet

    ledger_comet.add_parsers(sub, up)

    st = sub.add_parser("status", help="per-replica height, view, checkpoint, pending, reachability")
    st.add_argument("--config", default=os.path.join("plugpay-ledger", "cluster.json"))
    st.add_argument("--timeout", type=arg_types.SECONDS, default=2.0, help="seconds to wait for answers (default 2)")
    st.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    st.set_defaults(func=_status)

    from plugpay.tools import ledger_inspect, ra_cli

    cluster_json = os.path.join("plugpay-ledger", "cluster.json")
    tx = sub.add_parser("tx", help="show one confirmed request (a transaction, mint, channel or HTLC operation)",
                        description="Look a confirmed request up by its txhash or id and show it: the block it is "
                        "in, its operation and fields; for a transaction its inputs (with the amount and owner "
                        "address of each output spent), outputs (address, RA epoch, amount) and fee. Every record "
                        "is accepted on f+1 matching replica answers. Exit code 2 on bad input or when not found.")
    tx.add_argument("txhash", help="txhash, channel id, HTLC id or request digest (64 hex digits)")
    tx.add_argument("--config", default=cluster_json, help="cluster.json (default: %(default)s)")
    tx.add_argument("--timeout", type=arg_types.SECONDS, default=3.0,
                    help="seconds to wait for f+1 answers (default 3)")
    tx.add_argument("--json", action="store_true", help="one JSON object instead of text")
    tx.set_defaults(func=ledger_inspect.tx_command)

    blk = sub.add_parser("block", help="show a block header and one line per request in it",
                         description="Show block HEIGHT (-1 or --last: the newest block that f+1 replicas hold): "
                         "height, hash (recomputed from the contents), prev, results and state digests, and per "
                         "request its client, timestamp, operation, txhash/digest and result (OK, DUPLICATE, "
                         "DOUBLE_SPEND..., checked against the block's results digest; --json adds the "
                         "refusal's detail; REJECTED for a block of a replica of an earlier version, which "
                         "kept no results). Accepted on f+1 matching "
                         "replica answers. Exit code 2 on bad input or a height beyond the tip.")
    blk.add_argument("height", type=int, nargs="?", help="block height, from 1; -1 for the newest")
    blk.add_argument("--last", action="store_true", help="the newest block")
    blk.add_argument("--config", default=cluster_json, help="cluster.json (default: %(default)s)")
    blk.add_argument("--timeout", type=arg_types.SECONDS, default=3.0,
                    help="seconds to wait for f+1 answers (default 3)")
    blk.add_argument("--json", action="store_true", help="one JSON object instead of text")
    blk.set_defaults(func=ledger_inspect.block_command)

    from plugpay.tools import watch_cli

    watch_cli.add_parser(sub, cluster_json)

    au = sub.add_parser("audit", help="let the RA name the identities behind the accounts of ledger requests",
                        description="Fetch requests (--tx) or whole blocks (--blocks) from the cluster on f+1 "
                        "matching answers, with the outputs their inputs spend, and let the RA (unlocked as for "
                        "`plugpay ra audit`) name the identity behind every account in them: payees, payers, "
                        "channel parties, HTLC payer and payee. Exit code 2 on bad input.")
    au.add_argument("--config", default=cluster_json, help="cluster.json (default: %(default)s)")
    au.add_argument("--timeout", type=arg_types.SECONDS, default=3.0,
                    help="seconds to wait for f+1 answers (default 3)")
    au.add_argument("--dir", required=True, help="the RA directory (key file and certificate repository)")
    ra_cli.add_unlock_options(au)
    which = au.add_mutually_exclusive_group(required=True)
    which.add_argument("--tx", nargs="+", metavar="TXHASH", help="txhashes or request ids (64 hex digits each)")
    which.add_argument("--blocks", metavar="A:B", help="blocks A to B inclusive; A: means up to the newest")
    au.set_defaults(func=ledger_inspect.audit_command)

    b = sub.add_parser("bench", help="confirmed requests/s and latency on a throw-away local cluster (kv app)")
    b.add_argument("--rate", type=arg_types.number(), default=300.0,
                   help="offered requests/s for the first run (default 300)")
    b.add_argument("--duration", type=arg_types.SECONDS, default=5.0, help="seconds per run (default 5)")
    b.add_argument("--lanes", type=arg_types.COUNT, default=256, help="concurrent requests at saturation (default 256)")
    b.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL", help="SQLite synchronous (default FULL)")
    b.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    b.set_defaults(func=_bench)
    return p


def add_gateway_options(p):
    """The options of the RA, the faucet, the MQTT broker and the gateway that run beside a
    ledger's processes (``up``, ``validator``), and ``--duration``."""
    from plugpay.tools import broker_args, ra_cli

    p.add_argument("--ra-dir", help="the RA directory (`plugpay ra init`) whose epoch public keys the ledger "
                   "trusts for account signatures; required for the ledger app. With --key-file or "
                   "--passphrase-env (the RA's unlock) the gateway also serves RA registration over MQTT")
    ra_cli.add_unlock_options(p)
    p.add_argument("--faucet-max", type=arg_types.AMOUNT, default=1000000,
                   help="most the gateway's faucet mints for one request, in the smallest unit (default 1000000)")
    p.add_argument("--mqtt-host", default="127.0.0.1", help="embedded MQTT broker address (default 127.0.0.1)")
    p.add_argument("--mqtt-port", type=arg_types.PORT, default=1883, help="embedded MQTT broker port (default 1883)")
    broker_args.add_broker(p, "the gateway uses this broker instead of starting the embedded one: mqtt://host:port "
                           "(e.g. Mosquitto), or a deployment broker's gateway listener, mqtts://127.0.0.1:8884 with "
                           "--ca and --gateway-password-file")
    broker_args.add_gateway_login(p)
    p.add_argument("--duration", type=arg_types.SECONDS,
                   help="stop after this many seconds instead of waiting for Ctrl-C")


def _app_spec(name):
    if name in APPS:
        return APPS[name]
    if ":" not in name:
        raise UsageError("--app must be one of %s or module:Class, got %r" % (", ".join(APPS), name))
    return name


def _app_options(args):
    """The ledger's options in the JSON form the replicas read from cluster.json."""
    if _app_spec(args.app) != APPS["ledger"]:
        return {}
    if not args.ra_dir:
        raise UsageError("the ledger app needs --ra-dir (the RA directory from `plugpay ra init`)")
    from plugpay.host import ra
    from plugpay.protocol import signing

    options = {"ra_pubkeys": {str(epoch): pubkey.hex() for epoch, pubkey, _ in ra.public_epochs(args.ra_dir)}}
    if args.faucet_pubkey:
        if not signing.valid_public_key(bytes.fromhex(args.faucet_pubkey)):
            raise UsageError("--faucet-pubkey is not a compressed secp256k1 public key")
        options["faucet_pubkey"] = args.faucet_pubkey
    return options


def gateway_endpoint(args):
    """The external broker of ``--broker`` (None for the embedded one); a bad URL, CA or
    password file fails here, before anything starts."""
    from plugpay.tools import broker_args

    if args.no_gateway and args.broker:
        raise UsageError("--broker and --no-gateway exclude each other")
    if not args.broker and (args.ca or args.gateway_password_file):
        raise UsageError("--ca and --gateway-password-file go with --broker (the embedded broker needs neither)")
    return broker_args.gateway_endpoint(args) if args.broker else None


def _up(args):
    from plugpay.host import cluster
    from plugpay.tools.ports import check_all

    if args.engine == "cometbft":
        from plugpay.tools import ledger_comet

        return ledger_comet.up(args)
    external = gateway_endpoint(args)  # a bad URL, CA or password file, or a port in use, fails first
    config_path = os.path.join(args.dir, "cluster.json")
    existing = cluster.load(config_path)[0] if os.path.exists(config_path) else None
    check_all(_listening(args, existing, config_path))
    if existing:
        print("using the existing cluster in %s" % os.path.abspath(args.dir))
    else:
        ports = list(range(args.base_port, args.base_port + args.n)) if args.base_port else None
        options = _app_options(args)
        if _app_spec(args.app) == APPS["ledger"] and not args.faucet_pubkey:
            options["faucet_pubkey"] = _faucet_pubkey(args.dir).hex()
        cluster.generate(args.dir, n=args.n, ports=ports, app=_app_spec(args.app), app_options=options)
        print("created a new cluster in %s" % os.path.abspath(args.dir))
    config, secrets = cluster.load(config_path)
    gateway = None if args.no_gateway else _gateway_options(args, config)

    def started(lc):
        lc.start_all()
        lc.wait_listening()
        print("config:  %s (secrets beside it, mode 0600)" % lc.config_path)
        print("data:    %s" % lc.config["data_dir"])
        for i in range(lc.config["n"]):
            host, port = cluster.address(lc.config, i)
            print("replica %d: %s:%d  db %s  log %s" % (i, host, port, lc.db_path(i), lc.log_path(i)))
        print("app: %s. Ctrl-C stops the cluster; `plugpay ledger status --config %s` inspects it."
              % (lc.config["app"], config_path), flush=True)

    def exited(lc):
        return dict(("replica %d" % i, (p.returncode, lc.log_path(i))) for i, p in lc.procs.items()
                    if p.poll() is not None)

    return run_until_stopped(args, cluster.LocalCluster(config_path), "replicas", started, exited, config, secrets,
                             gateway, external, events=True)


def run_until_stopped(args, processes, kind, started, exited, config, secrets, gateway, external, events=False):
    """Start ``processes`` (a context manager: ``started(processes)`` starts them), serve
    the gateway beside them until SIGTERM, Ctrl-C or ``--duration``, always stop them.
    ``exited(processes)``: {name: (exit code, log)} of those that ended: the first stops
    them all. ``events``: print the event log and serve the dashboard (either engine)."""
    stopping = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with processes:
            started(processes)
            try:
                asyncio.run(_serve(args, config, secrets, gateway, external, stopping,
                                   lambda: exited(processes), events))
            except KeyboardInterrupt:
                pass
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan processes
            print("stopping %s %s" % (kind, processes.running()), flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    print("stopped", flush=True)
    return 0


def _listening(args, config, config_path):
    """``(host, port, what)`` of every port ``ledger up`` will listen on."""
    if config is not None and args.base_port and args.base_port != config["replicas"][0]["port"]:
        raise UsageError("--base-port %d: %s already sets the replicas' ports (from %d)"
                         % (args.base_port, config_path, config["replicas"][0]["port"]))
    if config is not None:
        wanted = [(r["host"], r["port"], "replica %d, %s" % (i, config_path)) for i, r in enumerate(config["replicas"])]
    elif args.base_port:
        if args.base_port + args.n - 1 > 65535:
            raise UsageError("--base-port %d: the %d replicas need ports up to %d, beyond 65535"
                             % (args.base_port, args.n, args.base_port + args.n - 1))
        wanted = [("127.0.0.1", args.base_port + i, "replica %d, --base-port %d" % (i, args.base_port))
                  for i in range(args.n)]
    else:
        wanted = []  # free ports, chosen when the cluster is made
    if not args.no_gateway and not args.broker:
        wanted.append((args.mqtt_host, args.mqtt_port, "the MQTT broker, --mqtt-host/--mqtt-port"))
    return wanted


def _faucet_pubkey(directory):
    """The public key of the cluster's faucet key (``DIR/faucet.key``), created if missing."""
    from plugpay.host import faucet
    from plugpay.protocol import signing

    path = os.path.join(directory, faucet.KEY_FILE)
    if os.path.exists(path):
        return signing.public_key(faucet.load_key(path))
    os.makedirs(directory, exist_ok=True)
    pubkey = faucet.create_key(path)
    print("created the faucet key %s (mode 0600)" % os.path.abspath(path))
    return pubkey


def _gateway_options(args, config):
    """What the gateway serves besides the ledger: the faucet, when ``DIR/faucet.key`` is
    the ledger's faucet key, and RA registration, when the RA can be unlocked. None for
    applications other than the ledger, which take no ledger requests."""
    if config["app"] != APPS["ledger"]:
        print("gateway: off (the %s app takes no ledger requests)" % config["app"])
        return None
    from plugpay.host import faucet, ra
    from plugpay.protocol import signing
    from plugpay.tools import ra_cli

    options = {}
    key_path = os.path.join(args.dir, faucet.KEY_FILE)
    if os.path.exists(key_path):
        secret = faucet.load_key(key_path)
        if signing.public_key(secret).hex() == config["app_options"].get("faucet_pubkey"):
            options["faucet"] = faucet.Faucet(secret, args.faucet_max)
        else:
            print("faucet: off (%s is not the ledger's faucet key)" % key_path)
    if args.ra_dir and (args.key_file or args.passphrase_env):
        vault = ra.unseal(args.ra_dir, ra_cli.unlock_from_args(args))
        if vault.public_key.hex() not in config["app_options"].get("ra_pubkeys", {}).values():
            print("warning: the ledger does not trust RA epoch %d's key: it will refuse the accounts this RA signs"
                  % vault.epoch)
        options.update(ra_directory=args.ra_dir, ra_vault=vault)
    elif options.pop("faucet", None) is not None:
        print("faucet: off (faucet requests come sealed to the RA's key: give --ra-dir with --key-file or "
              "--passphrase-env)")
    return options


async def _serve(args, config, secrets, gateway_options, external, stopping, exited, events):
    """The MQTT broker and the gateway beside the ledger's processes, until told to stop."""
    import contextlib

    async with contextlib.AsyncExitStack() as services:
        if gateway_options is not None:
            import logging

            from plugpay.host import broker
            from plugpay.host.gateway import Gateway
            from plugpay.protocol import topics

            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            for noisy in ("amqtt", "transitions"):  # a line per connection and state change
                logging.getLogger(noisy).setLevel(logging.WARNING)
            if external:
                print("mqtt:    %s (external broker%s)" % (external.url, ", as user %s" % external.login[0]
                                                          if external.login else ""))
                endpoint = external
            else:
                embedded = await services.enter_async_context(broker.EmbeddedBroker(args.mqtt_host, args.mqtt_port))
                endpoint = broker.Endpoint(embedded.url)
                print("mqtt:    %s (embedded amqtt broker)" % embedded.url)
            await services.enter_async_context(Gateway(config, secrets, endpoint.host, endpoint.port,
                                                       mqtt_tls=endpoint.tls, mqtt_login=endpoint.login,
                                                       **gateway_options))
            faucet = gateway_options.get("faucet")
            vault = gateway_options.get("ra_vault")
            print("gateway: %s and %s ('+' is the device's client id)"
                  % (_route(topics.LEDGER_SUBMIT), _route(topics.LEDGER_QUERY)))
            if vault is not None:
                print("sealed:  %s (sealed to RA epoch %d's key)" % (_route(topics.HOST_SEALED), vault.epoch))
            print("faucet:  %s" % ("in sealed requests, at most %d per request" % faucet.limit if faucet else "off"))
            print("ra:      %s" % ("registration in sealed requests (RA in %s)" % gateway_options["ra_directory"]
                                   if "ra_directory" in gateway_options
                                   else "not served (give --ra-dir with --key-file or --passphrase-env)"),
                  flush=True)
        if events and config["app"] == APPS["ledger"]:  # events and the dashboard read the payment ledger
            from plugpay.tools import watch_cli

            live = await watch_cli.start_for_up(args, config, secrets)
            services.push_async_callback(live.stop)
        await _watch(exited, stopping, args.duration)


def _route(kind):
    from plugpay.protocol import topics

    return "%s -> %s" % (topics.subscription(kind), topics.subscription(topics.REPLY_TO[kind]))


async def _watch(exited, stopping, duration):
    """Until SIGTERM or ``duration`` seconds; a process that exits stops them all with an
    ``errors.Failure`` naming it and its log (exit code 1)."""
    deadline = None if duration is None else time.monotonic() + duration
    while not stopping and (deadline is None or time.monotonic() < deadline):
        for name, (code, log) in sorted(exited().items()):
            raise errors.Failure("%s %s; the cluster is stopped; see %s" % (name, _exit_status(code), log))
        await asyncio.sleep(0.2)


def _exit_status(code):
    if code >= 0:
        return "exited with %d" % code
    try:
        return "was killed by %s" % signal.Signals(-code).name
    except ValueError:
        return "was killed by signal %d" % -code


def _replica(args):
    import logging

    from plugpay.host import cluster, replica
    from plugpay.tools import ports

    config = cluster.load(args.config)[0]
    if args.id >= config["n"]:
        raise UsageError("--id %d: the cluster in %s has replicas 0..%d" % (args.id, args.config, config["n"] - 1))
    host, port = cluster.address(config, args.id)
    ports.check_free(host, port, "replica %d, %s" % (args.id, args.config))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    replica.serve(args.id, args.config)
    return 0


def _status(args):
    from plugpay.host import cluster, comet_testnet
    from plugpay.host.client import Client

    if comet_testnet.engine_of(args.config) == "cometbft":
        from plugpay.tools import ledger_comet

        return ledger_comet.status(args)
    config, secrets = cluster.load(args.config)

    async def ask():
        client = Client(config, secrets)
        await client.start(wait_for=config["n"], timeout=args.timeout / 2)
        try:
            return await client.status(args.timeout / 2)
        finally:
            await client.close()

    rows = asyncio.run(ask())
    if not any(rows):
        raise errors.Unreachable("no replica of the cluster in %s answered within %g s (%s)" % (
            args.config, args.timeout, ", ".join("%s:%d" % cluster.address(config, i) for i in range(config["n"]))))
    if args.json:
        keys = ["id", "view", "active", "height", "stable_checkpoint", "pending", "dropped"]
        print(json.dumps([dict(zip(keys, r), reachable=True) if r else {"id": i, "reachable": False}
                          for i, r in enumerate(rows)]))
        return 0
    print("%-8s %-22s %8s %6s %10s %8s %8s  %s" % ("replica", "address", "height", "view", "checkpoint",
                                                 "pending", "dropped", "state"))
    for i, r in enumerate(rows):
        addr = "%s:%d" % cluster.address(config, i)
        if r is None:
            print("%-8d %-22s %8s %6s %10s %8s %8s  %s" % (i, addr, "-", "-", "-", "-", "-", "unreachable"))
        else:
            state = "primary" if r[1] % config["n"] == i else "backup"
            if not r[2]:
                state = "view change"
            print("%-8d %-22s %8d %6d %10d %8d %8d  %s" % (i, addr, r[3], r[1], r[4], r[5], r[6], state))
    print("\n".join(STATUS_LEGEND))
    return 0 if all(rows) else 1


def _bench(args):
    from plugpay.host import cluster
    from plugpay.host.client import Client
    from plugpay.protocol import codec
    from plugpay.tools import load

    op = codec.dumps(["add", "bench", 1])
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-") as d:
        path = cluster.generate(d, sqlite_synchronous=args.sync)
        with cluster.LocalCluster(path) as lc:
            lc.start_all()
            lc.wait_listening()
            config, secrets = lc.config, lc.secrets

            async def measure():
                client = Client(config, secrets, lanes=max(args.lanes, int(args.rate * 2)))
                await client.start(wait_for=config["n"])
                try:
                    await load.saturated(client, itertools.repeat(op), 16, 0.5)  # warm-up
                    runs = {}
                    for name, coro in (("offered_%d" % args.rate,
                                        load.offered(client, [op] * int(args.rate * args.duration), args.rate)),
                                       ("saturation_%d_lanes" % args.lanes,
                                        load.saturated(client, itertools.repeat(op), args.lanes, args.duration))):
                        lat, elapsed, _ = await coro
                        runs[name] = {"confirmed": len(lat), "seconds": round(elapsed, 2),
                                      "confirmed_per_s": round(len(lat) / elapsed, 1),
                                      "p50_ms": round(load.percentile(lat, 50) * 1e3, 2),
                                      "p99_ms": round(load.percentile(lat, 99) * 1e3, 2)}
                    return runs, await client.status()
                finally:
                    await client.close()

            runs, status = asyncio.run(measure())
    report = {"replicas": config["n"], "app": "kv", "sqlite_synchronous": args.sync, "cpus": os.cpu_count(),
              "runs": runs, "blocks": [s[3] if s else None for s in status]}
    if args.json:
        print(json.dumps(report))
        return 0
    print("ledger bench: %d replica processes + 1 client process on %d CPUs, kv app, SQLite %s"
          % (config["n"], os.cpu_count(), args.sync))
    print("%-26s %10s %14s %9s %9s" % ("run", "confirmed", "confirmed/s", "p50 ms", "p99 ms"))
    for name, r in runs.items():
        print("%-26s %10d %14.1f %9.2f %9.2f" % (name, r["confirmed"], r["confirmed_per_s"], r["p50_ms"], r["p99_ms"]))
    print("blocks per replica: %s" % report["blocks"])
    return 0
