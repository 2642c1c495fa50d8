"""PBFT (Castro & Liskov) as a sans-IO state machine.

The engine never touches a socket, a thread or a clock: the replica process (``replica``)
or a test feeds it authenticated messages (``receive``) and the current time (``tick``), and
gets back a list of ``(destination, message)`` pairs to send. A destination is a replica id
(``int``) or a client id (``str``, ``"name/lane"``). Keeping it pure is what lets
``tests/test_pbft.py`` run four replicas, Byzantine ones included, in one process on a
simulated clock, and the very same code run in the real replicas.

The engine reads its ``store`` (``replica.ChainStore``), which executes a committed batch
as one hash-chained block in one SQLite transaction and serves blocks to lagging peers. By
default the engine executes through it synchronously. With ``deferred=True`` it only hands
committed batches out, in order (``take_ready``), and goes on voting while the caller runs
them elsewhere and reports each one back (``executed``): a replica then keeps consensus on
the next batches moving while a block executes and commits, instead of leaving their votes
in socket buffers. State transfer waits until nothing handed out is still running.

Messages are CBOR lists (see ``plugpay.protocol.codec``); the sender of a replica message is
the authenticated link it came in on, never a field inside it:

==========  ==================================================  ========================
kind        fields after the kind                               from
==========  ==================================================  ========================
``req``     ts, op                                              client
``fwd``     client, ts, op (a backup relays a request)          replica
``pp``      view, seq, batch ``[[client, ts, op], ...]``        primary
``p``       view, seq, batch digest                             backup
``c``       view, seq, batch digest                             replica
``ck``      seq, block hash at seq                              replica
``vc``      new view, stable seq, C, P, Q                       replica
``nv``      view, ``[[sender, view-change digest], ...]``       new primary
``st?``     (none): asks for ``st`` and the stable ``ck``       replica
``st``      view, active, height                                replica
``fetch``   first height wanted                                 replica
``blocks``  ``[[height, prev, batch, results d., state d.]]``   replica
``rep``     view, ts, result                                    replica, to a client
==========  ==================================================  ========================

Per-request work is kept to a dictionary lookup: cryptography happens per batch (one
digest) and per message (the link MAC, in ``replica``), never per request.

View changes follow the MAC-based variant of Castro's thesis: a VIEW-CHANGE carries the
replica's checkpoints (C), its prepared certificates (P, with their batches) and what it
pre-prepared (Q); the new primary picks a set S of at least 2f+1 of them and announces only
which ones (sender and digest). Every backup received those same VIEW-CHANGEs over its own
authenticated links, so it re-runs the deterministic ``decide`` on S and installs the
result itself: nothing in a NEW-VIEW has to be taken on the primary's word. View changes,
and how a replica finds the view the others are in, are in ``pbft_views``.

What the safety argument needs a replica to remember (its view, what it pre-prepared and
prepared, its stable checkpoint) goes to its ``log`` (``pbft_log.ProtocolLog``) as it
happens; the owner makes the log durable (``log.sync()``) before sending the messages a
call returns, so a replica killed at any instant and restarted never contradicts what it
said before, and a restarted replica rejoins by itself (see ``pbft_views``).
"""
import collections

from plugpay.host.pbft_views import ViewChanges
# GENESIS and block_hash are re-exported: the chain store and the tools hash blocks with them.
from plugpay.host.pbft_wire import GENESIS, block_hash, digest, is_client, is_digest, is_list, is_uint  # noqa: F401


class Config:
    """Protocol parameters; every replica of a cluster must use the same values."""

    def __init__(self, n=4, checkpoint_interval=32, watermark_window=None, max_batch=256,
                 batch_timeout=0.002, max_inflight=2, request_timeout=1.0,
                 view_change_timeout=1.0, status_interval=0.5, fetch_timeout=0.5,
                 fetch_max_blocks=64, max_op_bytes=16384):
        if n < 4 or (n - 1) % 3:
            raise ValueError("n must be 3f+1 with f >= 1, got %r" % (n,))
        self.n = n
        self.f = (n - 1) // 3
        self.checkpoint_interval = checkpoint_interval
        # A backup's stable checkpoint may trail the primary's by a whole interval (its
        # checkpoint votes arrive after the primary's next pre-prepares), and the primary
        # keeps max_inflight batches beyond what it executed: a window smaller than this
        # makes honest backups drop pre-prepares, which only a view change recovers.
        least = 2 * checkpoint_interval + max_inflight
        if watermark_window is not None and watermark_window < least:
            raise ValueError("watermark_window must be at least 2 x checkpoint_interval + max_inflight (%d), got %d"
                             % (least, watermark_window))
        self.watermark_window = watermark_window or least
        self.max_batch = max_batch
        self.batch_timeout = batch_timeout
        # Batches the primary runs ahead of its own execution. Two keep one block executing
        # while the next is agreed on; more only queue small blocks behind it, each paying
        # its own commit, where waiting would have made one larger block.
        self.max_inflight = max_inflight
        self.request_timeout = request_timeout
        self.view_change_timeout = view_change_timeout
        self.status_interval = status_interval
        self.fetch_timeout = fetch_timeout
        self.fetch_max_blocks = fetch_max_blocks
        self.max_op_bytes = max_op_bytes

    @classmethod
    def from_dict(cls, d):
        """Build from a cluster config's ``pbft`` section (unknown keys are an error)."""
        return cls(**d)


class Engine(ViewChanges):
    """One replica's PBFT state. ``receive``/``tick`` return messages to send."""

    def __init__(self, replica_id, config, store, log, now=0.0, deferred=False):
        self.id = replica_id
        self.deferred = deferred
        self.cfg = config
        self.n, self.f = config.n, config.f
        self.store = store
        self.log = log
        saved = log.load()
        self.view = 0
        self.active = True
        self.last_exec = store.height
        self.handed = self.last_exec  # highest seq executed or, deferred, handed out to execute
        self.executing = {}           # deferred: seq -> batch handed out, not reported back yet
        self.ready = []               # deferred: (seq, batch) to hand out, in order
        k = config.checkpoint_interval
        base = self.last_exec - self.last_exec % k
        self.own_ckpts = {base: store.block_hash(base)}
        self.stable = saved.stable if saved else (base, self.own_ckpts[base])
        self.seq = max(self.last_exec, self.stable[0])
        self.pps = {}           # (view, seq) -> (digest, batch) accepted pre-prepares
        self.votes = {}         # (kind, view, seq) -> {sender: digest}, kind "p" or "c"
        self.sent_commit = set()
        self.committed = {}     # seq -> batch, committed-local and not yet executed
        self.pset = saved.pset if saved else {}  # seq -> (view, digest, batch): highest prepared certificate
        self.qset = saved.qset if saved else {}  # seq -> {digest: highest view pre-prepared}
        self.ckpts = {}         # seq -> {sender: digest} within the watermarks
        self.far_ckpts = {}     # sender -> (seq, digest) above the watermarks (we lag)
        self.pending = {}       # (client, ts) -> op: requests this replica waits to execute
        self.queue = []         # primary: requests not yet in a batch
        self.queue_since = None
        self.proposed = set()   # primary: (client, ts) in a batch not yet executed
        self.req_deadline = None
        self.vcs = {}           # view -> {sender: (digest, view-change message)}
        self.vc_deadline = None
        self.vc_timeout = config.view_change_timeout
        self.nv = None          # (view, ids) of a NEW-VIEW waiting for its VIEW-CHANGEs
        self.my_vc = None       # our latest VIEW-CHANGE, re-sent until a new view is installed
        self.my_nv = None       # our latest NEW-VIEW as primary, re-sent to laggards
        self.peer_views = {}    # sender -> highest (view, working in it) it claimed
        self.peer_heights = {}  # sender -> height in its latest status
        self.fetch = None       # {"deadline": t, "chains": {sender: [(hash, record)]}}
        self.status_at = now
        self.stats = collections.Counter()
        if saved is None:
            log.start(self.view, self.stable)
            return
        # Back in saved.view, with everything it said there in the log. A backup works on
        # in it: Q keeps it from preparing a second batch at a sequence number. A primary
        # does not know which batches it proposed, so it changes to the next view; a
        # replica that was changing views goes on. The first tick sends the VIEW-CHANGE.
        self.stats["restarts"] += 1
        self.view = saved.view
        if not saved.active or self.is_primary():
            self._start_view_change(saved.view + 1 if saved.active else saved.view, now, [])

    # ---- small helpers ---------------------------------------------------------------

    def primary(self, view=None):
        return (self.view if view is None else view) % self.n

    def is_primary(self):
        return self.primary() == self.id

    def _broadcast(self, msg, out):
        for r in range(self.n):
            if r != self.id:
                out.append((r, msg))

    def _in_window(self, seq):
        return self.stable[0] < seq <= self.stable[0] + self.cfg.watermark_window

    def _valid_batch(self, batch):
        if not is_list(batch, self.cfg.max_batch):
            return False
        for item in batch:
            if not (type(item) is list and len(item) == 3 and is_client(item[0])
                    and is_uint(item[1]) and type(item[2]) is bytes
                    and len(item[2]) <= self.cfg.max_op_bytes):
                return False
        return True

    def next_deadline(self):
        """The earliest time at which ``tick`` has something to do (or None)."""
        times = [self.req_deadline, self.vc_deadline, self.status_at]
        if self.queue and self._pipeline_open():
            times.append(self.queue_since + self.cfg.batch_timeout)
        if self.fetch is not None:
            times.append(self.fetch["deadline"])
        return min(t for t in times if t is not None)

    # ---- entry points -----------------------------------------------------------------

    def receive(self, sender, msg, now):
        """Handle one authenticated message; malformed ones are counted and dropped."""
        out = []
        handler = None
        if type(msg) is list and msg and type(msg[0]) is str:
            if type(sender) is str:
                handler = Engine._on_request if msg[0] == "req" else None
            elif type(sender) is int and 0 <= sender < self.n and sender != self.id:
                handler = self._handlers.get(msg[0])
        if handler is None or not handler(self, sender, msg, now, out):
            self.stats["malformed"] += 1
        return out

    def tick(self, now):
        """Fire whatever timers are due at ``now``."""
        out = []
        if self.req_deadline is not None and now >= self.req_deadline:
            self.req_deadline = None
            if self.pending and self.active:
                self.stats["request_timeouts"] += 1
                self._start_view_change(self.view + 1, now, out)
        if self.vc_deadline is not None and now >= self.vc_deadline and not self.active:
            self.vc_timeout *= 2
            self._start_view_change(self.view + 1, now, out)
        if self.fetch is not None and now >= self.fetch["deadline"]:
            self._request_blocks(now, out)
        if now >= self.status_at:
            self.status_at = now + self.cfg.status_interval
            self._broadcast(["st?"], out)
            if not self.active:  # messages get lost on reconnects: keep asking
                self._broadcast(self.my_vc, out)
        self._propose(now, out)
        return out

    # ---- requests and batching ----------------------------------------------------------

    def _on_request(self, sender, msg, now, out):
        if len(msg) != 3 or not is_uint(msg[1]) or type(msg[2]) is not bytes \
                or len(msg[2]) > self.cfg.max_op_bytes or not is_client(sender):
            return False
        self._admit(sender, msg[1], msg[2], now, out, from_client=True)
        return True

    def _on_fwd(self, sender, msg, now, out):
        if len(msg) != 4 or not is_client(msg[1]) or not is_uint(msg[2]) \
                or type(msg[3]) is not bytes or len(msg[3]) > self.cfg.max_op_bytes:
            return False
        self._admit(msg[1], msg[2], msg[3], now, out, from_client=False)
        return True

    def _admit(self, client, ts, op, now, out, from_client):
        """A request reaches this replica: answer a replay from the cache, else queue it."""
        last = self.store.last_reply(client)
        if last is not None and ts <= last[0]:
            if ts == last[0]:
                self.stats["replayed_requests"] += 1
                out.append((client, ["rep", self.view, ts, last[1]]))
            return
        key = (client, ts)
        if key not in self.pending:
            self.pending[key] = op
            if self.active and self.is_primary():
                self._enqueue(client, ts, op, now)
        if self.active and not self.is_primary() and from_client:
            out.append((self.primary(), ["fwd", client, ts, op]))
        if from_client and self.req_deadline is None:
            self.req_deadline = now + self.cfg.request_timeout
        self._propose(now, out)

    def _enqueue(self, client, ts, op, now):
        if (client, ts) in self.proposed:
            return
        if not self.queue:
            self.queue_since = now
        self.queue.append([client, ts, op])
        self.proposed.add((client, ts))

    def _pipeline_open(self):
        """May this replica, as primary, send another batch now?"""
        return self.active and self.is_primary() and self.seq - self.last_exec < self.cfg.max_inflight \
            and self._in_window(self.seq + 1)

    def _propose(self, now, out):
        """Primary: cut batches while the pipeline and the watermark window allow."""
        cfg = self.cfg
        while self.queue and self._pipeline_open() \
                and (len(self.queue) >= cfg.max_batch or now >= self.queue_since + cfg.batch_timeout):
            batch, self.queue = self.queue[:cfg.max_batch], self.queue[cfg.max_batch:]
            self.queue_since = now
            self.seq += 1
            d = digest(batch)
            self.pps[(self.view, self.seq)] = (d, batch)
            self._note_preprepared(self.seq, self.view, d)
            self.stats["batches_proposed"] += 1
            self._broadcast(["pp", self.view, self.seq, batch], out)
            self._check_prepared(self.view, self.seq, now, out)

    # ---- normal case ------------------------------------------------------------------

    def _note_preprepared(self, seq, view, d):
        q = self.qset.setdefault(seq, {})
        if q.get(d, -1) < view:
            q[d] = view
            self.log.preprepared(seq, view, d)

    def _on_preprepare(self, sender, msg, now, out):
        if len(msg) != 4 or not is_uint(msg[1]) or not is_uint(msg[2]) \
                or not self._valid_batch(msg[3]):
            return False
        view, seq, batch = msg[1], msg[2], msg[3]
        if view != self.view or not self.active or sender != self.primary() \
                or not self._in_window(seq):
            return True
        d = digest(batch)
        # What we pre-prepared in this view, from Q: it outlives a restart, pps does not.
        if any(x != d for x, v in self.qset.get(seq, {}).items() if v == view):
            self.stats["equivocations"] += 1  # the primary equivocates: proof enough to replace it
            self._start_view_change(view + 1, now, out)
            return True
        if (view, seq) in self.pps:
            return True
        self.pps[(view, seq)] = (d, batch)
        self._note_preprepared(seq, view, d)
        self._vote("p", view, seq, d, self.id)
        self._broadcast(["p", view, seq, d], out)
        self._check_prepared(view, seq, now, out)
        return True

    def _on_vote(self, sender, msg, now, out):
        if len(msg) != 4 or not is_uint(msg[1]) or not is_uint(msg[2]) or not is_digest(msg[3]):
            return False
        kind, view, seq, d = msg
        if not (self.view <= view <= self.view + 2) or not self._in_window(seq):
            return True
        if kind == "p" and sender == self.primary(view):
            return True  # the primary's pre-prepare stands for its prepare
        self._vote(kind, view, seq, d, sender)
        if view == self.view and self.active:
            self._check_prepared(view, seq, now, out)
        return True

    def _vote(self, kind, view, seq, d, sender):
        self.votes.setdefault((kind, view, seq), {})[sender] = d

    def _count(self, kind, view, seq, d):
        return sum(1 for x in self.votes.get((kind, view, seq), {}).values() if x == d)

    def _check_prepared(self, view, seq, now, out):
        pp = self.pps.get((view, seq))
        if pp is None:
            return
        d, batch = pp
        if (view, seq) not in self.sent_commit:
            if self._count("p", view, seq, d) < 2 * self.f:
                return
            have = self.pset.get(seq)
            if have is None or have[0] <= view:
                self.pset[seq] = (view, d, batch)
                self.log.prepared(seq, view, d, batch)
            self.sent_commit.add((view, seq))
            self._vote("c", view, seq, d, self.id)
            self._broadcast(["c", view, seq, d], out)
        if seq > self.handed and seq not in self.committed \
                and self._count("c", view, seq, d) >= 2 * self.f + 1:
            self.committed[seq] = batch
            self._execute_ready(now, out)

    def _execute_ready(self, now, out):
        if self.deferred:
            while self.handed + 1 in self.committed:
                seq = self.handed + 1
                batch = self.executing[seq] = self.committed.pop(seq)
                self.ready.append((seq, batch))
                self.handed = seq
            return
        executed = False
        while self.last_exec + 1 in self.committed:
            seq = self.last_exec + 1
            batch = self.committed.pop(seq)
            for client, ts, result in self.store.execute(seq, batch):
                out.append((client, ["rep", self.view, ts, result]))
            self._after_block(seq, batch, self.store.head_hash, now, out)
            executed = True
        if executed:
            self.req_deadline = now + self.cfg.request_timeout if self.pending else None
            self._propose(now, out)

    def take_ready(self):
        """Deferred: the committed batches to execute now, ``[(seq, batch)]`` in seq order."""
        ready, self.ready = self.ready, []
        return ready

    def executed(self, seq, replies, head, now):
        """Deferred: block ``seq`` is executed and stored with hash ``head``; ``replies`` as
        ``ChainStore.execute`` returns them. ``replies`` None: the store failed it, so none
        of the later batches handed out can follow; state transfer catches up instead."""
        out = []
        batch = self.executing.pop(seq, None)
        if batch is None:
            return out
        if replies is None:
            self.stats["execution_failures"] += 1
            self.executing = {}
            self.handed = self.last_exec
            return out
        for client, ts, result in replies:
            out.append((client, ["rep", self.view, ts, result]))
        self._after_block(seq, batch, head, now, out)
        self.req_deadline = now + self.cfg.request_timeout if self.pending else None
        if self.fetch is not None and not self.executing:
            self._advance_fetch(now, out)
        self._propose(now, out)
        return out

    def _after_block(self, seq, batch, head, now, out):
        """Bookkeeping shared by consensus execution and state transfer; ``head`` is the
        hash of block ``seq``."""
        self.last_exec = seq
        self.handed = max(self.handed, seq)
        self.seq = max(self.seq, seq)
        self.stats["blocks"] += 1
        self.stats["requests"] += len(batch)
        for client, ts, _ in batch:
            self.pending.pop((client, ts), None)
            self.proposed.discard((client, ts))
        if seq % self.cfg.checkpoint_interval == 0:
            self.own_ckpts[seq] = head
            self._broadcast(["ck", seq, head], out)
            self._record_checkpoint(self.id, seq, head, now, out)

    # ---- checkpoints and garbage collection -----------------------------------------------

    def _on_checkpoint(self, sender, msg, now, out):
        if len(msg) != 3 or not is_uint(msg[1]) or not is_digest(msg[2]) \
                or msg[1] % self.cfg.checkpoint_interval:
            return False
        self._record_checkpoint(sender, msg[1], msg[2], now, out)
        return True

    def _record_checkpoint(self, sender, seq, d, now, out):
        if seq <= self.stable[0]:
            return
        quorum = 2 * self.f + 1
        if seq <= self.stable[0] + self.cfg.watermark_window:
            votes = self.ckpts.setdefault(seq, {})
            votes[sender] = d
            if sum(1 for x in votes.values() if x == d) >= quorum:
                self._make_stable(seq, d, now, out)
            return
        # Far above our window: we lag. Keep only each sender's latest claim (bounded memory).
        if self.far_ckpts.get(sender, (-1,))[0] < seq:
            self.far_ckpts[sender] = (seq, d)
            if sum(1 for c in self.far_ckpts.values() if c == (seq, d)) >= quorum:
                self._make_stable(seq, d, now, out)

    def _make_stable(self, seq, d, now, out):
        """2f+1 replicas vouch for block ``seq``: collect garbage below it, fetch if behind."""
        own = self.own_ckpts.get(seq)
        if own is not None and own != d:
            self.stats["checkpoint_mismatch"] += 1
        self.stable = (seq, d)
        self.log.set_stable(seq, d)
        self.stats["stable_checkpoints"] += 1
        self.pps = {k: v for k, v in self.pps.items() if k[1] > seq}
        self.votes = {k: v for k, v in self.votes.items() if k[2] > seq}
        self.sent_commit = {k for k in self.sent_commit if k[1] > seq}
        self.committed = {k: v for k, v in self.committed.items() if k > seq}
        self.pset = {k: v for k, v in self.pset.items() if k > seq}
        self.qset = {k: v for k, v in self.qset.items() if k > seq}
        self.ckpts = {k: v for k, v in self.ckpts.items() if k > seq}
        self.own_ckpts = {k: v for k, v in self.own_ckpts.items() if k >= seq}
        self.far_ckpts = {k: v for k, v in self.far_ckpts.items() if v[0] > seq}
        self.seq = max(self.seq, seq)
        if self.handed < seq:
            self._start_fetch(now, out)
        self._propose(now, out)

    # ---- status, catch-up and state transfer --------------------------------------------------

    def _on_status_query(self, sender, msg, now, out):
        if len(msg) != 1:
            return False
        out.append((sender, ["st", self.view, self.active, self.last_exec]))
        if self.stable[0] > 0:
            out.append((sender, ["ck", self.stable[0], self.stable[1]]))
        return True

    def _on_status(self, sender, msg, now, out):
        if len(msg) != 4 or not is_uint(msg[1]) or type(msg[2]) is not bool or not is_uint(msg[3]):
            return False
        self.peer_heights[sender] = msg[3]
        self._claim(sender, msg[1], msg[2], now, out)
        if self._peers_height() > self.handed:
            self._start_fetch(now, out)
        return True

    def _peers_height(self):
        heights = sorted(self.peer_heights.values(), reverse=True)
        return heights[self.f] if len(heights) > self.f else 0

    def _start_fetch(self, now, out):
        if self.fetch is None:
            self._request_blocks(now, out)

    def _request_blocks(self, now, out):
        self.fetch = {"deadline": now + self.cfg.fetch_timeout, "chains": {}}
        self.stats["fetch_rounds"] += 1
        self._broadcast(["fetch", self.last_exec + 1], out)

    def _on_fetch(self, sender, msg, now, out):
        if len(msg) != 2 or not is_uint(msg[1]) or msg[1] == 0:
            return False
        if msg[1] <= self.store.height:
            out.append((sender, ["blocks", self.store.blocks(msg[1], self.cfg.fetch_max_blocks)]))
        return True

    def _on_blocks(self, sender, msg, now, out):
        if len(msg) != 2 or not is_list(msg[1], self.cfg.fetch_max_blocks):
            return False
        chain = []
        for r in msg[1]:
            if not (type(r) is list and len(r) == 5 and is_uint(r[0]) and is_digest(r[1])
                    and self._valid_batch(r[2]) and is_digest(r[3]) and is_digest(r[4])):
                return False
            if chain and (r[0] != chain[-1][1][0] + 1 or r[1] != chain[-1][0]):
                return False  # not a hash chain
            chain.append((block_hash(r[0], r[1], digest(r[2]), r[3], r[4]), r))
        if self.fetch is not None:
            self.fetch["chains"][sender] = chain
            self._advance_fetch(now, out)
        return True

    def _advance_fetch(self, now, out):
        """Apply fetched blocks that are certified: by the stable checkpoint's hash chain,
        or by f+1 peers serving the same block (at least one of them honest). Deferred, it
        waits until the blocks handed out are reported back (``executed`` calls it again)."""
        if self.executing:
            return
        chains = self.fetch["chains"]
        progressed = False
        while True:
            nxt = self.last_exec + 1
            chains = {s: [x for x in c if x[1][0] >= nxt] for s, c in chains.items()}
            chains = {s: c for s, c in chains.items() if c and c[0][1][1] == self.store.head_hash}
            accepted = []
            st_seq, st_digest = self.stable
            for c in chains.values():
                if st_seq >= nxt and len(c) > st_seq - nxt and c[st_seq - nxt][0] == st_digest:
                    accepted = c[:st_seq - nxt + 1]
                    break
            if not accepted:
                votes = collections.Counter(c[0][0] for c in chains.values())
                for s, c in chains.items():
                    if votes[c[0][0]] >= self.f + 1:
                        accepted = c[:1]
                        break
            if not accepted:
                break
            for h, record in accepted:
                if not self.store.apply_block(record, h):
                    self.stats["bad_blocks"] += 1
                    self.fetch["chains"] = {}
                    return
                self.stats["blocks_fetched"] += 1
                self._after_block(record[0], record[2], self.store.head_hash, now, out)
            progressed = True
        self.fetch["chains"] = chains
        if self.last_exec >= max(self.stable[0], self._peers_height()):
            self.fetch = None
        elif progressed:
            self._request_blocks(now, out)
        if progressed:
            self.committed = {k: v for k, v in self.committed.items() if k > self.last_exec}
            self.req_deadline = now + self.cfg.request_timeout if self.pending else None
            self._execute_ready(now, out)

    _handlers = {
        "fwd": _on_fwd,
        "pp": _on_preprepare,
        "p": _on_vote,
        "c": _on_vote,
        "ck": _on_checkpoint,
        "vc": ViewChanges._on_view_change,
        "nv": ViewChanges._on_new_view,
        "st?": _on_status_query,
        "st": _on_status,
        "fetch": _on_fetch,
        "blocks": _on_blocks,
    }

