"""The ledger through a CometBFT network: the PBFT client's interface (``submit``,
``query``, ``height``) for the gateway, the benchmarks and the tests.

A client submits through one node, its operator's own (``node``), and trusts that node as
any CometBFT client trusts its RPC node: a block it reports was committed by 2f+1
validators. ``submit`` broadcasts with ``broadcast_tx_sync`` and answers exactly as the PBFT
client does, with the ledger's encoded ``Result``: the CheckTx refusal's when the node's
application refused the request before ordering, else the ``ExecTxResult`` of the block
that carries it, learned from the node's stream of new blocks. Blocks missed while the
stream was down are fetched when it is back, so no result is lost to a reconnection. A
request the node's mempool has seen already (a device's re-send) is checked again by the
node's application (``check_tx``), which refuses it as the ledger would a replay
(``DUPLICATE``), or it is still waiting in the mempool for its block.
"""
import asyncio
import base64
import collections

from plugpay.host.comet_rpc import Rpc, RpcError, b64, parse_block
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

LEDGER_PATH = "/ledger"
IN_CACHE = "tx already exists in cache"
TOO_LARGE = "tx too large"


class Unavailable(TimeoutError):
    """The node did not answer, or could not take the request now (a full mempool)."""


class CometClient:
    """``async with CometClient(config) as c: result = await c.submit(op)``."""

    def __init__(self, config, node=0, connections=16):
        self.config = config
        self.n = config["n"]
        self.f = config["f"]
        self.node = node
        self.rpc = Rpc(config["nodes"][node]["rpc"], connections)
        self.waiting = {}  # SHA-256 of a request -> future of its encoded Result
        self.stats = collections.Counter()
        self.conns = {}  # the node, while its block stream is up (the PBFT client's name)
        self.closed = None
        self.last_height = None
        self.follower = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def start(self, timeout=5.0):
        """Follow the node's blocks; wait up to ``timeout`` for the stream to be up."""
        loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()
        self.follower = loop.create_task(self._follow())
        deadline = loop.time() + timeout
        while self.node not in self.conns and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def close(self):
        self.closed.set()
        self.follower.cancel()
        await asyncio.gather(self.follower, return_exceptions=True)
        await self.rpc.close()

    # -- results from blocks ---------------------------------------------------------------

    async def _follow(self):
        delay = 0.05
        while not self.closed.is_set():
            try:
                async for block in self.rpc.blocks():
                    if block is None:  # subscribed: fetch what came while the stream was down
                        await self._catch_up()
                        self.conns[self.node] = True
                        delay = 0.05
                    else:
                        self._deliver(*block)
            except RpcError:
                self.stats["stream_errors"] += 1
            self.conns.pop(self.node, None)
            try:
                await asyncio.wait_for(self.closed.wait(), delay)
            except asyncio.TimeoutError:
                delay = min(1.0, delay * 2)

    async def _catch_up(self):
        tip = await self.latest_height()
        if self.last_height is None:
            self.last_height = tip
            return
        for height in range(self.last_height + 1, tip + 1):
            self._deliver(*await self.block_at(height))
            self.stats["blocks_fetched"] += 1

    async def block_at(self, height):
        """``(height, txs, ExecTxResult dicts)`` of block ``height`` from the node."""
        block, results = await asyncio.gather(self.rpc.call("block", height=str(height)),
                                              self.rpc.call("block_results", height=str(height)))
        return parse_block(block, results)

    def _deliver(self, height, txs, results):
        if self.last_height is not None and height <= self.last_height:
            return
        self.last_height = height
        for tx, result in zip(txs, results):
            future = self.waiting.get(sha256(tx))
            if future is None or future.done():
                continue
            try:
                future.set_result(_result_bytes(sha256(tx), result))
            except RpcError as e:  # the node's answer for this request is malformed: no result
                future.set_exception(Unavailable(str(e)))

    # -- the PBFT client's interface ---------------------------------------------------------

    async def submit(self, op, timeout=10.0):
        """Have ``op`` ordered and applied; its encoded ``Result``. Raises ``TimeoutError``
        after ``timeout`` seconds (the outcome is then unknown)."""
        digest = sha256(op)
        future = self.waiting.get(digest)
        owner = future is None
        if owner:
            future = self.waiting[digest] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                if owner:
                    await self._broadcast(op, digest, future)
                return await asyncio.shield(future)
        except Unavailable:
            self.stats["unavailable"] += 1
            raise
        except TimeoutError:
            self.stats["timeouts"] += 1
            raise TimeoutError("no result within %.1f s" % timeout) from None
        finally:
            if owner:
                del self.waiting[digest]

    async def _broadcast(self, op, digest, future):
        try:
            checked = await self.rpc.call("broadcast_tx_sync", tx=base64.b64encode(op).decode())
        except RpcError as e:
            if TOO_LARGE in str(e).lower():  # CometBFT's own limit, above the ledger's: the ledger's reason
                if not future.done():
                    future.set_result(L.Result(digest, False, L.TOO_LARGE, str(e)[:L.MAX_DETAIL_BYTES], None).encode())
                return
            if IN_CACHE not in str(e):
                raise Unavailable(str(e)) from None
            self.stats["already_seen"] += 1
            try:  # the node's application checks it again, as the PBFT ledger executes a replay again
                checked = (await self.rpc.call("check_tx", tx=base64.b64encode(op).decode()))
            except RpcError:
                return
            if checked.get("code") and not future.done():
                future.set_result(_result_bytes(digest, checked))
            return  # else it waits in the mempool: its block will tell
        if checked.get("code"):
            self.stats["refused_before_ordering"] += 1
            if not future.done():
                future.set_result(_result_bytes(digest, checked, hex_data=True))

    async def query(self, op, timeout=5.0):
        """A ledger query, answered by the node's application: the encoded ``Result``."""
        answer = await self.rpc.call("abci_query", timeout, path=LEDGER_PATH, data=op.hex())
        try:
            return b64(answer["response"].get("value"))
        except (KeyError, AttributeError):
            raise RpcError("an abci_query answer without a response") from None

    async def latest_height(self, timeout=5.0):
        answer = await self.rpc.call("status", timeout)
        try:
            return int(answer["sync_info"]["latest_block_height"])
        except (KeyError, TypeError, ValueError):
            raise RpcError("a status answer without the latest height") from None

    async def height(self, timeout=1.0):
        """The newest block the node holds (committed by 2f+1 validators)."""
        try:
            return await self.latest_height(timeout)
        except RpcError as e:
            raise Unavailable(str(e)) from None


def _result_bytes(digest, result, hex_data=False):
    """The encoded ``Result`` an ``ExecTxResult`` (``data`` in base64) or a broadcast's
    CheckTx answer (in hex) carries, checked to be one for request ``digest``; one made
    from its code and log if it carries none (a refusal of CometBFT's own)."""
    if not isinstance(result, dict):
        raise RpcError("a transaction result that is no object")
    try:
        data = bytes.fromhex(result.get("data") or "") if hex_data else b64(result.get("data"))
    except (TypeError, ValueError):
        raise RpcError("a malformed hex value in the node's answer") from None
    if data:
        try:
            decoded = L.Result.decode(data)
        except DecodeError:
            decoded = None
        if decoded is None or decoded.request_digest != digest:
            raise RpcError("the node's result is no ledger result for this request")
        return data
    code = result.get("code") or 0
    if not code:
        raise RpcError("an accepted transaction without the ledger's result")
    detail = str(result.get("log") or "")[:L.MAX_DETAIL_BYTES]
    return L.Result(digest, False, int(code) & 0xFFFF, detail, None).encode()
