"""One PBFT replica as one OS process: SQLite chain store, authenticated TCP links, asyncio.

Run it as ``python -m plugpay.host.replica --id N --config cluster.json`` (or through
``plugpay ledger replica``/``ledger up``). The consensus logic is ``pbft.Engine``; this
module only gives it durable storage, a clock and a network:

* ``ChainStore`` executes a committed batch through the ``Application`` and stores the
  block (height, prev hash, batch, results digest, app state digest) and the client reply
  cache in ONE SQLite transaction (WAL). A ``kill -9`` at any instant leaves either the
  whole block or none of it, and a reply only leaves after its block is committed.
* The engine's protocol log (``pbft_log``: view, pre-prepared and prepared certificates,
  stable checkpoint) is a second SQLite file, ``replica-N.pbft.sqlite``, committed in the
  event loop before a turn's frames leave (at most one commit per turn, however many
  batches it voted on).
* One worker thread owns the SQLite connection while the replica runs: it executes the
  blocks the engine hands out (``pbft.Engine`` with ``deferred=True``) and answers queries
  and block reads in the same order, so a query never sees half a block. The event loop
  meanwhile keeps reading, authenticating and voting: executing a block (signature checks,
  the commit's fsync) no longer holds up the consensus on the next ones.
* ``Link`` authenticates every frame with HMAC-SHA256 under the pairwise key of the two
  ends, bound to the direction, a fresh per-connection nonce and a frame counter, so frames
  cannot be forged, reflected, replayed or reordered. One MAC per frame, and a frame carries
  every message queued for that peer in one event-loop turn.
* Anything a peer sends that is oversized, unauthenticated or malformed is counted in
  ``dropped`` and the frame (or connection) dropped; it never reaches the engine unchecked
  and never ends the process.

Frame: 4-byte big-endian length, then a 32-byte MAC, then the CBOR payload. Replica-to-
replica payloads are ``["m", [message, ...]]`` on the sender's outgoing connection; clients
send ``["reqs", [[lane, ts, op], ...]]``, ``["query", id, op]``, ``["block", id, height]`` or
``["status"]`` and get ``["reps", view, [[lane, ts, result], ...]]``, ``["answer", id, result]``
(a block answer is the stored block record, or None) or ``["status", [...]]`` back on the same
connection.
"""
import argparse
import asyncio
import collections
import concurrent.futures
import hmac
import importlib
import logging
import os
import signal
import socket
import sqlite3
import struct
import sys

from plugpay.host import cluster, pbft, pbft_log
from plugpay.protocol import codec
from plugpay.protocol.port import sha256

MAX_FRAME = 16 << 20
# SQLite's default page cache is 2 MiB; a ledger's tables outgrow it within minutes, and
# then every lookup of a coin re-reads B-tree pages from the OS. 64 MiB keeps them here.
CACHE_KIB = 64 << 10
# Coins are keyed by hash, so every block dirties pages all over the B-trees, and each
# checkpoint copies them from the WAL into the database. Checkpointing every 10,000 pages
# (~40 MiB) rather than SQLite's 1,000 copies a page rewritten by several blocks once.
WAL_CHECKPOINT_PAGES = 10000
HELLO_TIMEOUT = 5.0
MAX_WRITE_BUFFER = 64 << 20
BACKLOG = 4096
log = logging.getLogger("plugpay.replica")


# ---- durable chain ----------------------------------------------------------------------

class ChainStore:
    """The replica's blocks, client reply cache and application, in one SQLite database."""

    def __init__(self, conn, app):
        self.conn = conn
        self.app = app
        conn.execute("CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,"
                     " prev BLOB NOT NULL, batch BLOB NOT NULL, results_digest BLOB NOT NULL,"
                     " state_digest BLOB NOT NULL, results BLOB)")
        if "results" not in [row[1] for row in conn.execute("PRAGMA table_info(blocks)")]:
            conn.execute("ALTER TABLE blocks ADD COLUMN results BLOB")  # a database of an earlier version
        conn.execute("CREATE TABLE IF NOT EXISTS clients (client TEXT PRIMARY KEY, ts INTEGER NOT NULL,"
                     " result BLOB NOT NULL)")
        conn.commit()
        self._load()

    def _load(self):
        row = self.conn.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        self.height, self.head_hash = row if row else (0, pbft.GENESIS)
        self.clients = {c: (ts, r) for c, ts, r in self.conn.execute("SELECT client, ts, result FROM clients")}

    def block_hash(self, height):
        if height == 0:
            return pbft.GENESIS
        row = self.conn.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        return row[0] if row else None

    def last_reply(self, client):
        """(ts, result) of the client's latest executed request, or None."""
        return self.clients.get(client)

    def execute(self, height, batch, expect_hash=None):
        """Run ``batch`` as block ``height``; return the replies ``[(client, ts, result)]``.

        A request whose timestamp is not above its client's last executed one is not run
        again: the latest one is answered from the cache, older ones not at all. With
        ``expect_hash`` (state transfer) the block is rolled back unless it hashes to it;
        then None is returned.
        """
        if height != self.height + 1:
            raise ValueError("block %d does not follow height %d" % (height, self.height))
        latest = {}
        fresh, replies = [], []
        for client, ts, op in batch:
            last = latest.get(client)
            if last is None:
                cached = self.clients.get(client)
                last = cached[0] if cached else -1
                if cached and ts == last:
                    replies.append((client, ts, cached[1]))
            if ts > last:
                latest[client] = ts
                fresh.append((client, ts, op))
        try:
            results = self.app.execute(height, [op for _, _, op in fresh])
            if len(results) != len(fresh) or any(type(r) is not bytes for r in results):
                raise TypeError("the application must return one bytes result per request")
            rows = [(c, ts, r) for (c, ts, _), r in zip(fresh, results)]
            stored_batch = codec.dumps(batch)  # = what pbft.digest(batch) hashes: encoded once
            results_digest = pbft.digest(results)
            state_digest = self.app.state_digest()
            h = pbft.block_hash(height, self.head_hash, sha256(stored_batch), results_digest, state_digest)
            if expect_hash is not None and h != expect_hash:
                self._rollback()
                return None
            self.conn.executemany("INSERT OR REPLACE INTO clients VALUES (?, ?, ?)", rows)
            self.conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (height, h, self.head_hash, stored_batch, results_digest,
                               state_digest, codec.dumps([list(row) for row in rows])))
            self.conn.commit()
        except BaseException:
            self._rollback()
            raise
        self.height, self.head_hash = height, h
        for c, ts, r in rows:
            self.clients[c] = (ts, r)
        return replies + rows

    def _rollback(self):
        self.conn.rollback()
        self.app.reload()
        self._load()

    def apply_block(self, record, expect_hash):
        """State transfer: re-execute a fetched block; True if we reach the same hash."""
        return self.execute(record[0], record[2], expect_hash) is not None

    def results(self, height):
        """``[[client, ts, result]]`` of the requests block ``height`` ran (the results its
        results digest covers, in order), or None for a block stored before they were kept."""
        row = self.conn.execute("SELECT results FROM blocks WHERE height = ?", (height,)).fetchone()
        return None if row is None or row[0] is None else codec.loads(row[0], "stored results", max_bytes=MAX_FRAME)

    def blocks(self, start, limit, max_bytes=MAX_FRAME // 2):
        """Stored blocks from ``start`` on, as ``[height, prev, batch, results d., state d.]``."""
        out, size = [], 0
        for h, prev, batch, rd, sd in self.conn.execute(
                "SELECT height, prev, batch, results_digest, state_digest FROM blocks"
                " WHERE height >= ? ORDER BY height LIMIT ?", (start, limit)):
            size += len(batch) + 128
            if out and size > max_bytes:
                break
            out.append([h, prev, codec.loads(batch, "stored batch", max_bytes=MAX_FRAME), rd, sd])
        return out


def open_database(path, synchronous="FULL"):
    """SQLite in WAL mode; FULL also survives power loss, NORMAL only a process crash.
    Not tied to the opening thread: a replica hands it to its worker thread."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError("sqlite_synchronous must be FULL or NORMAL, got %r" % (synchronous,))
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=" + synchronous)
    conn.execute("PRAGMA cache_size=-%d" % CACHE_KIB)
    conn.execute("PRAGMA wal_autocheckpoint=%d" % WAL_CHECKPOINT_PAGES)
    return conn


def load_application(spec, conn, options):
    """Instantiate ``"package.module:Class"`` on ``conn`` and commit its schema."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError("app must look like 'package.module:Class', got %r" % (spec,))
    app = getattr(importlib.import_module(module), name)(conn, **options)
    conn.commit()
    return app


class WorkerStore:
    """The engine's view of a ``ChainStore`` that a worker thread owns: reads the engine
    makes of the connection (blocks for a peer, state transfer) run on the worker, after
    whatever it is executing, and the caller waits for them. Those are rare; the hot path,
    executing committed batches, goes through ``Replica`` without waiting."""

    def __init__(self, store, worker):
        self.store = store
        self.worker = worker

    @property
    def height(self):
        return self.store.height

    @property
    def head_hash(self):
        return self.store.head_hash

    def last_reply(self, client):
        return self.store.last_reply(client)

    def block_hash(self, height):
        return self.worker.submit(self.store.block_hash, height).result()

    def blocks(self, start, limit):
        return self.worker.submit(self.store.blocks, start, limit).result()

    def apply_block(self, record, expect_hash):
        return self.worker.submit(self.store.apply_block, record, expect_hash).result()


# ---- authenticated links ---------------------------------------------------------------------

class Link:
    """MACs for one connection: key, direction, connection nonce and frame counters."""

    def __init__(self, key, me, peer, nonce):
        self.key = key
        self.send_ctx = ("%s>%s|" % (me, peer)).encode() + nonce
        self.recv_ctx = ("%s>%s|" % (peer, me)).encode() + nonce
        self.sent = 0
        self.received = 0

    def seal(self, payload):
        mac = hmac.digest(self.key, self.send_ctx + struct.pack(">Q", self.sent) + payload, "sha256")
        self.sent += 1
        return struct.pack(">I", len(payload) + 32) + mac + payload

    def open(self, body):
        """The payload of a received frame body, or None if its MAC is wrong."""
        expect = hmac.digest(self.key, self.recv_ctx + struct.pack(">Q", self.received) + body[32:], "sha256")
        if not hmac.compare_digest(expect, body[:32]):
            return None
        self.received += 1
        return body[32:]


class FrameError(Exception):
    """A peer broke framing (oversized, truncated): the connection is dropped."""


async def read_body(reader, max_frame=MAX_FRAME):
    """One frame body (MAC + payload), or None at a clean end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise FrameError("truncated frame header")
        return None
    (length,) = struct.unpack(">I", head)
    if length > max_frame or length < 32:
        raise FrameError("frame of %d bytes" % length)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("truncated frame")


def plain_frame(payload):
    """The one unauthenticated frame: the server's nonce (a MAC would prove nothing yet)."""
    return struct.pack(">I", len(payload) + 32) + bytes(32) + payload


async def client_handshake(reader, writer, key_for_server, me, server):
    """Connector side: read the server nonce, answer with a MACed hello; return the Link."""
    body = await asyncio.wait_for(read_body(reader), HELLO_TIMEOUT)
    if body is None:
        raise FrameError("closed during handshake")
    msg = codec.loads(body[32:], "nonce")
    if type(msg) is not list or len(msg) != 2 or msg[0] != "nonce" or type(msg[1]) is not bytes \
            or len(msg[1]) != 16:
        raise FrameError("bad nonce frame")
    link = Link(key_for_server, me, server, msg[1])
    writer.write(link.seal(codec.dumps(["hello", me])))
    return link


def tune_socket(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---- the replica process -------------------------------------------------------------------------

class Replica:
    """Glue between the engine, the chain store and the network."""

    def __init__(self, replica_id, config, secrets):
        self.id = replica_id
        self.config = config
        self.secrets = secrets
        self.name = cluster.replica_name(replica_id)
        n = config["n"]
        if not 0 <= replica_id < n:
            raise ValueError("replica id %d is not in 0..%d" % (replica_id, n - 1))
        os.makedirs(config["data_dir"], exist_ok=True)
        self.db_path = os.path.join(config["data_dir"], "replica-%d.sqlite" % replica_id)
        self.conn = open_database(self.db_path, config.get("sqlite_synchronous", "FULL"))
        app = load_application(config["app"], self.conn, config.get("app_options", {}))
        self.store = ChainStore(self.conn, app)
        # The protocol log has its own file: the worker holds the chain's write lock while
        # a block executes, and votes must not wait for that.
        self.log_conn = open_database(os.path.join(config["data_dir"], "replica-%d.pbft.sqlite" % replica_id),
                                      config.get("sqlite_synchronous", "FULL"))
        self.log = pbft_log.ProtocolLog(self.log_conn)
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="replica-%d-store" % replica_id)
        self.loop = None
        self.engine = None
        self.pbft_config = pbft.Config.from_dict(dict(config.get("pbft", {}), n=n))
        self.dropped = collections.Counter()
        self.peers = {}          # replica id -> (writer, Link) of our outgoing connection
        self.clients = {}        # client name -> (writer, Link)
        self.outbox = collections.defaultdict(list)
        # Messages for a peer we are not connected to yet (start-up, restarts): bounded.
        self.backlog = collections.defaultdict(lambda: collections.deque(maxlen=BACKLOG))
        self.flush_pending = False
        self.timer = None
        self.tasks = set()
        self.incoming = set()    # writers of accepted connections, closed on shutdown

    def _now(self):
        return self.loop.time()

    # -- engine glue

    def _feed(self, sender, msg):
        try:
            out = self.engine.receive(sender, msg, self._now())
        except Exception:
            log.exception("replica %d: engine error on %r from %r", self.id, msg[:1], sender)
            self.dropped["engine_errors"] += 1
            return
        self._dispatch(out)

    def _dispatch(self, out):
        for dest, msg in out:
            self.outbox[dest].append(msg)
        if out and not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush)
        for seq, batch in self.engine.take_ready():
            done = self.worker.submit(self._execute, seq, batch)
            done.add_done_callback(lambda f, seq=seq: self.loop.call_soon_threadsafe(self._executed, seq, f))
        self._arm_timer()

    def _execute(self, seq, batch):
        """On the worker: run and store block ``seq``; its replies and hash."""
        return self.store.execute(seq, batch), self.store.head_hash

    def _executed(self, seq, done):
        try:
            replies, head = done.result()
        except Exception:
            log.exception("replica %d: executing block %d failed", self.id, seq)
            replies, head = None, None
        try:
            out = self.engine.executed(seq, replies, head, self._now())
        except Exception:
            log.exception("replica %d: engine error after block %d", self.id, seq)
            self.dropped["engine_errors"] += 1
            out = []
        self._dispatch(out)

    def _answer_later(self, conn, qid, fn, *args):
        """Send a client ``["answer", qid, fn(*args)]``, run on the worker (it owns the
        connection) after the blocks it has in hand."""
        def send(done):
            try:
                answer = done.result()
            except Exception:
                log.exception("replica %d: answering %r failed", self.id, qid)
                return
            self._write(conn, ["answer", qid, answer])
        self.worker.submit(fn, *args).add_done_callback(lambda f: self.loop.call_soon_threadsafe(send, f))

    def _block_record(self, height):
        """[height, prev, batch, results digest, state digest, results], None above our tip."""
        if not 1 <= height <= self.store.height:
            return None
        return self.store.blocks(height, 1)[0] + [self.store.results(height)]

    def _arm_timer(self):
        when = self.engine.next_deadline()
        if self.timer is not None:
            if self.timer.when() == when:
                return
            self.timer.cancel()
        self.timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self):
        self.timer = None
        try:
            out = self.engine.tick(self._now())
        except Exception:
            log.exception("replica %d: engine error in tick", self.id)
            self.dropped["engine_errors"] += 1
            out = []
        self._dispatch(out)
        if self.timer is None:
            self._arm_timer()

    def _flush(self):
        """Write everything queued this loop turn: one MACed frame per destination, once
        the protocol log holds what these messages commit the replica to."""
        self.flush_pending = False
        self.log.sync()
        outbox, self.outbox = self.outbox, collections.defaultdict(list)
        replies = collections.defaultdict(list)
        for dest, msgs in outbox.items():
            if type(dest) is int:
                conn = self.peers.get(dest)
                if conn is None:
                    self.backlog[dest].extend(msgs)
                else:
                    self._send_messages(conn, msgs)
            else:
                name, _, lane = dest.rpartition("/")
                for m in msgs:
                    replies[name].append([int(lane), m[2], m[3], m[1]])
        for name, reps in replies.items():
            conn = self.clients.get(name)
            if conn is not None:
                view = reps[-1][3]
                self._write(conn, ["reps", view, [r[:3] for r in reps]])

    def _send_messages(self, conn, msgs):
        """One frame of engine messages, split in halves if it would be oversized."""
        payload = codec.dumps(["m", msgs])
        if len(payload) > MAX_FRAME - 64 and len(msgs) > 1:
            half = len(msgs) // 2
            self._send_messages(conn, msgs[:half])
            self._send_messages(conn, msgs[half:])
        else:
            self._write(conn, payload)

    def _write(self, conn, payload):
        writer, link = conn
        if writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.dropped["slow_peer"] += 1
            writer.close()
            return
        writer.write(link.seal(payload if type(payload) is bytes else codec.dumps(payload)))

    # -- network

    def _spawn(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect_peer(self, peer, stop):
        """Keep one outgoing connection to ``peer`` while the replica runs."""
        host, port = cluster.address(self.config, peer)
        key = cluster.replica_key(self.secrets, self.id, peer)
        delay = 0.05
        while not stop.is_set():
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), HELLO_TIMEOUT)
                tune_socket(writer)
                link = await client_handshake(reader, writer, key, self.name, cluster.replica_name(peer))
                self.peers[peer] = (writer, link)
                delay = 0.05
                if self.backlog[peer]:
                    self._send_messages(self.peers[peer], list(self.backlog.pop(peer)))
                while await reader.read(65536):
                    self.dropped["unexpected_bytes"] += 1
            except (OSError, asyncio.TimeoutError, FrameError, codec.DecodeError):
                pass
            finally:
                if writer is not None and self.peers.get(peer, (None,))[0] is writer:
                    del self.peers[peer]
                if writer is not None:
                    writer.close()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                delay = min(1.0, delay * 2)

    async def _on_connection(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        self.incoming.add(writer)
        tune_socket(writer)
        name = None
        try:
            nonce = os.urandom(16)
            writer.write(plain_frame(codec.dumps(["nonce", nonce])))
            body = await asyncio.wait_for(read_body(reader), HELLO_TIMEOUT)
            if body is None:
                return
            hello = codec.loads(body[32:], "hello")
            if type(hello) is not list or len(hello) != 2 or hello[0] != "hello" or type(hello[1]) is not str:
                raise FrameError("bad hello")
            name = hello[1]
            key = cluster.link_key(self.secrets, self.id, name)
            link = None if key is None else Link(key, self.name, name, nonce)
            if link is None or link.open(body) is None:
                self.dropped["unauthenticated"] += 1
                return
            peer = cluster.replica_id(name)
            if peer is None:
                old = self.clients.get(name)
                if old is not None:
                    old[0].close()
                self.clients[name] = (writer, link)
            while True:
                body = await read_body(reader)
                if body is None:
                    return
                payload = link.open(body)
                if payload is None:
                    self.dropped["unauthenticated"] += 1
                    return
                try:
                    msg = codec.loads(payload, "frame", max_bytes=MAX_FRAME)
                except codec.DecodeError:
                    self.dropped["malformed"] += 1
                    continue
                if peer is None:
                    self._on_client_frame(name, writer, link, msg)
                elif type(msg) is list and len(msg) == 2 and msg[0] == "m" and type(msg[1]) is list:
                    for m in msg[1]:
                        self._feed(peer, m)
                else:
                    self.dropped["malformed"] += 1
        except FrameError:
            self.dropped["oversized_or_truncated"] += 1
        except (codec.DecodeError, asyncio.TimeoutError):
            self.dropped["bad_handshake"] += 1
        except OSError:
            pass
        finally:
            if name is not None and self.clients.get(name, (None,))[0] is writer:
                del self.clients[name]
            writer.close()
            self.incoming.discard(writer)
            self.tasks.discard(task)

    def _on_client_frame(self, name, writer, link, msg):
        kind = msg[0] if type(msg) is list and msg else None
        if kind == "reqs" and len(msg) == 2 and type(msg[1]) is list:
            for r in msg[1]:
                if type(r) is list and len(r) == 3 and type(r[0]) is int and 0 <= r[0] < 1 << 16:
                    self._feed("%s/%d" % (name, r[0]), ["req", r[1], r[2]])
                else:
                    self.dropped["malformed"] += 1
        elif kind == "query" and len(msg) == 3 and type(msg[2]) is bytes:
            self._answer_later((writer, link), msg[1], self.store.app.query, msg[2])
        elif kind == "block" and len(msg) == 3 and type(msg[2]) is int:
            self._answer_later((writer, link), msg[1], self._block_record, msg[2])
        elif kind == "status" and len(msg) == 1:
            self._write((writer, link), ["status", self.status()])
        else:
            self.dropped["malformed"] += 1

    def status(self):
        """``[id, view, active, height, stable checkpoint, pending, dropped]`` for clients."""
        e = self.engine
        dropped = sum(self.dropped.values()) + e.stats["malformed"]
        return [self.id, e.view, e.active, e.last_exec, e.stable[0], len(e.pending), dropped]

    async def run(self, stop):
        """Serve until ``stop`` is set."""
        self.loop = asyncio.get_running_loop()
        self.engine = pbft.Engine(self.id, self.pbft_config, WorkerStore(self.store, self.worker), self.log,
                                  self._now(), deferred=True)
        host, port = cluster.address(self.config, self.id)
        server = await asyncio.start_server(self._on_connection, host, port, reuse_address=True)
        for peer in range(self.config["n"]):
            if peer != self.id:
                self._spawn(self._connect_peer(peer, stop))
        self._arm_timer()
        log.info("replica %d listening on %s:%d, height %d, db %s", self.id, host, port,
                 self.store.height, self.db_path)
        try:
            await stop.wait()
        finally:
            server.close()
            for writer in [w for w, _ in self.peers.values()] + list(self.incoming):
                writer.close()
            if self.tasks:  # closed sockets end the handlers; whatever lingers is cancelled
                _, lingering = await asyncio.wait(list(self.tasks), timeout=1.0)
                for task in lingering:
                    task.cancel()
                await asyncio.gather(*lingering, return_exceptions=True)
            if self.timer is not None:
                self.timer.cancel()
            self.worker.shutdown()  # lets the block in hand finish and commit
            self.conn.close()
            self.log_conn.close()
            log.info("replica %d stopped at height %d; engine %s; dropped %s", self.id,
                     self.engine.last_exec, dict(self.engine.stats), dict(self.dropped))


def serve(replica_id, config_path, make_replica=Replica):
    """Run one replica in this process until SIGTERM or SIGINT. ``make_replica(id, config,
    secrets)`` builds it: tests pass a subclass that injects a Byzantine fault."""
    config, secrets = cluster.load(config_path)
    replica = make_replica(replica_id, config, secrets)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await replica.run(stop)

    asyncio.run(main())


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m plugpay.host.replica", description="run one PBFT replica")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(args.id, args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
