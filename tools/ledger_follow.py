"""Following a running ledger: its committed blocks in height order, and its replicas' health.

``LedgerFeed`` is the one follower behind ``plugpay ledger up``'s event lines, ``plugpay
ledger watch`` and the dashboard: it polls the cluster for its height, fetches every new
block (each accepted on f+1 matching answers and checked for shape by
``ledger_inspect.LedgerReader``, as ``ledger block`` does), turns it into events
(``host.events``) and hands each block to its listeners in order; beside that it asks
every replica for its status at a steady pace. A cluster that stops answering is reported
once, and the feed carries on from where it was when it answers again.
"""
import asyncio
import collections

from plugpay.host import cluster
from plugpay.host import events as E
from plugpay.host.client import Client
from plugpay.tools import ledger_inspect

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
        client = Client(self.config, self.secrets)
        await client.start(wait_for=self.config["n"], timeout=self.timeout / 2)
        reader = ledger_inspect.LedgerReader(client, self.timeout)
        tasks = [asyncio.ensure_future(self._blocks(reader, start))]
        if self.status:
            tasks.append(asyncio.ensure_future(self._replicas(client)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _replicas(self, client):
        while True:
            self._tell("on_replicas", replica_rows(self.config, await client.status(STATUS_S * 2)))
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
            except ledger_inspect.InspectError as e:
                self._report("the ledger does not answer: %s" % e)
                await asyncio.sleep(RETRY_S)
                continue
            self._report(None)
            for block in blocks:
                self._tell("on_block", committed(block, block.height >= live_from))
                self.next_height = block.height + 1


def committed(block, live):
    """A ``ledger_inspect.Block`` as a ``Committed`` with its events."""
    requests = [(r.client, r.ts, r.raw) for r in block.requests]
    newest = max((r.ts for r in block.requests), default=None)
    return Committed(block.height, block.hash.hex(), None if newest is None else E.iso_time(newest),
                     len(requests), E.block_events(block.height, requests, block.results), live)
