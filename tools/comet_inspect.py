"""``plugpay ledger tx|block|audit`` on a CometBFT network: the reads of ``ledger_inspect``
from the validators' RPC, each accepted on f+1 matching answers, as on PBFT.

``Quorum`` asks every validator and returns the answer f+1 of them give (at least one is
honest), or ``NoQuorum`` naming who answered what. A block's requests have no client or
timestamp on CometBFT: the client shows as ``-`` and ``ts`` is the request's index in the
block; the block's time is its header's (the validators' BFT time, to the second). A block's results are
checked against the results hash in the next block's header (``results_hash``, CometBFT's
RFC 6962 tree of each result's code and data), as PBFT's are against the digest its block
hash covers; the newest block, with no successor yet, shows the hash computed.
"""
import asyncio
import hashlib
import re

from plugpay.host import comet_testnet
from plugpay.host.client import NoQuorum
from plugpay.host.comet_rpc import Rpc, RpcError, b64, parse_block
from plugpay.tools.ledger_inspect import Block, InspectError, LedgerReader, Request

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def _uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _merkle(items):
    """CometBFT's ``merkle.HashFromByteSlices`` (RFC 6962)."""
    if not items:
        return hashlib.sha256(b"").digest()
    if len(items) == 1:
        return hashlib.sha256(b"\x00" + items[0]).digest()
    split = 1 << ((len(items) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _merkle(items[:split]) + _merkle(items[split:])).digest()


def results_hash(results):
    """The ``last_results_hash`` the next header carries for ``results`` (ExecTxResult
    dicts): the tree of each one's deterministic part, protobuf of code, data and gas."""
    leaves = []
    for r in results:
        code, data = int(r.get("code") or 0), b64(r.get("data"))
        wanted, used = int(r.get("gas_wanted") or 0), int(r.get("gas_used") or 0)
        leaf = b""
        leaf += b"\x08" + _uvarint(code) if code else b""
        leaf += b"\x12" + _uvarint(len(data)) + data if data else b""
        leaf += b"\x28" + _uvarint(wanted & (1 << 64) - 1) if wanted else b""
        leaf += b"\x30" + _uvarint(used & (1 << 64) - 1) if used else b""
        leaves.append(leaf)
    return _merkle(leaves)


def block_time(text):
    """A header's RFC 3339 time (UTC, CometBFT writes nanoseconds) to the second, as the
    event log writes times; ``ValueError`` for anything else."""
    if type(text) is not str or not TIME.match(text):
        raise ValueError("a block time that is not RFC 3339 UTC: %r" % (text,))
    return text[:19] + "Z"


class Quorum:
    """Reads from every validator of ``config``, accepted on f+1 matching answers."""

    def __init__(self, config):
        self.n = config["n"]
        self.f = config["f"]
        self.rpcs = [Rpc(node["rpc"], connections=4) for node in config["nodes"]]
        self.conns = {}

    async def connect(self, timeout):
        """Note which validators answer at all (``conns``)."""
        async def probe(i):
            try:
                await self.rpcs[i].call("health", timeout)
                self.conns[i] = True
            except RpcError:
                pass
        await asyncio.gather(*(probe(i) for i in range(self.n)))

    async def close(self):
        for rpc in self.rpcs:
            await rpc.close()

    async def _agreed(self, kind, ask, timeout):
        """The answer f+1 validators give to ``ask(rpc)``; ``NoQuorum`` otherwise."""
        async def one(i):
            try:
                return i, await ask(self.rpcs[i], timeout)
            except (RpcError, KeyError, TypeError, ValueError):
                return i, None

        answers, votes = {}, {}
        tasks = [asyncio.ensure_future(one(i)) for i in range(self.n)]
        try:
            for done in asyncio.as_completed(tasks, timeout=timeout):
                i, answer = await done
                if answer is None:
                    continue
                answers[i] = answer
                votes[answer] = votes.get(answer, 0) + 1
                if votes[answer] >= self.f + 1:
                    return answer
        except asyncio.TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
        raise NoQuorum(kind, answers)

    async def query(self, op, timeout=5.0):
        async def ask(rpc, timeout):
            answer = await rpc.call("abci_query", timeout, path="/ledger", data=op.hex())
            return b64(answer["response"].get("value"))
        return await self._agreed("query", ask, timeout)

    async def height(self, timeout=1.0):
        """The newest height f+1 validators report holding."""
        heights = {}

        async def one(i):
            try:
                status = await self.rpcs[i].call("status", timeout)
                heights[i] = int(status["sync_info"]["latest_block_height"])
            except (RpcError, KeyError, TypeError, ValueError):
                pass
        await asyncio.gather(*(one(i) for i in range(self.n)))
        ordered = sorted(heights.values(), reverse=True)
        if len(ordered) <= self.f:
            raise NoQuorum("the height", heights)
        return ordered[self.f]

    async def block(self, height, timeout=5.0):
        """``(hash, prev, txs, results, app hash, results hash)`` of block ``height``,
        the results hash from block height+1's header when there is one (else None);
        None if f+1 validators do not hold the block."""
        async def ask(rpc, timeout):
            try:
                block = await rpc.call("block", timeout, height=str(height))
            except RpcError:
                return ("missing",)
            results = await rpc.call("block_results", timeout, height=str(height))
            _, txs, tx_results = parse_block(block, results)
            try:
                later = (await rpc.call("header", timeout, height=str(height + 1)))["header"]["last_results_hash"]
            except RpcError:
                later = None
            datas = tuple(b64(r.get("data")) for r in tx_results)
            header = block["block"]["header"]
            return (bytes.fromhex(block["block_id"]["hash"]), bytes.fromhex(header["last_block_id"]["hash"]),
                    tuple(txs), datas, b64(results.get("app_hash")), results_hash(tx_results),
                    None if later is None else bytes.fromhex(later), block_time(header["time"]))
        record = await self._agreed("block", ask, timeout)
        return None if record == ("missing",) else record


class CometReader(LedgerReader):
    """``LedgerReader`` with CometBFT's blocks."""

    async def block(self, height, tip):
        what = "block %d" % height
        record = await self._agreed(what, self.client.block(height, self.timeout))
        if record is None:
            raise InspectError("%s: f+1 validators say they do not have it, though f+1 report height %d" % (what, tip))
        block_hash, prev, txs, datas, app_hash, computed, committed, time = record
        if committed is not None and committed != computed:
            raise InspectError("%s: its results do not hash to the results hash of block %d" % (what, height + 1))
        requests = [Request("-", i, tx) for i, tx in enumerate(txs)]
        results = dict((("-", i), data) for i, data in enumerate(datas))
        return Block(height, block_hash, prev, requests, computed, app_hash, results, time)


async def open_reader(config_path, timeout):
    """A ``CometReader`` and its ``Quorum`` (close it after); refused at once if fewer
    than f+1 validators answer."""
    config = comet_testnet.load(config_path)
    quorum = Quorum(config)
    await quorum.connect(timeout / 2)
    if len(quorum.conns) < config["f"] + 1:
        await quorum.close()
        silent = [str(i) for i in range(config["n"]) if i not in quorum.conns]
        raise InspectError("cannot reach the network of %s: validators %s did not answer" % (config_path,
                                                                                          ", ".join(silent)))
    return CometReader(quorum, timeout), quorum
