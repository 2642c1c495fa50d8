"""The fork check of ``cluster_checks`` reports what it exists for, on real ``ChainStore``
databases standing in for replicas (a check that cannot fail would prove nothing)."""
import sqlite3

import pytest

from plugpay.host import pbft
from plugpay.host.kvapp import KvApp
from plugpay.host.replica import ChainStore
from plugpay.protocol import codec

from cluster_checks import assert_chains_agree


class Databases:
    """What the check needs from a ``LocalCluster``: where replica ``i`` keeps its blocks."""

    def __init__(self, directory):
        self.directory = directory

    def db_path(self, i):
        return str(self.directory / ("replica-%d.sqlite" % i))


def batch(name, ts=1):
    return [["client/0", ts, codec.dumps(["add", name, 1])]]


def write_chain(dbs, i, batches):
    conn = sqlite3.connect(dbs.db_path(i))
    store = ChainStore(conn, KvApp(conn))
    for height, b in enumerate(batches, 1):
        store.execute(height, b)
    conn.close()


def test_chains_that_agree_pass_whatever_their_lengths(tmp_path):
    dbs = Databases(tmp_path)
    write_chain(dbs, 0, [batch("a", 1), batch("b", 2), batch("c", 3)])
    write_chain(dbs, 1, [batch("a", 1), batch("b", 2)])
    write_chain(dbs, 2, [])
    assert assert_chains_agree(dbs, range(3)) == {0: 3, 1: 2, 2: 0}


def test_two_blocks_at_one_height_are_a_fork(tmp_path):
    dbs = Databases(tmp_path)
    write_chain(dbs, 0, [batch("a", 1), batch("b", 2)])
    write_chain(dbs, 1, [batch("a", 1), batch("x", 2)])
    with pytest.raises(AssertionError, match="fork at height 2"):
        assert_chains_agree(dbs, range(2))


def test_a_block_edited_in_place_or_relinked_is_reported(tmp_path):
    dbs = Databases(tmp_path)
    write_chain(dbs, 0, [batch("a", 1), batch("b", 2)])
    conn = sqlite3.connect(dbs.db_path(0))
    conn.execute("UPDATE blocks SET batch = ? WHERE height = 2", (codec.dumps(batch("x", 2)),))
    conn.commit()
    with pytest.raises(AssertionError, match="block 2 does not hash"):
        assert_chains_agree(dbs, [0])
    # Re-hashed so it is self-consistent, but pointing at a prev that is not block 1.
    height, prev, b, rd, sd = conn.execute(
        "SELECT height, prev, batch, results_digest, state_digest FROM blocks WHERE height = 2").fetchone()
    prev = bytes(32)
    conn.execute("UPDATE blocks SET prev = ?, hash = ? WHERE height = 2",
                 (prev, pbft.block_hash(height, prev, pbft.digest(codec.loads(b)), rd, sd)))
    conn.commit()
    conn.close()
    with pytest.raises(AssertionError, match="block 2 does not link to block 1"):
        assert_chains_agree(dbs, [0])
