"""The live dashboard: one web page on loopback that shows a running ledger and sessions.

``plugpay ledger up``, ``plugpay demo``, ``plugpay hil`` and ``plugpay ledger watch
--dashboard PORT`` serve it (aiohttp, on the caller's asyncio loop): the replicas and
their health, view and height, blocks as they commit with their events (``host.events``),
what is open on the ledger (``host.ledger_view``: market requests and bids, channels with
their deposits and dispute windows, HTLCs), and each session the command itself runs, with
its energy, installments and exposure against its bound. The page is plain HTML and
JavaScript from ``dashboard_static/`` (no build step); it follows ``/stream``, server-sent
events that start with a snapshot of everything (``/state`` gives the same as JSON), and
re-renders at most ten times a second, however fast blocks commit. Blocks go to the page
together, at most one message a tenth of a second with only the events it keeps: on a
machine the replicas share, every millisecond the page and this server spend is the
ledger's (``plugpay bench dashboard`` measures it).

What it shows is what the public, pseudonymous ledger shows, and of a session what the
host running it already prints: never an identity, a VIN or a session's secret id. It
binds to 127.0.0.1 only and answers only requests whose Host header names that address
(or localhost) and its port, so a web page elsewhere cannot read it through DNS
rebinding.

A browser that reads too slowly is not waited for: its queue is dropped and it gets a
fresh snapshot instead, so one stalled tab never holds up the ledger's followers.
"""
import asyncio
import collections
import contextlib
import json
import os
import time

from plugpay.host.ledger_view import LedgerView

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard_static")
FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
BLOCKS_SHOWN = 30  # the page keeps as many as the snapshot says ("shown")
EVENTS_SHOWN = 80
EVENTS_PER_BLOCK = 20  # events of one block sent to the page; the rest are counted
QUEUE_MESSAGES = 512  # per browser, before it is resynchronised with a snapshot
BLOCKS_EVERY_S = 0.1  # new blocks are sent at most this often, together (the page renders no faster)
VIEW_EVERY_S = 0.25  # the open objects are sent at most this often
KEEPALIVE_S = 15.0
RESYNC = None  # queue marker: send a fresh snapshot


def block_summary(c):
    """A committed block (``ledger_follow.Committed``) as the page shows it."""
    refused = sum(1 for e in c.events if not e["ok"])
    kinds = collections.Counter(e["kind"] for e in c.events)
    return {"height": c.height, "hash": c.hash, "time": c.time, "requests": c.requests, "refused": refused,
            "kinds": dict(kinds), "seen": time.time()}


class Dashboard:
    """The page's state and the server. Feed listener methods (``on_block``,
    ``on_replicas``, ``on_problem``) run on the server's loop; ``set_session`` may be
    called from any thread."""

    def __init__(self, title, ledger=True):
        self.title = title
        self.ledger = ledger  # False: no ledger is watched here (only sessions)
        self.replicas = []
        self.blocks = collections.deque(maxlen=BLOCKS_SHOWN)
        self.events = collections.deque(maxlen=EVENTS_SHOWN)
        self.view = LedgerView()
        self.sessions = {}
        self.problem = None
        self.subscribers = set()
        self.view_due = None
        self.new_blocks = []  # committed since the last "blocks" message
        self.new_events = 0  # events of those kept in self.events
        self.blocks_due = None
        self.blocks_sent_at = float("-inf")
        self.loop = None
        self.runner = None
        self.port = None
        self.allowed_hosts = set()
        self.stats = collections.Counter()

    # -- state -------------------------------------------------------------------------

    def snapshot(self):
        return {"title": self.title, "ledger": self.ledger, "shown": {"blocks": BLOCKS_SHOWN, "events": EVENTS_SHOWN},
                "replicas": self.replicas, "blocks": list(self.blocks),
                "events": list(self.events), "view": self.view.snapshot(), "sessions": list(self.sessions.values()),
                "problem": self.problem}

    def on_replicas(self, rows):
        self.replicas = rows
        self._publish("replicas", rows)

    def on_problem(self, text):
        self.problem = text
        self._publish("problem", text)

    def on_block(self, c):
        summary = block_summary(c)
        self.blocks.append(summary)
        shown = c.events[-EVENTS_PER_BLOCK:]
        self.events.extend(shown)
        self.new_blocks.append(summary)
        self.new_events += len(shown)
        if self.blocks_due is None:
            wait = self.blocks_sent_at + BLOCKS_EVERY_S - self.loop.time()
            self.blocks_due = self.loop.call_later(max(0.0, wait), self._send_blocks)
        if self.view.apply(c.height, c.events) and self.view_due is None:
            self.view_due = self.loop.call_later(VIEW_EVERY_S, self._send_view)

    def _send_blocks(self):
        """The blocks committed since the last message, with the newest events: at
        saturation one message a tenth of a second, not one per block with every event the
        page would drop again."""
        self.blocks_due = None
        self.blocks_sent_at = self.loop.time()
        newest = min(self.new_events, len(self.events))
        events = list(self.events)[len(self.events) - newest:]
        self._publish("blocks", {"blocks": self.new_blocks[-BLOCKS_SHOWN:], "events": events})
        self.new_blocks = []
        self.new_events = 0

    def _send_view(self):
        self.view_due = None
        self._publish("view", self.view.snapshot())

    def set_session(self, key, progress):
        """Show (or update) the session ``key``: a JSON object from ``session_progress``."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._session, key, progress)

    def _session(self, key, progress):
        progress = dict(progress, key=key)
        if self.sessions.get(key) == progress:
            return
        self.sessions[key] = progress
        self._publish("session", self.sessions[key])

    def _publish(self, kind, data):
        if not self.subscribers:
            return
        message = ("event: %s\ndata: %s\n\n" % (kind, json.dumps(data, separators=(",", ":")))).encode()
        for queue in self.subscribers:
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.stats["resynchronised"] += 1
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)

    # -- server ------------------------------------------------------------------------

    async def start(self, port=0):
        """Serve on 127.0.0.1:``port`` (0: a free one); returns the port."""
        from aiohttp import web  # here: every plugpay command imports this module

        @web.middleware
        async def only_loopback_hosts(request, handler):
            if request.headers.get("Host") not in self.allowed_hosts:
                raise web.HTTPForbidden(text="this dashboard answers on 127.0.0.1:%d only" % self.port)
            return await handler(request)

        self.loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[only_loopback_hosts])
        app.router.add_get("/", self._file)
        app.router.add_get("/static/{name}", self._file)
        app.router.add_get("/state", self._state)
        app.router.add_get("/stream", self._stream)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self.runner.cleanup()
            raise OSError("the dashboard cannot listen on 127.0.0.1:%d: %s" % (port, e.strerror or e)) from None
        self.port = self.runner.addresses[0][1]
        self.allowed_hosts = {"%s:%d" % (h, self.port) for h in ("127.0.0.1", "localhost", "[::1]")}
        return self.port

    def url(self):
        return "http://127.0.0.1:%d/" % self.port

    async def stop(self):
        for due in (self.view_due, self.blocks_due):
            if due is not None:
                due.cancel()
        for queue in list(self.subscribers):
            queue.put_nowait(b"")  # ends its stream
        if self.runner is not None:
            await self.runner.cleanup()

    async def _file(self, request):
        from aiohttp import web

        name = request.match_info.get("name", "index.html")
        if name not in FILES:
            raise web.HTTPNotFound()
        with open(os.path.join(STATIC, name), "rb") as f:
            body = f.read()
        return web.Response(body=body, content_type=FILES[name], headers={"Cache-Control": "no-cache"})

    async def _state(self, request):
        from aiohttp import web

        return web.json_response(self.snapshot())

    async def _stream(self, request):
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        queue = asyncio.Queue(QUEUE_MESSAGES)
        queue.put_nowait(RESYNC)
        self.subscribers.add(queue)
        try:
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    message = b": keep-alive\n\n"
                if message == b"":
                    break
                if message is RESYNC:
                    message = ("event: snapshot\ndata: %s\n\n" % json.dumps(self.snapshot())).encode()
                await response.write(message)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.subscribers.discard(queue)
        return response


def _feed_ended(task):
    """A feed only ends when stopped; anything else is said, not swallowed."""
    if not task.cancelled() and task.exception() is not None:
        import sys

        print("plugpay: the ledger feed stopped: %s" % task.exception(), file=sys.stderr, flush=True)


def add_options(p):
    """``--dashboard PORT`` and ``--no-dashboard`` for the commands that serve the page."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--dashboard", type=port_arg, default=0, metavar="PORT",
                       help="serve the live dashboard on 127.0.0.1:PORT (default: a free port, printed)")
    group.add_argument("--no-dashboard", action="store_true", help="serve no dashboard")


def port_arg(text):
    import argparse

    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a TCP port 0..65535 (0: a free one), got %r" % text)
    return port


class Live:
    """A dashboard (unless ``port`` is None) and the ledger feed behind it, started and
    stopped together on the caller's loop. ``config``/``secrets``: the cluster to follow
    (None: sessions only); ``listeners``: more feed listeners (the event printer);
    ``start``: the first block to follow (1 rebuilds what is open from the whole chain)."""

    def __init__(self, title, port, config=None, secrets=None, listeners=(), start=1):
        self.dashboard = None if port is None else Dashboard(title, ledger=config is not None)
        self.port = port
        self.config = config
        self.secrets = secrets
        self.listeners = [x for x in [self.dashboard] + list(listeners) if x is not None]
        self.start_height = start
        self.task = None

    async def start(self):
        """Start; the dashboard's URL, or None without one."""
        url = None
        if self.dashboard is not None:
            await self.dashboard.start(self.port)
            url = self.dashboard.url()
        if self.config is not None and self.listeners:
            from plugpay.tools.ledger_follow import LedgerFeed

            feed = LedgerFeed(self.config, self.secrets, self.listeners, status=self.dashboard is not None)
            self.task = asyncio.ensure_future(feed.run(self.start_height))
            self.task.add_done_callback(_feed_ended)
        return url

    def set_session(self, key, progress):
        if self.dashboard is not None:
            self.dashboard.set_session(key, progress)

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.dashboard is not None:
            await self.dashboard.stop()


@contextlib.contextmanager
def serving(args, title, loop_thread=None, config=None, secrets=None, say=print):
    """``Live`` for the duration of a ``with`` block, on ``loop_thread`` (``host.stack.
    LoopThread``; None: one of its own), as ``--dashboard``/``--no-dashboard`` in ``args``
    say; ``set_session`` may be called from any thread. Prints the URL."""
    from plugpay.host.stack import LoopThread

    own = loop_thread is None
    loop_thread = LoopThread() if own else loop_thread
    live = Live(title, None if args.no_dashboard else args.dashboard, config, secrets)
    try:
        url = loop_thread.run(live.start())
        if url:
            say("  dashboard: %s" % url)
        yield live
    finally:
        try:
            loop_thread.run(live.stop())
        finally:
            if own:
                loop_thread.close()
