"""The payment ledger as a CometBFT ABCI 2.0 application, one process per validator.

Run as ``python -m plugpay.host.abci_app --home NODE_HOME`` (``plugpay ledger up --engine
cometbft`` and ``plugpay ledger validator`` do): it reads ``NODE_HOME/config/plugpay.json``
(the ABCI address, the ledger's options, SQLite durability), keeps the ledger in
``NODE_HOME/data/plugpay-ledger.sqlite`` and serves CometBFT's four connections
(``host.abci_server``).

The split of the work:

* **CheckTx** (mempool) settles what can be settled before ordering (``Ledger.check``):
  size, format, every signature, and the refusals no later block undoes. A refusal is
  answered with the ledger's own ``Result`` (reason and text) in ``data``, and the
  request never reaches a block. The signatures that verified are remembered by the
  request's SHA-256, in a bounded cache.
* **FinalizeBlock** applies the decided block (``Ledger.apply_block``), verifying only the
  signatures the cache does not vouch for on this node (a request that came in a block
  before its gossip did). Each result is an ``ExecTxResult`` with the reason as ``code``
  and the encoded ``Result`` as ``data``; ``app_hash`` is the ledger's state digest.
* **Commit** commits the block's state, and its height and app hash, in one SQLite
  transaction. Until then nothing of the block is durable: after a crash Info reports the
  last committed height and CometBFT replays the blocks after it, so no committed request
  is lost and none is applied twice.

A request that passed CheckTx once is decided by a block: a recheck answers OK without
looking (and the testnet turns rechecks off), so no request is ever dropped silently from a
mempool while its sender waits for a result. PrepareProposal keeps the mempool's order;
ProcessProposal accepts every proposal, since the ledger refuses whatever a block carries
that it must, deterministically, with a reason. Snapshots are not offered: a new node
replays the chain.
"""
import argparse
import asyncio
import collections
import json
import logging
import os
import signal
import sqlite3
import sys

from plugpay.host import abci_wire as W
from plugpay.host.abci_server import AbciServer
from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256

APP_VERSION = 1
MAX_TRUSTED = 20000  # requests whose verified signatures are remembered (a mempool's worth)
CONFIG = "plugpay.json"
DATABASE = "plugpay-ledger.sqlite"
RECHECK = W.enum("CheckTxType", "RECHECK")
ACCEPT = W.enum("ResponseProcessProposal.ProposalStatus", "ACCEPT")
VOTE_ACCEPT = W.enum("ResponseVerifyVoteExtension.VerifyStatus", "ACCEPT")
SNAPSHOT_REJECT = W.enum("ResponseOfferSnapshot.Result", "REJECT")
CHUNK_ABORT = W.enum("ResponseApplySnapshotChunk.Result", "ABORT")
log = logging.getLogger("plugpay.abci_app")


class AppError(Exception):
    """CometBFT asked for something that contradicts the application's state."""


def open_database(path, synchronous="FULL"):
    """SQLite in WAL mode; FULL also survives power loss, NORMAL only a process crash."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError("sqlite_synchronous must be FULL or NORMAL, got %r" % (synchronous,))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=" + synchronous)
    conn.execute("PRAGMA cache_size=-65536")
    return conn


class LedgerApp:
    """The ABCI handlers over one ledger: ``method(request, response)``."""

    def __init__(self, conn, ledger):
        self.conn = conn
        self.ledger = ledger
        conn.execute("CREATE TABLE IF NOT EXISTS abci_blocks (height INTEGER PRIMARY KEY, app_hash BLOB NOT NULL,"
                     " txs INTEGER NOT NULL, applied INTEGER NOT NULL)")
        conn.commit()
        row = conn.execute("SELECT height, app_hash FROM abci_blocks ORDER BY height DESC LIMIT 1").fetchone()
        self.height, self.app_hash = row if row else (0, ledger.state_digest())
        self.finalized = None  # (height, app hash, txs, applied) of the block awaiting Commit
        self.trusted = collections.OrderedDict()  # request SHA-256 -> its verified signatures
        self.stats = collections.Counter()
        self.server = None  # the AbciServer serving this app: its counters go into /status

    # -- connection and state --------------------------------------------------------

    def info(self, request, response):
        response.data = "plugpay-ledger"
        response.version = "plugpay ledger on ABCI 2.0"
        response.app_version = APP_VERSION
        response.last_block_height = self.height
        response.last_block_app_hash = self.app_hash

    def init_chain(self, request, response):
        if self.height != 0 or self.finalized is not None:
            raise AppError("InitChain for a ledger that holds blocks up to height %d" % self.height)
        response.app_hash = self.ledger.state_digest()

    def query(self, request, response):
        """Path ``/ledger`` (or none): ``data`` is a ``ledger_ops.Query``, ``value`` its
        ``Result``. Path ``/status``: this node's heights and counters, as JSON."""
        response.height = self.height
        if request.path in ("", "/ledger"):
            response.value = self.ledger.query(request.data)
        elif request.path == "/status":
            status = {"height": self.height, "app_hash": self.app_hash.hex(),
                      "finalized": None if self.finalized is None else self.finalized[0],
                      "trusted": len(self.trusted), "stats": dict(self.stats),
                      "rejections": self.ledger.rejections()}
            if self.server is not None:
                status.update(requests=dict(self.server.stats),
                              busy_seconds=dict((k, round(v, 3)) for k, v in self.server.busy.items()))
            response.value = json.dumps(status, sort_keys=True).encode()
        else:
            response.code = L.NOT_FOUND
            response.log = "unknown query path %r: use /ledger or /status" % request.path

    # -- mempool ---------------------------------------------------------------------

    def check_tx(self, request, response):
        if request.type == RECHECK:
            return
        tx = request.tx
        height = self.finalized[0] if self.finalized is not None else self.height
        check = self.ledger.check(tx, height + 1)
        if check.reason != L.OK:
            self.stats["check_refused"] += 1
            response.code = check.reason
            response.data = check.result
            response.log = "%s: %s" % (L.reason_name(check.reason), check.detail)
            return
        self.stats["check_passed"] += 1
        if check.signatures:
            self.trusted[sha256(tx)] = check.signatures
            if len(self.trusted) > MAX_TRUSTED:
                self.trusted.popitem(last=False)

    # -- consensus -------------------------------------------------------------------

    def prepare_proposal(self, request, response):
        room = request.max_tx_bytes
        for tx in request.txs:
            if len(tx) > room:
                break
            room -= len(tx)
            response.txs.append(tx)

    def process_proposal(self, request, response):
        response.status = ACCEPT

    def extend_vote(self, request, response):
        pass

    def verify_vote_extension(self, request, response):
        response.status = VOTE_ACCEPT

    def finalize_block(self, request, response):
        if self.finalized is not None:  # CometBFT restarted between FinalizeBlock and Commit
            self._discard_finalized()
        if request.height != self.height + 1:
            raise AppError("FinalizeBlock of height %d, but the ledger is at %d" % (request.height, self.height))
        txs = list(request.txs)
        applied = self.ledger.apply_block(request.height, txs, self.trusted)
        for tx in txs:
            if self.trusted.pop(sha256(tx), None) is not None:
                self.stats["signatures_trusted"] += 1
        for reason, result in zip(applied.reasons, applied.results):
            out = response.tx_results.add()
            out.code = reason
            out.data = result
        response.app_hash = applied.digest
        self.finalized = (request.height, applied.digest, len(txs), applied.reasons.count(L.OK))

    def commit(self, request, response):
        if self.finalized is None:
            raise AppError("Commit without a finalized block")
        self.conn.execute("INSERT INTO abci_blocks VALUES (?, ?, ?, ?)", self.finalized)
        self.conn.commit()
        self.height, self.app_hash = self.finalized[:2]
        self.finalized = None
        response.retain_height = 0  # keep every block: `plugpay ledger block` reads them

    def _discard_finalized(self):
        self.conn.rollback()
        self.ledger.reload()
        self.finalized = None
        self.stats["discarded_uncommitted"] += 1

    # -- state sync: not offered ---------------------------------------------------------

    def list_snapshots(self, request, response):
        pass

    def offer_snapshot(self, request, response):
        response.result = SNAPSHOT_REJECT

    def load_snapshot_chunk(self, request, response):
        pass

    def apply_snapshot_chunk(self, request, response):
        response.result = CHUNK_ABORT


def load_config(home):
    """``NODE_HOME/config/plugpay.json``: {"abci", "app_options", "sqlite_synchronous"}."""
    path = os.path.join(home, "config", CONFIG)
    with open(path) as f:
        config = json.load(f)
    for key in ("abci", "app_options"):
        if key not in config:
            raise ValueError("%s has no %r" % (path, key))
    return config


def open_app(home):
    config = load_config(home)
    os.makedirs(os.path.join(home, "data"), exist_ok=True)
    conn = open_database(os.path.join(home, "data", DATABASE), config.get("sqlite_synchronous", "FULL"))
    ledger = Ledger(conn, **config["app_options"])
    conn.commit()
    return LedgerApp(conn, ledger), config["abci"]


def serve(home, make_app=open_app):
    """Serve one node's application until SIGTERM or SIGINT. ``make_app(home)`` gives
    (app, address): tests pass one that injects a crash."""
    app, address = make_app(home)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = app.server = await AbciServer(app).start(address)
        log.info("ABCI application on %s, height %d, app hash %s", address, app.height, app.app_hash.hex())
        try:
            await stop.wait()
        finally:
            await server.close()
            app.conn.close()  # a block finalized but not committed is rolled back: CometBFT replays it
            log.info("stopped at height %d; %s; connections %s", app.height, dict(app.stats), dict(server.stats))

    asyncio.run(main())


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m plugpay.host.abci_app",
                                description="the plugpay ledger as the ABCI application of one CometBFT node")
    p.add_argument("--home", required=True, help="the node's CometBFT home (config/plugpay.json, data/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(args.home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
