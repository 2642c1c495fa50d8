"""A small replicated key/value + counter store: the reference ``Application``.

It exists so the consensus layer can be tested and smoke-run (``ledger up --app kv``)
against a real deterministic application that honours exactly the interface the ledger
state machine plugs into; nothing in it is specific to tests.

Operations and results are CBOR lists:

==============================  =====================================
operation                       result
==============================  =====================================
``["put", key, value]``         ``["ok"]``
``["get", key]``                ``["ok", value or null]``
``["add", counter, delta]``     ``["ok", new value]``
anything else                   ``["err", reason]``
==============================  =====================================

``key`` and ``counter`` are text (at most 256 bytes), ``value`` bytes, ``delta`` an
integer; counters stay within signed 64 bits. The state digest is a running hash of every
write, kept in the database so it survives restarts and rolls back with the writes: it
costs one hash per block instead of a scan of the whole store.
"""
import hashlib
import sqlite3

from plugpay.protocol import codec

MAX_KEY = 256
INT64 = 1 << 63


class KvApp:
    """Replicated key/value and counter store (see the module docstring for the ops)."""

    def __init__(self, conn: sqlite3.Connection, **options):
        if options:
            raise ValueError("kvapp takes no options, got %s" % ", ".join(sorted(options)))
        self.conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS kv_meta (id INTEGER PRIMARY KEY CHECK (id = 0), digest BLOB NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO kv_meta VALUES (0, ?)", (bytes(32),))
        self.reload()

    def reload(self):
        """Re-read the cached digest after the replica rolled a transaction back."""
        self._digest = self.conn.execute("SELECT digest FROM kv_meta WHERE id = 0").fetchone()[0]

    def state_digest(self) -> bytes:
        return self._digest

    def execute(self, height: int, requests: list) -> list:
        results = []
        writes = []
        for request in requests:
            result, write = self._apply(request)
            results.append(codec.dumps(result))
            if write is not None:
                writes.append(write)
        if writes:
            h = hashlib.sha256(self._digest)
            h.update(codec.dumps([height, writes]))
            self._digest = h.digest()
            self.conn.execute("UPDATE kv_meta SET digest = ? WHERE id = 0", (self._digest,))
        return results

    def _apply(self, request):
        """One operation: (result, write record for the digest or None). Never raises."""
        try:
            op = codec.loads(request, "kv request")
        except codec.DecodeError as e:
            return ["err", str(e)], None
        if type(op) is not list or not op or type(op[0]) is not str:
            return ["err", "expected [name, args...]"], None
        name = op[0]
        if name == "put" and len(op) == 3 and _is_key(op[1]) and type(op[2]) is bytes:
            self.conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (op[1], op[2]))
            return ["ok"], op
        if name == "get" and len(op) == 2 and _is_key(op[1]):
            return ["ok", self._get(op[1])], None
        if name == "add" and len(op) == 3 and _is_key(op[1]) and type(op[2]) is int:
            value = self._counter(op[1]) + op[2]
            if not -INT64 <= value < INT64:
                return ["err", "counter overflow"], None
            self.conn.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (op[1], value))
            return ["ok", value], op
        return ["err", "unknown or malformed operation"], None

    def _get(self, key):
        row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _counter(self, name):
        row = self.conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else row[0]

    def query(self, request: bytes) -> bytes:
        """Read-only ``["get", key]`` or ``["counter", name]``."""
        try:
            op = codec.loads(request, "kv query")
        except codec.DecodeError as e:
            return codec.dumps(["err", str(e)])
        if type(op) is list and len(op) == 2 and _is_key(op[1]):
            if op[0] == "get":
                return codec.dumps(["ok", self._get(op[1])])
            if op[0] == "counter":
                return codec.dumps(["ok", self._counter(op[1])])
        return codec.dumps(["err", "unknown or malformed query"])

    def snapshot(self) -> bytes:
        kv = [list(r) for r in self.conn.execute("SELECT key, value FROM kv ORDER BY key")]
        counters = [list(r) for r in self.conn.execute("SELECT name, value FROM counters ORDER BY name")]
        return codec.dumps([self._digest, kv, counters])

    def restore(self, data: bytes):
        digest, kv, counters = codec.loads(data, "kv snapshot", max_bytes=1 << 30)
        self.conn.execute("DELETE FROM kv")
        self.conn.execute("DELETE FROM counters")
        self.conn.executemany("INSERT INTO kv VALUES (?, ?)", kv)
        self.conn.executemany("INSERT INTO counters VALUES (?, ?)", counters)
        self.conn.execute("UPDATE kv_meta SET digest = ? WHERE id = 0", (digest,))
        self._digest = digest


def _is_key(x):
    return type(x) is str and 0 < len(x.encode()) <= MAX_KEY
