"""The ABCI server and the ledger application in this process, spoken to as CometBFT does:
uvarint-framed protobuf on several connections. Order and Flush, CheckTx's refusals with
the ledger's reasons, FinalizeBlock's results and app hash, Commit's durability, requests
that contradict the application's state, queries."""
import asyncio
import json

import pytest

import ledger_helpers as H
from ledger_engines import OPTIONS
from plugpay.host import cometbft
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256

if cometbft.missing():
    pytest.skip(cometbft.missing(), allow_module_level=True)

from plugpay.host import abci_app  # noqa: E402  (needs the generated ABCI definitions)
from plugpay.host import abci_wire as W  # noqa: E402
from plugpay.host.abci_server import AbciServer  # noqa: E402


class Conn:
    """One connection to the server: ``ask(kind, **fields)`` sends a request and a Flush and
    returns the response (``"exception"`` if the server refused and closed)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def ask(self, kind, **fields):
        request = W.Request()
        body = getattr(request, kind)
        body.SetInParent()
        for name, value in fields.items():
            if isinstance(value, list):
                getattr(body, name).extend(value)
            else:
                setattr(body, name, value)
        flush = W.Request()
        flush.flush.SetInParent()
        self.writer.write(W.frame(request) + W.frame(flush))
        first = W.Response.FromString(await W.read_frame(self.reader))
        if first.WhichOneof("value") == "exception":
            return first
        assert W.Response.FromString(await W.read_frame(self.reader)).WhichOneof("value") == "flush"
        return first


def serve(tmp_path, work):
    """Run ``await work(app, connect)`` against a fresh application and its server."""
    home = tmp_path / "node"
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "plugpay.json").write_text(json.dumps({"abci": "tcp://127.0.0.1:0", "app_options": OPTIONS,
                                                             "sqlite_synchronous": "NORMAL"}))

    async def main():
        app, _ = abci_app.open_app(str(home))
        server = app.server = await AbciServer(app).start("tcp://127.0.0.1:0")
        port = server.server.sockets[0].getsockname()[1]

        async def connect():
            return Conn(*await asyncio.open_connection("127.0.0.1", port))
        try:
            return await work(app, connect)
        finally:
            await server.close()
            app.conn.close()
    return asyncio.run(main())


def mint(nonce=1, owner="abci-owner"):
    return H.faucet([(H.Key(owner), 10)], nonce=nonce).encode()


def test_checktx_refuses_with_the_ledgers_result_and_passes_good_requests(tmp_path):
    async def work(app, connect):
        c = await connect()
        big = b"\x86" + b"\x00" * L.MAX_REQUEST_BYTES
        too_large = (await c.ask("check_tx", tx=big)).check_tx
        malformed = (await c.ask("check_tx", tx=b"\x86\x02")).check_tx
        good = (await c.ask("check_tx", tx=mint())).check_tx
        recheck = (await c.ask("check_tx", tx=b"\x86\x02", type=W.enum("CheckTxType", "RECHECK"))).check_tx
        return too_large, malformed, good, recheck, len(app.trusted)
    too_large, malformed, good, recheck, trusted = serve(tmp_path, work)
    assert too_large.code == L.TOO_LARGE and L.Result.decode(too_large.data).reason == L.TOO_LARGE
    assert L.Result.decode(too_large.data).request_digest == sha256(b"\x86" + b"\x00" * L.MAX_REQUEST_BYTES)
    assert malformed.code == L.MALFORMED and malformed.log.startswith("MALFORMED")
    assert good.code == 0 and not good.data
    assert recheck.code == 0  # a request that passed once is decided by a block
    assert trusted == 1


def test_a_block_is_applied_committed_and_reported_by_info(tmp_path):
    async def work(app, connect):
        consensus, query = await connect(), await connect()
        init = (await consensus.ask("init_chain", chain_id="t", initial_height=1)).init_chain
        await query.ask("check_tx", tx=mint(1))  # gossip brought it first: its signatures are trusted
        block = (await consensus.ask("finalize_block", height=1, txs=[mint(1), mint(1), b"\x01"])).finalize_block
        before_commit = (await query.ask("info")).info
        await consensus.ask("commit")
        after = (await query.ask("info")).info
        found = (await query.ask("query", path="/ledger", data=L.Query(L.QUERY_TX, H.faucet(
            [(H.Key("abci-owner"), 10)], nonce=1).txhash(), 0).encode())).query
        status = json.loads((await query.ask("query", path="/status")).query.value)
        unknown = (await query.ask("query", path="/nothing")).query
        return init, block, before_commit, after, found, status, unknown
    init, block, before_commit, after, found, status, unknown = serve(tmp_path, work)
    assert len(init.app_hash) == 32
    assert [r.code for r in block.tx_results] == [L.OK, L.DUPLICATE, L.MALFORMED]
    assert [L.Result.decode(r.data).reason for r in block.tx_results] == [L.OK, L.DUPLICATE, L.MALFORMED]
    assert block.app_hash != init.app_hash
    assert before_commit.last_block_height == 0 and before_commit.last_block_app_hash == init.app_hash
    assert after.last_block_height == 1 and after.last_block_app_hash == block.app_hash
    assert L.Result.decode(found.value).ok and found.height == 1
    assert status["height"] == 1 and status["stats"]["signatures_trusted"] == 1
    assert unknown.code == L.NOT_FOUND and "unknown query path" in unknown.log


def test_requests_against_the_applications_state_get_an_exception_and_only_that_connection_closes(tmp_path):
    async def work(app, connect):
        consensus, query = await connect(), await connect()
        skipped = await consensus.ask("finalize_block", height=5)
        other = await connect()
        early = await other.ask("commit")
        info = (await query.ask("info")).info
        return skipped, early, info
    skipped, early, info = serve(tmp_path, work)
    assert "FinalizeBlock of height 5, but the ledger is at 0" in skipped.exception.error
    assert "Commit without a finalized block" in early.exception.error
    assert info.last_block_height == 0


def test_a_block_finalized_again_after_a_restart_of_cometbft_replaces_the_first(tmp_path):
    async def work(app, connect):
        first = (await (await connect()).ask("finalize_block", height=1, txs=[mint(1)])).finalize_block
        consensus = await connect()  # CometBFT came back: it replays the block it had not committed
        again = (await consensus.ask("finalize_block", height=1, txs=[mint(1)])).finalize_block
        await consensus.ask("commit")
        return first, again, app.stats["discarded_uncommitted"], app.ledger.supply()["minted"]
    first, again, discarded, minted = serve(tmp_path, work)
    assert again == first and discarded == 1 and minted == 10


def test_nothing_of_a_block_before_its_commit_survives_a_restart(tmp_path):
    async def work(app, connect):
        c = await connect()
        await c.ask("finalize_block", height=1, txs=[mint(1)])
        await c.ask("commit")
        await c.ask("finalize_block", height=2, txs=[mint(2)])
        return app.app_hash
    committed = serve(tmp_path, work)

    async def reopened(app, connect):
        return (await (await connect()).ask("info")).info, app.ledger.supply()["minted"]
    info, minted = serve(tmp_path, reopened)
    assert info.last_block_height == 1 and info.last_block_app_hash == committed and minted == 10


@pytest.mark.parametrize("kind", ["list_snapshots", "offer_snapshot", "load_snapshot_chunk", "apply_snapshot_chunk",
                                  "prepare_proposal", "process_proposal", "extend_vote", "verify_vote_extension",
                                  "echo"])
def test_every_other_method_is_answered(tmp_path, kind):
    async def work(app, connect):
        return await (await connect()).ask(kind)
    assert serve(tmp_path, work).WhichOneof("value") == kind
