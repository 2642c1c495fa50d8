"""The PBFT engine, four replicas in one process on a simulated clock.

Every replica is a real ``pbft.Engine`` over a real ``ChainStore`` and ``KvApp`` on an
in-memory SQLite database; the network is a seeded event queue (per-link FIFO like TCP,
with optional loss, duplication and Byzantine rewriting). Every message crosses the wire
codec, so what the engines see is what a socket would deliver. With ``deferred=True`` the
engines hand committed batches out and the simulation runs each one after a random delay,
in order per replica, as a replica's worker thread does. ``crash`` is a kill -9: the engine,
whatever its worker had not executed and what its protocol log had not committed are gone,
the chain store and the rest of the log stay (each replica's are in-memory SQLite databases
that outlive its engine); ``restart`` builds a new engine on them. ``down`` alone is a
partition. Every test ends with
``assert_safe``: no two honest replicas executed different blocks at the same height.
"""
import collections
import heapq
import random
import sqlite3

from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from plugpay.host import pbft
from plugpay.host.kvapp import KvApp
from plugpay.host.pbft_log import ProtocolLog
from plugpay.host.replica import ChainStore
from plugpay.protocol import codec

FAST = dict(checkpoint_interval=4, max_batch=8, batch_timeout=0.002, request_timeout=0.5,
            view_change_timeout=0.5, status_interval=0.25, fetch_timeout=0.2, fetch_max_blocks=8)


def add(name, delta=1):
    return codec.dumps(["add", name, delta])


class Net:
    """A simulated cluster: engines, a network, and clients that retransmit like ours."""

    def __init__(self, n=4, seed=0, drop=0.0, dup=0.0, delay=(0.0005, 0.003), deferred=False,
                 exec_delay=(0.0005, 0.01), **cfg):
        self.cfg = pbft.Config(n=n, **dict(FAST, **cfg))
        self.n, self.f = n, self.cfg.f
        self.rng = random.Random(seed)
        self.drop, self.dup, self.delay = drop, dup, delay
        self.exec_delay = exec_delay
        self.exec_free = {}        # replica -> when its worker is done with what it was handed
        self.now = 0.0
        self.events = []
        self.counter = 0
        self.link_free = {}
        self.down = set()
        self.byzantine = {}        # replica -> fn(dst, msg) -> [msgs]
        self.deferred = deferred
        self.stores, self.logs, self.engines = [], [], []
        self.lives = [0] * n       # how many times each replica was killed: its worker's events die with it
        for i in range(n):
            conn = sqlite3.connect(":memory:")
            store = ChainStore(conn, KvApp(conn))
            self.stores.append(store)
            self.logs.append(ProtocolLog(sqlite3.connect(":memory:")))
            self.engines.append(pbft.Engine(i, self.cfg, store, self.logs[i], now=0.0, deferred=deferred))
        self.outstanding = {}      # (client, ts) -> [op, votes {replica: result}, next retry]
        self.results = {}          # (client, ts) -> accepted result
        self.client_ts = collections.Counter()

    # -- network

    def _emit(self, src, out):
        self.logs[src].sync()  # as the replica does before its frames leave
        for seq, batch in self.engines[src].take_ready():
            t = max(self.now + self.rng.uniform(*self.exec_delay), self.exec_free.get(src, 0.0))
            self.exec_free[src] = t
            self._push(t, ("exec", self.lives[src], src, (seq, batch)))
        for dst, msg in out:
            for m in (self.byzantine[src](dst, msg) if src in self.byzantine else [msg]):
                if type(dst) is str:
                    self._reply(src, dst, m)
                else:
                    self._send(src, dst, m)

    def _send(self, src, dst, msg):
        if self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            t = max(self.now + self.rng.uniform(*self.delay), self.link_free.get((src, dst), 0.0))
            self.link_free[(src, dst)] = t
            self._push(t, ("msg", src, dst, codec.dumps(msg)))

    def _push(self, t, event):
        self.counter += 1
        heapq.heappush(self.events, (t, self.counter, event))

    def _reply(self, src, client, msg):
        entry = self.outstanding.get((client, msg[2]))
        if entry is None:
            return
        entry[1][src] = msg[3]
        if sum(1 for r in entry[1].values() if r == msg[3]) >= self.f + 1:
            self.results[(client, msg[2])] = msg[3]
            del self.outstanding[(client, msg[2])]

    # -- clients

    def submit(self, client, op, to=None):
        """Send a request as a client would: to the primary of view 0, later to all."""
        self.client_ts[client] += 1
        ts = self.client_ts[client]
        self.outstanding[(client, ts)] = [op, {}, self.now + 0.3]
        targets = [0] if to is None else to
        for r in targets:
            self._push(self.now + 0.001, ("req", client, r, (ts, op)))
        return (client, ts)

    def _retransmit(self):
        for (client, ts), entry in list(self.outstanding.items()):
            if self.now >= entry[2]:
                entry[2] = self.now + 0.3
                for r in range(self.n):
                    self._push(self.now + 0.001, ("req", client, r, (ts, entry[0])))

    # -- driving

    def run(self, until, done=lambda: False, max_steps=300_000):
        """Advance simulated time to ``until`` (or until ``done()``), bounded in steps."""
        for _ in range(max_steps):
            if done():
                return True
            live = [i for i in range(self.n) if i not in self.down]
            deadline = min((self.engines[i].next_deadline() for i in live), default=float("inf"))
            t_event = self.events[0][0] if self.events else float("inf")
            t = min(deadline, t_event, self.now + 0.05)
            if t > until:
                self.now = until
                return done()
            self.now = max(self.now, t)
            if t_event <= deadline and self.events and self.events[0][0] <= self.now:
                _, _, ev = heapq.heappop(self.events)
                self._deliver(ev)
            else:
                for i in live:
                    if self.engines[i].next_deadline() <= self.now:
                        self._emit(i, self.engines[i].tick(self.now))
            self._retransmit()
        raise AssertionError("simulation did not settle within %d steps" % max_steps)

    def crash(self, i):
        """kill -9: what the log holds unsynced is lost with the engine."""
        self.down.add(i)
        self.lives[i] += 1
        self.logs[i].conn.rollback()

    def restart(self, i):
        self.engines[i] = pbft.Engine(i, self.cfg, self.stores[i], self.logs[i], now=self.now, deferred=self.deferred)
        self.down.discard(i)

    def _deliver(self, ev):
        kind, src, dst, payload = ev
        if kind == "exec":  # the worker finishes even while the replica is cut off, not once killed
            if src != self.lives[dst]:
                return
            seq, batch = payload
            store = self.stores[dst]
            replies = store.execute(seq, batch)
            self._emit(dst, self.engines[dst].executed(seq, replies, store.head_hash, self.now))
            return
        if kind == "req":
            if dst not in self.down:
                ts, op = payload
                self._emit(dst, self.engines[dst].receive(src, ["req", ts, op], self.now))
            return
        if dst in self.down or src in self.down:
            return
        msg = codec.loads(payload, max_bytes=1 << 24)
        self._emit(dst, self.engines[dst].receive(src, msg, self.now))

    def wait(self, keys, until):
        return self.run(until, lambda: all(k in self.results for k in keys))

    # -- observations

    def heights(self):
        return [s.height for s in self.stores]

    def chain(self, i):
        return dict(self.stores[i].conn.execute("SELECT height, hash FROM blocks"))

    def counter_value(self, i, name):
        return codec.loads(self.stores[i].app.query(codec.dumps(["counter", name])))[1]


def assert_safe(net, honest=None):
    """No two honest replicas hold different blocks at the same height."""
    honest = range(net.n) if honest is None else honest
    chains = [net.chain(i) for i in honest]
    for a in chains:
        for b in chains:
            for h in a.keys() & b.keys():
                assert a[h] == b[h], "fork at height %d" % h
    for i in honest:
        c = chains[list(honest).index(i)]
        for h in c:
            assert h == 1 or h - 1 in c


def test_normal_case_commits_and_replies_with_f_plus_1():
    net = Net()
    keys = [net.submit("alice/0", add("c", 5))]
    assert net.wait(keys, 2.0)
    assert codec.loads(net.results[keys[0]]) == ["ok", 5]
    net.run(net.now + 0.1)
    assert net.heights() == [1, 1, 1, 1]
    assert all(net.counter_value(i, "c") == 5 for i in range(4))
    assert len({s.head_hash for s in net.stores}) == 1
    assert_safe(net)


def test_batching_cuts_few_blocks_of_at_most_max_batch():
    net = Net()
    keys = [net.submit("load/%d" % lane, add("c")) for lane in range(50)]
    assert net.wait(keys, 3.0)
    net.run(net.now + 0.1)
    sizes = [len(codec.loads(b)) for (b,) in net.stores[1].conn.execute("SELECT batch FROM blocks")]
    assert sum(sizes) == 50 and max(sizes) <= net.cfg.max_batch and len(sizes) < 15
    assert net.counter_value(2, "c") == 50
    assert_safe(net)


def test_client_accepts_f_plus_1_matching_results_despite_a_lying_replica():
    net = Net()

    def lie(dst, msg):
        if type(dst) is str:
            return [["rep", msg[1], msg[2], codec.dumps(["ok", 666])]]
        return [msg]

    net.byzantine[3] = lie
    keys = [net.submit("bob/0", add("c", 2)) for _ in range(3)]
    assert net.wait(keys, 3.0)
    assert sorted(codec.loads(net.results[k])[1] for k in keys) == [2, 4, 6]
    assert_safe(net)


def test_replayed_request_gets_the_cached_reply_and_is_never_executed_twice():
    net = Net()
    key = net.submit("carol/0", add("c", 7))
    assert net.wait([key], 2.0)
    net.run(net.now + 0.1)
    height = net.heights()
    # The same (client, ts) again, to everyone, several times: answered from the cache.
    for _ in range(3):
        for r in range(4):
            net._emit(r, net.engines[r].receive("carol/0", ["req", key[1], add("c", 7)], net.now))
    net.run(net.now + 0.5)
    assert net.heights() == height
    assert all(net.counter_value(i, "c") == 7 for i in range(4))
    assert all(e.stats["replayed_requests"] == 3 for e in net.engines)
    assert_safe(net)


def test_duplicates_inside_a_block_run_once_and_stale_requests_not_at_all():
    """What a Byzantine primary could propose: the store still executes each request once."""
    conn = sqlite3.connect(":memory:")
    store = ChainStore(conn, KvApp(conn))
    replies = store.execute(1, [["x/0", 5, add("d")], ["x/0", 5, add("d")], ["x/0", 4, add("d")]])
    assert replies == [("x/0", 5, codec.dumps(["ok", 1]))]
    replies = store.execute(2, [["x/0", 5, add("d")], ["x/0", 3, add("d")], ["x/0", 6, add("d", 10)]])
    assert replies == [("x/0", 5, codec.dumps(["ok", 1])), ("x/0", 6, codec.dumps(["ok", 11]))]
    assert codec.loads(store.app.query(codec.dumps(["counter", "d"]))) == ["ok", 11]
    assert store.last_reply("x/0") == (6, codec.dumps(["ok", 11]))
    assert store.results(2) == [["x/0", 6, codec.dumps(["ok", 11])]]  # what block 2 ran, no replays
    assert store.results(3) is None


def test_a_chain_of_an_earlier_version_gets_the_results_column(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "old.db"))
    conn.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL, prev BLOB NOT NULL,"
                 " batch BLOB NOT NULL, results_digest BLOB NOT NULL, state_digest BLOB NOT NULL)")
    conn.commit()
    store = ChainStore(conn, KvApp(conn))
    store.execute(1, [["x/0", 1, add("d")]])
    assert store.results(1) == [["x/0", 1, codec.dumps(["ok", 1])]]
    conn.execute("UPDATE blocks SET results = NULL")  # as a block stored before the column
    assert store.results(1) is None


def test_checkpoints_become_stable_and_collect_garbage():
    net = Net()
    for i in range(30):
        key = net.submit("eve/0", add("c"))
        assert net.wait([key], net.now + 2.0)
    net.run(net.now + 0.5)
    for e in net.engines:
        assert e.stable[0] >= 28 - 28 % 4 and e.stable[0] % 4 == 0
        assert e.stable[1] == net.stores[e.id].block_hash(e.stable[0])
        assert all(seq > e.stable[0] for _, seq in e.pps)
        assert all(key[2] > e.stable[0] for key in e.votes)
        assert all(seq > e.stable[0] for seq in e.pset)
        assert len(e.pps) <= e.cfg.watermark_window
    assert_safe(net)


def test_silent_primary_is_replaced_and_the_cluster_progresses():
    net = Net()
    key = net.submit("frank/0", add("c"))
    assert net.wait([key], 2.0)
    net.byzantine[0] = lambda dst, msg: []
    keys = [net.submit("frank/%d" % lane, add("c")) for lane in range(1, 4)]
    assert net.wait(keys, 8.0)
    assert all(net.engines[i].view >= 1 and net.engines[i].active for i in (1, 2, 3))
    assert all(codec.loads(net.results[k])[0] == "ok" for k in keys)
    net.run(net.now + 0.2)
    assert all(net.counter_value(i, "c") == 4 for i in (1, 2, 3))
    assert_safe(net, honest=[1, 2, 3])


def test_crashed_primary_mid_load_loses_nothing_committed():
    net = Net()
    keys = [net.submit("gus/%d" % lane, add("c")) for lane in range(20)]
    net.run(0.004)
    net.down.add(0)
    assert net.wait(keys, 10.0)
    net.run(net.now + 0.3)
    assert all(net.counter_value(i, "c") == 20 for i in (1, 2, 3))
    assert_safe(net)


def test_equivocating_primary_causes_no_divergence_and_is_replaced():
    net = Net()

    def equivocate(dst, msg):
        if msg[0] == "pp" and msg[1] == 0:
            batch = msg[3] + [["mallory/%d" % dst, 1, add("evil", dst)]]
            return [["pp", msg[1], msg[2], batch]]
        return [msg]

    net.byzantine[0] = equivocate
    keys = [net.submit("hank/%d" % lane, add("c")) for lane in range(3)]
    assert net.wait(keys, 10.0)
    net.run(net.now + 0.3)
    assert all(net.engines[i].view >= 1 for i in (1, 2, 3))
    assert all(net.counter_value(i, "evil") == 0 for i in (1, 2, 3))
    assert all(net.counter_value(i, "c") == 3 for i in (1, 2, 3))
    assert_safe(net, honest=[1, 2, 3])


def test_backup_sending_wrong_digests_is_outvoted():
    net = Net()

    def corrupt(dst, msg):
        if msg[0] in ("p", "c", "ck"):
            return [msg[:-1] + [bytes(32)]]
        return [msg]

    net.byzantine[2] = corrupt
    keys = [net.submit("ivy/%d" % lane, add("c")) for lane in range(10)]
    assert net.wait(keys, 3.0)
    net.run(net.now + 0.2)
    assert all(e.view == 0 for e in net.engines)
    assert all(net.counter_value(i, "c") == 10 for i in (0, 1, 3))
    assert_safe(net, honest=[0, 1, 3])


def test_lagging_replica_catches_up_by_state_transfer():
    net = Net()
    net.down.add(3)
    for i in range(25):
        key = net.submit("jo/0", add("c"))
        assert net.wait([key], net.now + 2.0)
    assert net.stores[3].height == 0
    net.down.discard(3)
    net.run(net.now + 3.0, lambda: net.stores[3].height == net.stores[0].height)
    assert net.stores[3].height == net.stores[0].height == 25
    assert net.stores[3].head_hash == net.stores[0].head_hash
    assert net.engines[3].stats["blocks_fetched"] > 0
    # It takes part again: with replica 0 gone, 1, 2 and 3 still reach a quorum.
    net.down.add(0)
    key = net.submit("jo/1", add("c"))
    assert net.wait([key], net.now + 8.0)
    assert_safe(net)


def test_malformed_and_misrouted_messages_are_counted_not_fatal():
    net = Net()
    e = net.engines[1]
    junk = [[], ["pp"], ["pp", 0, 1, [[1, 2, 3]]], ["p", 0, 1, b"short"], ["vc", 1, 0, [], [[1, 0, bytes(32), []]], []],
            ["zz"], "text", ["blocks", [[1, 2, 3, 4, 5]]], ["nv", 1, [[9, bytes(32)]]]]
    for m in junk:
        assert e.receive(2, m, 0.0) == []
    assert e.receive(1, ["st?"], 0.0) == []         # from itself
    assert e.receive("x/0", ["p", 0, 1, bytes(32)], 0.0) == []  # a client speaking replica
    assert e.stats["malformed"] == len(junk) + 2
    key = net.submit("kim/0", add("c"))
    assert net.wait([key], 2.0)
    assert_safe(net)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32), drop=st.floats(0, 0.15), dup=st.floats(0, 0.2),
       slow=st.floats(0.001, 0.05))
def test_random_loss_delay_and_duplication_never_fork(seed, drop, dup, slow):
    net = Net(seed=seed, drop=drop, dup=dup, delay=(0.0005, slow))
    keys = [net.submit("p%d/0" % c, add("c")) for c in range(6)]
    net.run(1.0)
    keys += [net.submit("p%d/1" % c, add("c")) for c in range(6)]
    net.run(6.0, lambda: all(k in net.results for k in keys))
    assert_safe(net)
    for k, result in net.results.items():
        assert codec.loads(result)[0] == "ok"
    if drop == 0:
        assert all(k in net.results for k in keys)


def test_deferred_execution_keeps_voting_while_blocks_run_and_commits_the_same_chain():
    net = Net(deferred=True, exec_delay=(0.002, 0.02))
    keys = [net.submit("lee/%d" % lane, add("c")) for lane in range(40)]
    assert net.wait(keys, 5.0)
    net.run(net.now + 0.5)
    assert len(set(net.heights())) == 1
    assert all(net.counter_value(i, "c") == 40 for i in range(4))
    assert all(e.last_exec == e.handed and not e.executing for e in net.engines)
    assert_safe(net)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), drop=st.floats(0, 0.1), slow=st.floats(0.001, 0.05))
def test_deferred_execution_with_loss_and_a_lagging_replica_never_forks(seed, drop, slow):
    net = Net(seed=seed, drop=drop, deferred=True, exec_delay=(0.0005, slow))
    net.down.add(3)
    keys = [net.submit("q%d/0" % c, add("c")) for c in range(6)]
    net.run(1.5)
    net.down.discard(3)
    keys += [net.submit("q%d/1" % c, add("c")) for c in range(6)]
    net.run(8.0, lambda: all(k in net.results for k in keys) and len(set(net.heights())) == 1)
    assert_safe(net)
    for result in net.results.values():
        assert codec.loads(result)[0] == "ok"
    if drop == 0:
        assert all(k in net.results for k in keys)
        assert len(set(net.heights())) == 1


# ---- crashes and restarts beyond f -------------------------------------------------------------

def live_view(net):
    return max(net.engines[i].view for i in range(net.n) if i not in net.down)


def fail_primaries(net, rounds, client="fail"):
    """Kill the primary ``rounds`` times, each time until a request confirms without it,
    then restart it: the view climbs by one per round or more."""
    for r in range(rounds):
        primary = live_view(net) % net.n
        net.crash(primary)
        key = net.submit("%s%d/0" % (client, r), add("c"), to=range(net.n))
        assert net.wait([key], net.now + 30.0), "round %d: no view change" % r
        net.restart(primary)
        net.run(net.now + 0.5)


def executed_results(net, i):
    """``{(client, ts): result}`` of every request in replica ``i``'s chain."""
    executed = {}
    for (height,) in net.stores[i].conn.execute("SELECT height FROM blocks"):
        for client, ts, result in net.stores[i].results(height):
            executed[(client, ts)] = result
    return executed


def confirmed_in_chains(net, replicas):
    """Check that every confirmed request is in each of ``replicas``' chains with the same
    result."""
    for i in replicas:
        executed = executed_results(net, i)
        for key, result in net.results.items():
            assert executed.get(key) == result, "replica %d lost confirmed request %r" % (i, key)


def test_protocol_log_keeps_what_was_synced_and_forgets_below_the_stable_checkpoint():
    log = ProtocolLog(sqlite3.connect(":memory:"))
    assert log.load() is None
    log.start(0, (0, pbft.GENESIS))
    batch = [["x/0", 1, add("c")]]
    for seq in (3, 5):
        log.preprepared(seq, 2, pbft.digest(batch))
        log.prepared(seq, 2, pbft.digest(batch), batch)
    log.set_view(4, False)
    log.sync()
    log.set_view(5, True)
    log.conn.rollback()  # killed before the next sync
    saved = log.load()
    assert (saved.view, saved.active, saved.stable) == (4, False, (0, pbft.GENESIS))
    assert saved.pset == {3: (2, pbft.digest(batch), batch), 5: (2, pbft.digest(batch), batch)}
    assert saved.qset == {3: {pbft.digest(batch): 2}, 5: {pbft.digest(batch): 2}}
    log.set_stable(4, bytes([1]) * 32)
    log.sync()
    saved = log.load()
    assert saved.stable == (4, bytes([1]) * 32) and list(saved.pset) == [5] and list(saved.qset) == [5]


def test_two_replicas_killed_in_a_high_view_rejoin_when_restarted():
    """The issue's wedge: view 8, the primary and a backup killed; the survivors change to
    view 9 and wait for a third; the restarted pair come back changing views as well."""
    net = Net(seed=3)
    fail_primaries(net, 8)
    assert min(e.view for e in net.engines) >= 8
    primary = live_view(net) % net.n
    backup = (primary + 2) % net.n
    net.crash(primary)
    net.crash(backup)
    key = net.submit("late/0", add("c"), to=range(4))
    net.run(net.now + 3.0)
    assert key not in net.results and not any(net.engines[i].active for i in range(4) if i not in net.down)
    net.restart(primary)
    net.restart(backup)
    assert net.wait([key], net.now + 10.0)
    assert all(e.stats["restarts"] >= 1 for e in (net.engines[primary], net.engines[backup]))
    net.run(net.now + 1.0)
    confirmed_in_chains(net, range(4))
    assert_safe(net)


def test_a_replica_many_views_behind_joins_the_others_when_nobody_is_active():
    """Replica 3 sleeps in view 0 while the others climb past view 2n; then their primary
    dies and the two left change views, waiting for a third. Nobody works in any view; 3
    comes back and follows the f+1 VIEW-CHANGEs it is sent, many views up, in one step."""
    net = Net(seed=5)
    net.crash(3)
    for r in range(12):
        if live_view(net) >= 2 * net.n:
            break
        primary = live_view(net) % net.n
        if primary != 3:  # 3's views pass by themselves: the others time out
            net.crash(primary)
            key = net.submit("x%d/0" % r, add("c"), to=range(4))
            net.run(net.now + 1.0)
            net.restart(primary)
            assert net.wait([key], net.now + 10.0)
        net.run(net.now + 2.0)
    view = live_view(net)
    assert view >= 2 * net.n
    net.crash(view % net.n)
    late = net.submit("late/0", add("c"), to=range(4))
    net.run(net.now + 3.0)
    assert late not in net.results and not any(net.engines[i].active for i in range(4) if i not in net.down)
    net.restart(3)
    assert net.wait([late], net.now + 10.0)
    assert net.engines[3].view > view and net.engines[3].stats["views_adopted"] + net.engines[3].stats["new_views"] >= 1
    net.restart(view % net.n)
    net.run(net.now + 2.0, lambda: len(set(net.heights())) == 1)
    confirmed_in_chains(net, range(4))
    assert_safe(net)


def test_a_batch_only_one_replica_executed_survives_the_crash_of_all_four():
    """Every replica prepared batch 1 and sent its commit, but only replica 1 received the
    commits and executed it; then all four are killed. Restarted, none may agree to another
    batch at sequence 1: their prepared certificates are in their logs, and the primary does
    not propose again in the view it was killed in."""
    net = Net(seed=11)
    for src in range(net.n):
        net.byzantine[src] = lambda dst, msg: [] if msg[0] == "c" and dst != 1 else [msg]
    first = net.submit("a/0", add("c", 5))
    assert net.run(2.0, lambda: net.stores[1].height == 1)
    assert net.heights() == [0, 1, 0, 0] and first not in net.results
    net.byzantine.clear()
    for i in range(net.n):
        net.crash(i)
    for i in (2, 0, 3, 1):
        net.restart(i)
    second = net.submit("b/0", add("c", 7), to=range(net.n))
    assert net.wait([first, second], net.now + 10.0)
    net.run(net.now + 1.0, lambda: len(set(net.heights())) == 1)
    assert [net.counter_value(i, "c") for i in range(net.n)] == [12] * net.n
    assert codec.loads(net.results[first]) == ["ok", 5]
    assert_safe(net)


def test_restarted_backups_never_prepare_a_second_batch_where_they_prepared_one():
    """A Byzantine primary gets batch A prepared everywhere and committed at replica 1
    only; 2 and 3 are killed before they execute it. Restarted, they work on in view 0 and
    are offered batch B at the same sequence number, commits for it included: their logs
    say they pre-prepared A there, so they refuse B and replace the primary, and the new
    view re-issues A."""
    net = Net(seed=13)
    for src in range(net.n):
        net.byzantine[src] = lambda dst, msg: [] if msg[0] == "c" and dst != 1 else [msg]
    first = net.submit("a/0", add("c", 5))
    assert net.run(2.0, lambda: net.stores[1].height == 1)
    net.byzantine.clear()
    net.byzantine[0] = lambda dst, msg: []  # from now on it only says what we make it say
    for i in (2, 3):
        net.crash(i)
        net.restart(i)
    assert [(net.engines[i].view, net.engines[i].active) for i in (2, 3)] == [(0, True)] * 2
    batch = [["mallory/0", 1, add("c", 1000)]]
    d = pbft.digest(batch)
    for dst in (2, 3):
        net._send(0, dst, ["pp", 0, 1, batch])
        net._send(0, dst, ["c", 0, 1, d])
    net.run(net.now + 0.1)
    assert_safe(net, honest=[1, 2, 3])
    assert all(net.engines[i].stats["equivocations"] == 1 and net.engines[i].view >= 1 for i in (2, 3))
    assert net.wait([first], net.now + 10.0)
    net.run(net.now + 1.0, lambda: len(set(net.heights()[1:])) == 1)
    assert [net.counter_value(i, "c") for i in (1, 2, 3)] == [5, 5, 5]
    assert_safe(net, honest=[1, 2, 3])


def test_a_restarted_primary_never_proposes_again_in_the_view_it_worked_in():
    """Primary 0 gets batch A prepared by 1 and Byzantine 3 (2 never sees it) and
    committed at 1 only, then is killed and restarted: its log has what it pre-prepared,
    but not the batches it proposed. Were it to propose in view 0 again, its next batch
    would take sequence 1 once more, and 2 with 3's help would commit it there: a fork with
    1. It changes views instead, and the new view re-issues A."""
    net = Net(seed=17)
    for src in range(net.n):
        net.byzantine[src] = lambda dst, msg: [] if (msg[0] == "c" and dst != 1) or (msg[0] == "pp" and dst == 2) \
            else [msg]
    first = net.submit("a/0", add("c", 5))
    assert net.run(2.0, lambda: net.stores[1].height == 1)
    assert 1 not in net.engines[2].qset
    net.byzantine.clear()
    net.crash(0)
    net.restart(0)
    net.byzantine[3] = lambda dst, msg: []  # 3 only says what we make it say
    second = net.submit("b/0", add("c", 7))
    d = pbft.digest([["b/0", 1, add("c", 7)]])
    for dst in (0, 2):
        for kind in ("p", "c"):
            net._send(3, dst, [kind, 0, 1, d])
    confirmed = net.wait([first, second], net.now + 10.0)
    assert_safe(net, honest=[0, 1, 2])
    assert confirmed
    net.run(net.now + 1.0, lambda: len(set(net.heights()[:3])) == 1)
    assert [net.counter_value(i, "c") for i in range(3)] == [12, 12, 12]
    assert codec.loads(net.results[first]) == ["ok", 5]


def test_a_byzantine_replica_claiming_a_far_view_moves_nobody():
    """Replica 3 says in every status and VIEW-CHANGE that it is working in view 10**9.
    One voice is not f+1: the honest replicas change views among themselves and commit."""
    net = Net(seed=7)
    far = 10 ** 9

    def boast(dst, msg):
        if msg[0] == "st":
            return [["st", far, True, msg[3]]]
        if msg[0] == "vc":
            return [["vc", far] + msg[2:]]
        return [msg]

    net.byzantine[3] = boast
    keys = [net.submit("b%d/0" % i, add("c")) for i in range(3)]
    assert net.wait(keys, 3.0)
    net.crash(0)
    late = net.submit("b9/0", add("c"), to=range(4))
    net.run(net.now + 3.0)
    net.restart(0)
    assert net.wait([late], net.now + 10.0)
    assert all(net.engines[i].view < 5 for i in range(3))
    assert_safe(net, honest=[0, 1, 2])


class CrashCampaign(RuleBasedStateMachine):
    """Crashes, restarts and message loss after the view has been driven up
    (by killing primaries) and under load, with immediate or deferred execution; every step
    keeps the chains fork-free and every confirmed result where it was; at the end, once
    2f+1 replicas run on a lossless network, a new request confirms and nothing confirmed
    is missing anywhere."""

    @initialize(seed=st.integers(0, 2 ** 32), deferred=st.booleans(), rounds=st.integers(0, 8))
    def start(self, seed, deferred, rounds):
        self.net = Net(seed=seed, deferred=deferred)
        self.clients = 0
        fail_primaries(self.net, rounds)

    @rule(count=st.integers(0, 8), seconds=st.floats(0.001, 3.0))
    def load(self, count, seconds):
        for _ in range(count):
            self.clients += 1
            self.net.submit("load%d/0" % self.clients, add("c"))
        self.net.run(self.net.now + seconds)

    @precondition(lambda self: len(self.net.down) < self.net.n)
    @rule(which=st.sampled_from(["primary", "backup", "all"]), data=st.data())
    def crash(self, which, data):
        up = sorted(set(range(self.net.n)) - self.net.down)
        if which == "all":
            victims = up
        elif which == "primary":
            victims = [live_view(self.net) % self.net.n]
        else:
            victims = [data.draw(st.sampled_from(up))]
        for i in victims:
            self.net.crash(i)

    @precondition(lambda self: self.net.down)
    @rule(data=st.data())
    def restart(self, data):
        self.net.restart(data.draw(st.sampled_from(sorted(self.net.down))))

    @rule(drop=st.sampled_from([0.0, 0.05, 0.3]))
    def loss(self, drop):
        self.net.drop = drop

    @invariant()
    def no_fork_and_nothing_confirmed_changes(self):
        assert_safe(self.net)
        for i in range(self.net.n):
            executed = executed_results(self.net, i)
            for key, result in self.net.results.items():
                assert executed.get(key, result) == result, "replica %d holds another result for %r" % (i, key)

    def teardown(self):
        net = self.net
        net.drop = 0.0
        for i in sorted(net.down)[:2 * net.f + 1 - (net.n - len(net.down))]:
            net.restart(i)
        key = net.submit("probe/0", add("c"), to=range(net.n))
        assert net.wait([key], net.now + 600.0), "no progress with 2f+1 replicas up: %r" % (
            [(e.view, e.active) for e in net.engines],)
        for i in sorted(net.down):
            net.restart(i)
        net.run(net.now + 600.0, lambda: not net.outstanding and len(set(net.heights())) == 1)
        assert not net.outstanding and len(set(net.heights())) == 1
        confirmed_in_chains(net, range(net.n))
        assert_safe(net)


TestCrashCampaign = CrashCampaign.TestCase
TestCrashCampaign.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
