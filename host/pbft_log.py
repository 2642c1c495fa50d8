"""What a PBFT replica must remember across a crash, so that it never contradicts itself.

Castro and Liskov's safety argument counts every honest replica's word once: a request
committed in some view was prepared by 2f+1 replicas, any 2f+1 VIEW-CHANGEs include f+1 of
them, and an honest one among those reports the certificate, so no new view can choose
anything else at that sequence number. A replica that forgets after a crash what it prepared
is, for that argument, one more faulty replica; after f+1 such restarts a committed request
can be replaced by another (a fork). So the engine records here, and the owner commits
(``sync``: an fsync under ``synchronous=FULL``) before the messages of each step leave:

* the view it enters, and whether it works in it (installed or adopted) or is still
  changing to it: before its VIEW-CHANGE, NEW-VIEW or first vote in that view;
* what it pre-prepared (Q: sequence number and digest, with the highest view): before its
  PRE-PREPARE or PREPARE. A restarted backup works on in its view, and Q keeps it from
  preparing a second batch at a sequence number. Q is also what lets a new view choose a
  batch someone prepared (Castro's A2: f+1 replicas pre-prepared it): a replica that had
  lost it after a crash would leave such a batch neither chosen nor replaceable by a null
  one, and the 2f+1 replicas that run stuck. A restarted primary cannot know the batches
  it proposed, so it never proposes again in that view (``pbft.Engine`` restarts it
  changing to the next one);
* what it prepared (P: the highest view, digest and batch per sequence number): before its
  COMMIT; the batch too, because the new view may have to re-issue it from this record;
* the stable checkpoint, below which Q and P are dropped.

The records live in their own SQLite file: the worker thread that executes blocks holds the
chain database's write lock for the length of a block, and the votes must not wait for it.
"""
from plugpay.protocol import codec

MAX_RECORD = 64 << 20


class Saved:
    """What ``ProtocolLog.load`` found: the view, whether the replica worked in it, the
    stable checkpoint ``(seq, digest)``, ``qset`` ``{seq: {digest: view}}`` and ``pset``
    ``{seq: (view, digest, batch)}``."""

    def __init__(self, view, active, stable, qset, pset):
        self.view = view
        self.active = active
        self.stable = stable
        self.qset = qset
        self.pset = pset


class ProtocolLog:
    """The durable part of one replica's protocol state, on a SQLite connection."""

    def __init__(self, conn):
        self.conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), view INTEGER NOT NULL,"
                     " active INTEGER NOT NULL, stable_seq INTEGER NOT NULL, stable_digest BLOB NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS preprepared (seq INTEGER NOT NULL, digest BLOB NOT NULL,"
                     " view INTEGER NOT NULL, PRIMARY KEY (seq, digest))")
        conn.execute("CREATE TABLE IF NOT EXISTS prepared (seq INTEGER PRIMARY KEY, view INTEGER NOT NULL,"
                     " digest BLOB NOT NULL, batch BLOB NOT NULL)")
        conn.commit()

    def load(self):
        """The ``Saved`` state, or None for a replica that never ran with this log."""
        row = self.conn.execute("SELECT view, active, stable_seq, stable_digest FROM state").fetchone()
        if row is None:
            return None
        view, active, seq, d = row
        qset, pset = {}, {}
        for s, dq, v in self.conn.execute("SELECT seq, digest, view FROM preprepared WHERE seq > ?", (seq,)):
            qset.setdefault(s, {})[dq] = v
        for s, v, dp, batch in self.conn.execute("SELECT seq, view, digest, batch FROM prepared WHERE seq > ?", (seq,)):
            pset[s] = (v, dp, codec.loads(batch, "logged batch", max_bytes=MAX_RECORD))
        return Saved(view, bool(active), (seq, d), qset, pset)

    def start(self, view, stable):
        """First run: the view (working in it) and checkpoint the engine starts from."""
        self.conn.execute("INSERT OR REPLACE INTO state VALUES (0, ?, 1, ?, ?)", (view, stable[0], stable[1]))

    def set_view(self, view, active):
        self.conn.execute("UPDATE state SET view = ?, active = ? WHERE id = 0", (view, int(active)))

    def preprepared(self, seq, view, d):
        self.conn.execute("INSERT OR REPLACE INTO preprepared VALUES (?, ?, ?)", (seq, d, view))

    def prepared(self, seq, view, d, batch):
        self.conn.execute("INSERT OR REPLACE INTO prepared VALUES (?, ?, ?, ?)", (seq, view, d, codec.dumps(batch)))

    def set_stable(self, seq, d):
        """A checkpoint 2f+1 replicas vouch for: nothing at or below it is needed again."""
        self.conn.execute("UPDATE state SET stable_seq = ?, stable_digest = ? WHERE id = 0", (seq, d))
        self.conn.execute("DELETE FROM preprepared WHERE seq <= ?", (seq,))
        self.conn.execute("DELETE FROM prepared WHERE seq <= ?", (seq,))

    def sync(self):
        """Make everything recorded so far durable; call before sending what depends on it."""
        if self.conn.in_transaction:
            self.conn.commit()
