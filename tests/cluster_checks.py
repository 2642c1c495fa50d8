"""The safety check for a run of real replica processes, read from their SQLite files.

PBFT's promise is that honest replicas never commit different blocks at the same height, and
a fork would not show in any client's result, only in the databases. So after a run every
honest replica's chain is opened read-only and checked: each block's stored hash is
recomputed from its contents, the chain links back to genesis without gaps, and wherever two
or more replicas hold a height they hold the same block there.
"""
import hashlib
import sqlite3

from plugpay.host import pbft


def read_chain(db_path):
    """``{height: (hash, prev)}`` of a replica's database, each hash checked against the
    block it names (batch, results digest, state digest, height and prev)."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        rows = conn.execute("SELECT height, hash, prev, batch, results_digest, state_digest FROM blocks").fetchall()
    finally:
        conn.close()
    chain = {}
    for height, h, prev, batch, results_digest, state_digest in rows:
        # The stored batch is its canonical CBOR, so its SHA-256 is the batch digest.
        expect = pbft.block_hash(height, prev, hashlib.sha256(batch).digest(), results_digest, state_digest)
        assert h == expect, "%s: block %d does not hash to its stored hash" % (db_path, height)
        chain[height] = (h, prev)
    return chain


def assert_chains_agree(lc, replicas):
    """Check the chains of ``replicas`` (ids in ``lc``, a ``LocalCluster``); return
    ``{id: height}``."""
    chains = {i: read_chain(lc.db_path(i)) for i in replicas}
    for i, chain in chains.items():
        assert sorted(chain) == list(range(1, len(chain) + 1)), "replica %d has gaps in its chain" % i
        for height, (_, prev) in chain.items():
            expect = chain[height - 1][0] if height > 1 else pbft.GENESIS
            assert prev == expect, "replica %d: block %d does not link to block %d" % (i, height, height - 1)
    heights = set().union(*chains.values())
    for height in sorted(heights):
        held = {i: chain[height][0].hex() for i, chain in chains.items() if height in chain}
        assert len(set(held.values())) == 1, "fork at height %d: %r" % (height, held)
    return {i: len(chain) for i, chain in chains.items()}
