"""An asyncio ABCI 2.0 socket server: CometBFT's four connections in, an application's
answers out.

CometBFT opens four connections to the application (consensus, mempool, query, snapshot)
and on each sends requests in order, expecting the responses in the same order; a Flush
asks for everything answered so far to be sent, so responses wait for it and leave in one
write. All four are served by one event loop and
one application object whose handlers run to completion one at a time, so a CheckTx or a
Query never sees half a block.

The socket is untrusted like every other: bytes that are no ABCI frame (a length that is no
varint or is over ``MAX_MESSAGE``, a body that is no ``Request``, a request naming no
method) are answered with a ``ResponseException`` giving the reason, and that connection
alone is closed. The application stays up for the others. (CometBFT itself would stop on
an exception: it never sends such bytes.) What a handler raises is also answered with an
exception, since a consensus engine must not go on past an application that failed. The
listener belongs on loopback or a Unix socket: whoever can connect can drive the ledger.
"""
import asyncio
import collections
import logging
import os
import socket
import time

from google.protobuf.message import DecodeError

from plugpay.host import abci_wire as W

MAX_CONNECTIONS = 16  # CometBFT needs 4; a few more for operators' tools
MAX_UNFLUSHED = 1 << 20  # responses held for the next Flush beyond this many bytes go out at once
log = logging.getLogger("plugpay.abci")


def parse_address(address):
    """``tcp://host:port`` or ``unix:///path`` (CometBFT's ``proxy_app`` forms) as
    ("tcp", host, port) or ("unix", path, None)."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme == "unix" and rest:
        return "unix", rest, None
    host, _, port = rest.rpartition(":") if sep and scheme == "tcp" else ("", "", "")
    if not host or not port.isdigit():
        raise ValueError("an ABCI address is tcp://HOST:PORT or unix:///PATH, got %r" % address)
    return "tcp", host.strip("[]"), int(port)


class AbciServer:
    """Serves ``app``: for every request kind but echo and flush, ``app.<kind>(request,
    response)`` fills in the response (``tendermint.abci.Request``'s oneof names)."""

    def __init__(self, app):
        self.app = app
        self.server = None
        self.writers = set()
        self.stats = collections.Counter()  # requests served by kind, connections refused
        self.busy = collections.Counter()  # seconds (wall) in the application's handlers, by kind

    async def start(self, address):
        kind, host, port = parse_address(address)
        if kind == "unix":
            if os.path.exists(host):
                os.unlink(host)  # a socket a killed process left behind
            self.server = await asyncio.start_unix_server(self._serve, host)
        else:
            self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        return self

    async def close(self):
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, reader, writer):
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.writers) >= MAX_CONNECTIONS:
            await self._refuse(writer, "over %d connections" % MAX_CONNECTIONS)
            return
        self.writers.add(writer)
        try:
            await self._requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.stats["cut_connections"] += 1
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _requests(self, reader, writer):
        """Answer requests in order; responses go out together at each Flush (CometBFT's
        client sends its queued requests with a Flush and waits for that one)."""
        out = bytearray()
        while True:
            try:
                body = await W.read_frame(reader)
            except W.FrameError as e:
                await self._refuse(writer, str(e))
                return
            if body is None:
                return
            try:
                request = W.Request.FromString(body)
            except DecodeError as e:
                await self._refuse(writer, "not an ABCI request: %s" % (e,))
                return
            kind = request.WhichOneof("value")
            if kind is None:
                await self._refuse(writer, "a request naming no ABCI method")
                return
            response = W.Response()
            answer = getattr(response, kind)
            answer.SetInParent()
            if kind == "echo":
                answer.message = request.echo.message
            elif kind != "flush":
                start = time.perf_counter()
                try:
                    getattr(self.app, kind)(getattr(request, kind), answer)
                except Exception as e:
                    log.exception("the application failed on %s", kind)
                    await self._refuse(writer, "the application failed on %s: %s" % (kind, e), count="app_failures")
                    return
                self.busy[kind] += time.perf_counter() - start
            self.stats[kind] += 1
            out += W.frame(response)
            if kind == "flush" or len(out) > MAX_UNFLUSHED:
                writer.write(bytes(out))
                out.clear()
                await writer.drain()

    async def _refuse(self, writer, reason, count="refused"):
        """Answer with ``ResponseException(reason)`` and close the connection."""
        self.stats[count] += 1
        log.warning("ABCI connection closed: %s", reason)
        response = W.Response()
        response.exception.error = reason
        try:
            writer.write(W.frame(response))
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
