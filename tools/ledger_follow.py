"""Following a running ledger: its committed blocks in height order, and its replicas' health.

``LedgerFeed`` is the one follower behind ``plugpay ledger up``'s event lines, ``plugpay
ledger watch`` and the dashboard, on either engine: it polls the cluster for its height,
fetches every new block (each accepted on f+1 matching answers and checked for shape by
``ledger_inspect.LedgerReader``, or ``comet_inspect.CometReader`` on CometBFT, as ``ledger
block`` does), turns it into events (``host.events``) and hands each block to its
listeners in order; beside that it asks every replica (or validator) for its status at a
steady pace. A cluster that stops answering is reported once, and the feed carries on from
where it was when it answers again.
"""
import asyncio
import collections

from plugpay.host import cluster
from plugpay.host import events as E
from plugpay.host.client import Client
from plugpay.tools import errors, ledger_inspect

POLL_S = 0.05  # between height polls while nothing new has committed: a status round, cheap
STATUS_S = 0.5  # between replica status rounds
RETRY_S = 1.0  # after the cluster failed to answer
CATCH_UP_BLOCKS = 256  # blocks fetched before they are handed on, when far behind
STATUS_KEYS = ("id", "view", "active", "height", "stable_checkpoint", "pending", "dropped")

Committed = collections.namedtuple("Committed", "height hash time requests events live")


def replica_rows(config, rows):
    """Each replica's status as a JSON object (``STATUS_KEYS`` with ``address``, ``role``
    and ``reachable``), from ``Client.status`` rows; None where a replica did not answer."""
    out = []
    for i, row in enumerate(rows):
        host, port = cluster.address(config, i)
        item = {"id": i, "address": "%s:%d" % (host, port), "reachable": row is not None}
        if type(row) is list and len(row) == len(STATUS_KEYS):
            item.update(zip(STATUS_KEYS, row))
            item["id"] = i
            item["role"] = "view change" if not row[2] else ("primary" if row[1] % config["n"] == i else "backup")
        else:
            item["reachable"] = False
            item["role"] = "unreachable"
        out.append(item)
    return out


class _PbftSource:
    """Our PBFT replicas: one authenticated client, its reader, every replica's status."""

    def __init__(self, config, secrets, timeout):
        self.config = config
        self.client = Client(config, secrets)
        self.reader = ledger_inspect.LedgerReader(self.client, timeout)
        self.timeout = timeout

    async def open(self):
        await self.client.start(wait_for=self.config["n"], timeout=self.timeout / 2)

    async def rows(self):
        return replica_rows(self.config, await self.client.status(STATUS_S * 2))

    async def close(self):
        await self.client.close()


class _CometSource:
    """CometBFT validators: their RPC, a reader, and each one's height and mempool as the
    replicas' rows (CometBFT has no view or checkpoint to show)."""

    def __init__(self, config, timeout):
        from plugpay.tools import comet_inspect

        self.config = config
        self.quorum = comet_inspect.Quorum(config)
        self.reader = comet_inspect.CometReader(self.quorum, timeout)
        self.timeout = timeout

    async def open(self):
        await self.quorum.connect(self.timeout / 2)  # as the PBFT client's start: see who answers

    async def rows(self):
        from plugpay.host.comet_rpc import RpcError

        async def one(i, node):
            rpc = self.quorum.rpcs[i]
            try:
                status, mempool = await asyncio.gather(rpc.call("status", STATUS_S * 2),
                                                       rpc.call("num_unconfirmed_txs", STATUS_S * 2))
                sync = status["sync_info"]
                return {"id": i, "address": node["rpc"], "reachable": True, "height": int(sync["latest_block_height"]),
                        "pending": int(mempool["n_txs"]), "role": "catching up" if sync["catching_up"] else "validator"}
            except (RpcError, KeyError, TypeError, ValueError, asyncio.TimeoutError):  # silent, or an answer we cannot read
                return {"id": i, "address": node["rpc"], "reachable": False, "role": "unreachable"}
        return list(await asyncio.gather(*(one(i, node) for i, node in enumerate(self.config["nodes"]))))

    async def close(self):
        await self.quorum.close()


def source(config, secrets, timeout):
    """What the feed reads: ``config`` is a PBFT cluster's (with ``secrets``) or a CometBFT
    network's (``host.comet_testnet.load``)."""
    if config.get("engine") == "cometbft":
        return _CometSource(config, timeout)
    return _PbftSource(config, secrets, timeout)


class LedgerFeed:
    """``await feed.run(start)`` follows the cluster of ``config`` from block ``start``
    (None: from the block after the tip at start) until cancelled. Listeners get
    ``on_block(Committed)`` per block in height order (``live`` is False for blocks that
    were committed before the feed started) and ``on_replicas(rows)`` per status round;
    ``on_problem(text)`` once when the cluster stops answering (and ``on_problem(None)``
    when it answers again)."""

    def __init__(self, config, secrets, listeners, timeout=3.0, status=True):
        self.config = config
        self.secrets = secrets
        self.listeners = list(listeners)
        self.timeout = timeout
        self.status = status
        self.next_height = None
        self.tip = 0
        self.problem = None

    def _tell(self, method, *args):
        for listener in self.listeners:
            handler = getattr(listener, method, None)
            if handler is not None:
                handler(*args)

    def _report(self, problem):
        if problem != self.problem:
            self.problem = problem
            self._tell("on_problem", problem)

    async def run(self, start=None):
        ledger = source(self.config, self.secrets, self.timeout)
        try:
            await ledger.open()
            tasks = [asyncio.ensure_future(self._blocks(ledger.reader, start))]
            if self.status:
                tasks.append(asyncio.ensure_future(self._replicas(ledger)))
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await ledger.close()

    async def _replicas(self, ledger):
        while True:
            self._tell("on_replicas", await ledger.rows())
            await asyncio.sleep(STATUS_S)

    async def _blocks(self, reader, start):
        live_from = None
        while True:
            try:
                tip = await reader.tip()
                if live_from is None:
                    live_from = tip + 1
                    self.next_height = live_from if start is None else max(1, start)
                self.tip = tip
                if tip < self.next_height:
                    self._report(None)
                    await asyncio.sleep(POLL_S)
                    continue
                heights = list(range(self.next_height, min(tip, self.next_height + CATCH_UP_BLOCKS - 1) + 1))
                blocks = await ledger_inspect.in_chunks(lambda h: reader.block(h, tip), heights)
            except errors.CommandError as e:  # no f+1 answers (Unreachable), or records that do not check
                self._report("the ledger does not answer: %s" % e)
                await asyncio.sleep(RETRY_S)
                continue
            self._report(None)
            for block in blocks:
                self._tell("on_block", committed(block, block.height >= live_from))
                self.next_height = block.height + 1


def committed(block, live):
    """A ``ledger_inspect.Block`` as a ``Committed`` with its events: times are the
    block's own where it has one (CometBFT), else its requests' timestamps (PBFT)."""
    requests = [(r.client, r.ts, r.raw) for r in block.requests]
    newest = max((r.ts for r in block.requests), default=None)
    time = block.time or (None if newest is None else E.iso_time(newest))
    return Committed(block.height, block.hash.hex(), time, len(requests),
                     E.block_events(block.height, requests, block.results, block.time), live)
