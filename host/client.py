"""PBFT client: submit an operation, accept its result once f+1 replicas agree on it.

A client holds one authenticated connection per replica (keys from the cluster secrets,
see ``cluster``). A request goes to the replica it believes is the primary; if f+1
matching replies have not arrived within the retransmission timeout it is re-sent to every
replica (backups relay it to the primary and start their view-change timers), with the
timeout doubling up to a cap, until the caller's deadline.

The first timeout adapts to the confirmation times seen, as TCP's does (RFC 6298: smoothed
time plus four mean deviations, never below ``retransmit``; doubled when it expires; only
requests answered without a re-send are sampled). A fixed timeout below the queueing delay
of a loaded cluster makes the client re-send everything to every replica, which only adds
work where it is already short. For the same reason a request whose timeout expires while
an older one of this client is still unconfirmed and the cluster confirmed another request
within that timeout is not re-sent yet: it is queued behind the older one at a primary that
is making progress. The oldest request is always re-sent on time, so a primary that drops
or censors requests is still reported to the backups (and without progress, every one is).

Requests are identified by (client id, timestamp) and the replicas execute a client's
requests in timestamp order, answering a replay from their reply cache. A timestamp is in
nanoseconds but holds whole seconds plus a count of the lane's requests in that second:
blocks keep the timestamps, and anyone who reads them learns when a request came to the
second, not to the nanosecond (which would tie a request to the device that sent it). A client object
therefore runs ``lanes`` independent client ids (``name/0``, ``name/1``, ...), each with at
most one request outstanding: that is what lets one object keep many requests in flight
without ever having one executed twice or skipped.
"""
import asyncio
import collections
import os
import time

from plugpay.host import cluster, pbft
from plugpay.host.replica import FrameError, client_handshake, read_body, tune_socket
from plugpay.protocol import codec


SECOND = 10 ** 9
ASK_ALL_AFTER_S = 0.25  # a read asks f+1 replicas; all of them after this long without f+1 matching answers


class NoQuorum(TimeoutError):
    """No f+1 matching answers in time. ``answers`` maps each replica that did answer to
    its (unverified) answer, so a caller can name the silent ones and see disagreement."""

    def __init__(self, kind, answers):
        TimeoutError.__init__(self, "no f+1 matching answers to %s" % kind)
        self.answers = answers


class Client:
    """Async PBFT client; use ``async with Client(config, secrets) as c: await c.submit(op)``."""

    def __init__(self, config, secrets, name=None, lanes=1, retransmit=0.5, max_retransmit=4.0):
        self.config = config
        self.secrets = secrets
        self.max_op_bytes = pbft.Config.from_dict(dict(config.get("pbft", {}), n=config["n"])).max_op_bytes
        self.n = config["n"]
        self.f = config["f"]
        self.name = name or "client-" + os.urandom(6).hex()
        if not cluster.CLIENT_NAME.match(self.name):
            raise ValueError("client name %r: use 1-40 letters, digits, '_', '.', '-'" % self.name)
        self.lanes = lanes
        self.retransmit = retransmit
        self.max_retransmit = max_retransmit
        self.conns = {}                     # replica -> (writer, Link)
        self.views = {}                     # replica -> view in its latest reply
        self.waiting = {}                   # (lane, ts) -> (future, {replica: result})
        self.status_lock = asyncio.Lock()
        self.answers = {}                   # query id -> (future, {replica: answer})
        self.split_answers = {}             # query id -> Event: f+1 answered without agreeing
        # A new client starts at the next whole second, above any timestamp an earlier run
        # under the same name can have used in this one.
        self.last_ts = [(int(time.time()) + 1) * SECOND - 1] * lanes
        self.free = None
        self.outbox = collections.defaultdict(list)
        self.flush_pending = False
        self.closed = None
        self.tasks = []
        self.stats = collections.Counter()
        self.next_query = 0
        self.srtt = None                    # smoothed confirmation time, s (RFC 6298)
        self.rttvar = 0.0
        self.rto = retransmit               # the first retransmission timeout of a request
        self.resent = set()                 # (lane, ts) re-sent at least once: not sampled
        self.progress_at = None             # loop time of the latest confirmed request

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def start(self, wait_for=None, timeout=5.0):
        """Open the connections; wait until ``wait_for`` of them (default 2f+1, enough to
        make progress) are up or ``timeout`` passes. The rest keep retrying in the
        background."""
        self.loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()
        self.free = asyncio.Queue()
        for lane in range(self.lanes):
            self.free.put_nowait(lane)
        self.tasks = [self.loop.create_task(self._connection(r)) for r in range(self.n)]
        await self._connected(2 * self.f + 1 if wait_for is None else wait_for, timeout)

    async def _connected(self, count, timeout):
        deadline = self.loop.time() + timeout
        while len(self.conns) < count and self.loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def close(self):
        self.closed.set()
        for writer, _ in self.conns.values():
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def primary(self):
        """The view f+1 replicas have reached (one of them is honest), mod n."""
        views = sorted(self.views.values(), reverse=True)
        return (views[self.f] if len(views) > self.f else 0) % self.n

    # -- connections

    async def _connection(self, replica):
        host, port = cluster.address(self.config, replica)
        key = cluster.client_key(self.secrets, replica, self.name)
        delay = 0.05
        while not self.closed.is_set():
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
                tune_socket(writer)
                link = await client_handshake(reader, writer, key, self.name, cluster.replica_name(replica))
                self.conns[replica] = (writer, link)
                delay = 0.05
                while True:
                    body = await read_body(reader)
                    if body is None:
                        break
                    payload = link.open(body)
                    if payload is None:
                        self.stats["unauthenticated"] += 1
                        break
                    self._on_message(replica, codec.loads(payload, "reply", max_bytes=1 << 24))
            except (OSError, asyncio.TimeoutError, FrameError, codec.DecodeError):
                self.stats["connection_errors"] += 1
            finally:
                if writer is not None and self.conns.get(replica, (None,))[0] is writer:
                    del self.conns[replica]
                if writer is not None:
                    writer.close()
            try:
                await asyncio.wait_for(self.closed.wait(), delay)
            except asyncio.TimeoutError:
                delay = min(1.0, delay * 2)

    def _on_message(self, replica, msg):
        if type(msg) is not list or not msg:
            self.stats["malformed"] += 1
        elif msg[0] == "reps" and len(msg) == 3 and type(msg[1]) is int and type(msg[2]) is list:
            self.views[replica] = msg[1]
            for r in msg[2]:
                if type(r) is list and len(r) == 3:
                    self._vote(self.waiting.get((r[0], r[1])), replica, r[2])
        elif msg[0] in ("answer", "status") and len(msg) == 3 - (msg[0] == "status"):
            key = msg[1] if msg[0] == "answer" else "status"
            entry = self.answers.get(key)
            if entry is not None:
                entry[1][replica] = msg[-1]
                if msg[0] == "answer":
                    self._vote(entry, replica, msg[2])
                    split = self.split_answers.get(key)
                    if split is not None and not entry[0].done() and len(entry[1]) >= self.f + 1:
                        split.set()  # the first f+1 did not agree: ask the rest now
                elif len(entry[1]) == self.n and not entry[0].done():
                    entry[0].set_result(None)
        else:
            self.stats["malformed"] += 1

    def _vote(self, entry, replica, result):
        if entry is None or entry[0].done():
            return
        future, votes = entry
        votes[replica] = result
        if sum(1 for v in votes.values() if v == result) >= self.f + 1:
            future.set_result(result)

    def _queue(self, replica, request):
        """Requests queued in one event-loop turn leave in one frame per replica."""
        self.outbox[replica].append(request)
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self.flush_pending = False
        outbox, self.outbox = self.outbox, collections.defaultdict(list)
        for replica, reqs in outbox.items():
            self._write(replica, ["reqs", reqs])

    def _write(self, replica, payload):
        conn = self.conns.get(replica)
        if conn is not None and not conn[0].is_closing():
            conn[0].write(conn[1].seal(codec.dumps(payload)))

    # -- operations

    async def submit(self, op, timeout=10.0):
        """Have ``op`` (bytes) executed; its result once f+1 replicas return the same one.
        Raises ``TimeoutError`` after ``timeout`` seconds (the outcome is then unknown), and
        ``ValueError`` at once for a request larger than the replicas accept, which every
        replica would drop unanswered."""
        if len(op) > self.max_op_bytes:
            raise ValueError("a request of %d bytes: the replicas take at most %d (max_op_bytes)"
                             % (len(op), self.max_op_bytes))
        lane = await self.free.get()
        ts = self.last_ts[lane] = max(self.last_ts[lane] + 1, int(time.time()) * SECOND)
        key = (lane, ts)
        future = self.loop.create_future()
        self.waiting[key] = (future, {})
        self._queue(self.primary(), [lane, ts, op])
        start = self.loop.time()
        wait = self.rto
        # A timer callback rather than wait_for: no extra task per request on the hot path.
        timer = self.loop.call_later(wait, self._retry, key, op, wait, start + timeout)
        try:
            result = await future
            self.progress_at = self.loop.time()
            if key not in self.resent:
                self._sample(self.loop.time() - start)
            return result
        finally:
            timer.cancel()
            del self.waiting[key]
            self.resent.discard(key)
            self.free.put_nowait(lane)

    def _sample(self, elapsed):
        if self.srtt is None:
            self.srtt, self.rttvar = elapsed, elapsed / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - elapsed)
            self.srtt = 0.875 * self.srtt + 0.125 * elapsed
        self.rto = min(max(self.retransmit, self.srtt + 4 * self.rttvar), self.max_retransmit)

    def _retry(self, key, op, wait, deadline):
        """No f+1 matching replies yet: re-send to every replica, back off, or give up."""
        future = self.waiting[key][0]
        if future.done():
            return
        now = self.loop.time()
        if now >= deadline:
            future.set_exception(TimeoutError("no f+1 matching replies within the deadline"))
            return
        if next(iter(self.waiting)) != key and self.progress_at is not None and now - self.progress_at < wait:
            self.stats["deferred_retransmissions"] += 1  # queued behind an older request
            timer = self.loop.call_later(min(wait, deadline - now), self._retry, key, op, wait, deadline)
            future.add_done_callback(lambda _: timer.cancel())
            return
        self.stats["retransmissions"] += 1
        if key not in self.resent:  # its first time-out: back off until a sample says otherwise
            self.resent.add(key)
            self.rto = min(self.rto * 2, self.max_retransmit)
        for r in range(self.n):
            self._queue(r, [key[0], key[1], op])
        wait = min(wait * 2, self.max_retransmit)
        timer = self.loop.call_later(min(wait, deadline - now), self._retry, key, op, wait, deadline)
        future.add_done_callback(lambda _: timer.cancel())

    async def query(self, op, timeout=5.0):
        """A read-only application query, accepted on f+1 matching answers."""
        return await self._ask("query", op, timeout)

    async def block(self, height, timeout=5.0):
        """Block ``height`` as ``[height, prev, batch, results digest, state digest]``
        (``ChainStore.blocks``), or None for a height f+1 replicas have not reached;
        accepted on f+1 matching answers. The caller checks the record's shape."""
        return await self._ask("block", height, timeout)

    async def _ask(self, kind, arg, timeout):
        """Send ``[kind, id, arg]`` to f+1 connected replicas (a different f+1 each time),
        and to the others too once those disagree or ``ASK_ALL_AFTER_S`` passes without
        f+1 matching answers: the answer f+1 of them agree on, or ``NoQuorum`` after
        ``timeout`` seconds. When every replica is honest and up, f+1 answers are all it
        takes, and the other replicas need not read, encode and send the record."""
        self.next_query += 1
        qid = self.next_query
        future = self.loop.create_future()
        self.answers[qid] = (future, {})
        connected = sorted(self.conns)
        first = self.f + 1
        if len(connected) >= first:
            start = qid % len(connected)
            asked = (connected[start:] + connected[:start])[:first]
        else:
            asked = list(range(self.n))
        split = self.split_answers[qid] = asyncio.Event()
        deadline = self.loop.time() + timeout
        try:
            for r in asked:
                self._write(r, [kind, qid, arg])
            if len(asked) < self.n:
                waiting = asyncio.ensure_future(split.wait())
                await asyncio.wait((future, waiting), timeout=min(ASK_ALL_AFTER_S, timeout),
                                   return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if not future.done():
                    for r in range(self.n):
                        if r not in asked:
                            self._write(r, [kind, qid, arg])
            try:
                return await asyncio.wait_for(future, max(0.0, deadline - self.loop.time()))
            except asyncio.TimeoutError:
                raise NoQuorum(kind, dict(self.answers[qid][1])) from None
        finally:
            del self.answers[qid]
            del self.split_answers[qid]

    async def status(self, timeout=1.0):
        """Each replica's ``Replica.status()`` list, or None where it did not answer."""
        async with self.status_lock:  # one round at a time: the answers share one slot
            return await self._status(timeout)

    async def height(self, timeout=1.0):
        """The newest block height that f+1 replicas report holding (so at least one honest
        replica does), or ``NoQuorum``."""
        rows = await self.status(timeout)
        heights = sorted((r[3] for r in rows if type(r) is list and len(r) == 7 and type(r[3]) is int and r[3] >= 0),
                         reverse=True)
        if len(heights) <= self.f:
            raise NoQuorum("the height", dict((i, r) for i, r in enumerate(rows) if r is not None))
        return heights[self.f]

    async def _status(self, timeout):
        await self._connected(self.n, timeout / 2)
        future = self.loop.create_future()
        self.answers["status"] = (future, {})
        try:
            for r in range(self.n):
                self._write(r, ["status"])
            try:
                await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                pass
            got = self.answers["status"][1]
            return [got.get(r) for r in range(self.n)]
        finally:
            del self.answers["status"]
