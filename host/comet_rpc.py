"""JSON-RPC to one CometBFT node over websockets: calls, and the stream of new blocks.

CometBFT serves every RPC method on its ``/websocket`` endpoint too, answering a
connection's calls one after the other; ``Rpc`` keeps a small pool of connections, each
with one call in flight, so calls run side by side (a ``broadcast_tx_sync`` waits for the
node's CheckTx). ``blocks()`` subscribes to ``tm.event='NewBlock'`` on a connection of its
own: each event carries the block's transactions and their ``ExecTxResult``s, so a client
learns every result with one message per block and no polling.

Whatever a node answers is parsed defensively: a malformed answer is an ``RpcError``.
"""
import asyncio
import base64
import itertools
import json

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

MAX_MESSAGE = 64 << 20
CONNECT_TIMEOUT = 5.0


class RpcError(Exception):
    """The node refused a call (``message`` is its error text), or could not be reached."""


def websocket_url(rpc):
    """``http://host:port`` (a ``cluster.json`` node's ``rpc``) as its websocket endpoint."""
    scheme, sep, rest = rpc.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError("an RPC address is http://HOST:PORT, got %r" % rpc)
    return "%s://%s/websocket" % ("wss" if scheme == "https" else "ws", rest.rstrip("/"))


def b64(value):
    """A byte string the node gave in base64, or ``RpcError``."""
    if value is None:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (TypeError, ValueError):
        raise RpcError("a malformed base64 value in the node's answer") from None


async def _open(url):
    return await asyncio.wait_for(connect(url, max_size=MAX_MESSAGE, compression=None, open_timeout=CONNECT_TIMEOUT),
                                  CONNECT_TIMEOUT)


class Rpc:
    """Calls to one node: ``await rpc.call(method, **params)`` gives the ``result``."""

    def __init__(self, rpc, connections=16):
        self.url = websocket_url(rpc)
        self.idle = asyncio.Queue()
        for _ in range(connections):
            self.idle.put_nowait(None)  # a slot; the connection opens on first use
        self.ids = itertools.count(1)
        self.open = set()

    async def call(self, method, timeout=10.0, **params):
        ws = await self.idle.get()
        try:
            if ws is None:
                ws = await _open(self.url)
                self.open.add(ws)
            ident = next(self.ids)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params}))
            while True:
                answer = _decode(await asyncio.wait_for(ws.recv(), timeout))
                if answer.get("id") == ident:
                    break
        except (OSError, asyncio.TimeoutError, WebSocketException) as e:
            if ws is not None:
                self.open.discard(ws)
                await ws.close()
            ws = None
            raise RpcError("%s to %s: %s" % (method, self.url, e.__class__.__name__)) from None
        finally:
            self.idle.put_nowait(ws)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise RpcError(str(error.get("data") or error.get("message") or answer["error"]))
        if not isinstance(answer.get("result"), dict):
            raise RpcError("%s: an answer without a result" % method)
        return answer["result"]

    async def close(self):
        for ws in list(self.open):
            await ws.close()
        self.open.clear()

    async def blocks(self):
        """None once subscribed, then every new block as ``(height, [tx bytes],
        [ExecTxResult dicts])``, until the connection ends (``RpcError``)."""
        try:
            async with await _open(self.url) as ws:
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "subscribe",
                                          "params": {"query": "tm.event='NewBlock'"}}))
                async for text in ws:
                    event = _decode(text)
                    if "error" in event:
                        raise RpcError("subscription ended: %s" % (event["error"],))
                    if event.get("result") == {}:
                        yield None
                        continue
                    block = parse_new_block(event.get("result"))
                    if block is not None:
                        yield block
        except (OSError, asyncio.TimeoutError, WebSocketException) as e:
            raise RpcError("the block stream of %s ended: %s" % (self.url, e.__class__.__name__)) from None


def _decode(text):
    try:
        answer = json.loads(text)
    except (TypeError, ValueError):
        raise RpcError("an answer that is no JSON") from None
    if not isinstance(answer, dict):
        raise RpcError("an answer that is no JSON object")
    return answer


def parse_new_block(result):
    """``(height, txs, results)`` of a NewBlock event's result, or None for another message
    (the subscription's own answer)."""
    data = result.get("data") if isinstance(result, dict) else None
    if not isinstance(data, dict) or data.get("type") != "tendermint/event/NewBlock":
        return None
    try:
        value = data["value"]
        height = int(value["block"]["header"]["height"])
        txs = [b64(tx) for tx in value["block"]["data"]["txs"] or ()]
        results = value["result_finalize_block"]["tx_results"] or []
    except (KeyError, TypeError, ValueError):
        raise RpcError("a malformed NewBlock event") from None
    if len(results) != len(txs) or not all(isinstance(r, dict) for r in results):
        raise RpcError("a NewBlock event whose results do not match its transactions")
    return height, txs, results


def parse_block(block, results):
    """``(height, txs, results)`` of a ``block`` and a ``block_results`` answer."""
    try:
        height = int(block["block"]["header"]["height"])
        txs = [b64(tx) for tx in block["block"]["data"]["txs"] or ()]
        tx_results = results["txs_results"] or []
    except (KeyError, TypeError, ValueError):
        raise RpcError("a malformed block") from None
    if len(tx_results) != len(txs) or not all(isinstance(r, dict) for r in tx_results):
        raise RpcError("block %d: results that do not match its transactions" % height)
    return height, txs, tx_results
