"""``plugpay ledger tx | block | audit`` against four real replica processes running the
payment ledger, with a real RA whose registered one-time accounts pay each other.

Replica 3 forges every answer it gives to a client's lookup (``forging_replica.py``), so
each command below shows the right record only because it takes f+1 matching answers;
the last test takes two honest replicas away to show the forger is really there. What the
commands print is checked against what was submitted and against replica 0's SQLite chain.
"""
import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time

import pytest

from plugpay.host import cluster, pbft, ra
from plugpay.host.client import Client
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as msg
from plugpay.protocol import codec, signing
from plugpay.tools import cli

import ledger_helpers as H
from cluster_checks import assert_chains_agree

FORGING_REPLICA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forging_replica.py")
FORGER = 3
FAST = {"checkpoint_interval": 8, "request_timeout": 0.5, "view_change_timeout": 0.5,
        "status_interval": 0.2, "fetch_timeout": 0.3}
ADA = {"name": "Ada Lovelace", "licence": "LOVEL-1815", "vehicle_id": "WVWZZZ1JZXW000001"}
ALAN = {"name": "Alan Turing", "licence": "TURIN-1912", "vehicle_id": "SAJAA1234KC123456"}
PREIMAGE = b"r" * 32


class OneTimeKey:
    """A one-time key whose account the real RA signed (the interface of ``H.Key``)."""

    def __init__(self, secret, account):
        self.secret = secret
        self.account = account

    def sign(self, struct):
        return signing.sign(self.secret, struct)

    def address(self):
        return self.account.address().hex()


def register(authority, fields, count):
    """Register an identity with a device key; have the RA sign ``count`` one-time keys."""
    device = signing.new_secret()
    identity_id = authority.register_identity(fields, signing.public_key(device))
    secrets = [signing.new_secret() for _ in range(count)]
    request = msg.make_request(identity_id, device, [signing.public_key(s) for s in secrets])
    accounts = msg.accounts_from(request, authority.sign_batch(request), authority.vault.public_key)
    return [OneTimeKey(s, a) for s, a in zip(secrets, accounts)]


class World:
    """The cluster, the RA and the requests submitted, with their results."""


async def _submit(lc, raws):
    async with Client(lc.config, lc.secrets) as client:
        results = [L.Result.decode(await client.submit(raw)) for raw in raws]  # in order
        while True:  # every replica at one height: lookups then see the same chain
            heights = {row[3] if row else None for row in await client.status()}
            if len(heights) == 1 and None not in heights:
                return results
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World()
    d = tmp_path_factory.mktemp("inspect")
    w.ra_dir, w.key_file = str(d / "ra"), str(d / "ra.key")
    ra.create_key_file(w.key_file)
    ra.init(w.ra_dir, ra.Unlock(key_file=w.key_file))
    with ra.RegistrationAuthority.open(w.ra_dir, ra.Unlock(key_file=w.key_file)) as authority:
        w.ada, w.alan = register(authority, ADA, 4), register(authority, ALAN, 4)
    ada, alan = w.ada, w.alan

    w.mint = H.faucet([(ada[0], 1000), (ada[1], 500)])
    w.pay = H.transaction(H.coins(w.mint.txhash(), [(ada[0], 1000), (ada[1], 500)]), [(alan[0], 1200), (ada[2], 250)])
    w.htlc = H.htlc_create(H.coins(w.pay.txhash(), [(alan[0], 1200)]), alan[1], ada[3], 1000, PREIMAGE, 1000,
                           change=[(alan[2], 150)])
    w.double = H.transaction(H.coins(w.mint.txhash(), [(ada[0], 1000)]), [(alan[3], 1000)])
    w.garbage = b"not a request"
    raws = [w.mint.encode(), w.pay.encode(), w.htlc.encode(), w.double.encode(), w.pay.encode(), w.garbage]

    options = {"ra_pubkeys": {str(e): k.hex() for e, k, _ in ra.public_epochs(w.ra_dir)},
               "faucet_pubkey": H.FAUCET_PUBKEY.hex()}
    w.config = cluster.generate(str(d / "cluster"), app="plugpay.host.ledger:Ledger", app_options=options, pbft=FAST)
    commands = {FORGER: [sys.executable, FORGING_REPLICA]}
    with cluster.LocalCluster(w.config, stop_grace=3.0, commands=commands) as lc:
        lc.start_all()
        lc.wait_listening()
        w.lc = lc
        w.results = asyncio.run(_submit(lc, raws))
        w.chain = chain(lc.db_path(0))
        w.height_of = {}  # where each request first appears
        for h in sorted(w.chain):
            for _, _, raw in w.chain[h][2]:
                w.height_of.setdefault(raw, h)
        yield w
    assert_chains_agree(lc, range(lc.config["n"]))


def chain(db_path):
    """{height: (hash, prev, batch, results digest, state digest)} as replica 0 stored it."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        rows = conn.execute("SELECT height, hash, prev, batch, results_digest, state_digest FROM blocks").fetchall()
    finally:
        conn.close()
    return {h: (hash_, prev, codec.loads(batch), rd, sd) for h, hash_, prev, batch, rd, sd in rows}


def plugpay(capsys, *argv):
    """(exit code, stdout, stderr) of the ``plugpay`` command line's main."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_requests_confirmed_as_expected(world):
    assert H.reasons(world.results) == ["OK", "OK", "OK", "DOUBLE_SPEND", "DUPLICATE", "MALFORMED"]


def test_tx_json_is_the_transaction_submitted(world, capsys):
    code, out, _ = plugpay(capsys, "ledger", "tx", world.pay.txhash().hex(), "--config", world.config, "--json")
    assert code == 0
    ada, alan, mint = world.ada, world.alan, world.mint.txhash().hex()
    assert json.loads(out) == {
        "id": world.pay.txhash().hex(),
        "height": world.height_of[world.pay.encode()],
        "op": "transaction",
        "inputs": [{"txhash": mint, "index": 0, "amount": 1000, "owner": ada[0].address()},
                   {"txhash": mint, "index": 1, "amount": 500, "owner": ada[1].address()}],
        "price": {"unit_price": 35, "total": 1450},
        "outputs": [{"address": alan[0].address(), "ra_epoch": 0, "amount": 1200},
                    {"address": ada[2].address(), "ra_epoch": 0, "amount": 250}],
        "fee": 50,
    }


def test_tx_text_shows_other_operations_readably(world, capsys):
    htlc_id = world.htlc.htlc.digest().hex()
    code, out, _ = plugpay(capsys, "ledger", "tx", htlc_id, "--config", world.config)
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == ["id: " + htlc_id, "height: %d" % world.height_of[world.htlc.encode()], "op: htlc_create"]
    assert "  hashlock: " + hashlib.sha256(PREIMAGE).hexdigest() in lines
    assert "  amount: 1000" in lines and "  timeout: 1000" in lines and "fee: 50" in lines
    payer = lines.index("  payer:")
    assert lines[payer + 1:payer + 3] == ["    address: " + world.alan[1].address(), "    ra epoch: 0"]
    source = next(line for line in lines if line.lstrip().startswith("0 ") and world.pay.txhash().hex() in line)
    assert source.split()[1:] == [world.pay.txhash().hex(), "0", "1200", world.alan[0].address()]
    assert "payer_sig" not in out and "witnesses" not in out


def test_block_json_matches_the_stored_chain(world, capsys):
    for op, result in ((world.pay, "OK"), (world.double, "DOUBLE_SPEND")):
        height = world.height_of[op.encode()]
        code, out, _ = plugpay(capsys, "ledger", "block", height, "--config", world.config, "--json")
        assert code == 0
        block = json.loads(out)
        stored_hash, prev, batch, rd, sd = world.chain[height]
        assert (block["height"], block["hash"], block["prev"], block["results_digest"], block["state_digest"]) == \
            (height, stored_hash.hex(), prev.hex(), rd.hex(), sd.hex())
        assert [(r["client"], r["ts"]) for r in block["requests"]] == [(c, ts) for c, ts, _ in batch]
        mine = [r for r, (_, _, raw) in zip(block["requests"], batch) if raw == op.encode()]
        detail = mine[0]["detail"]
        assert mine[0]["time"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mine[0]["ts"] // 10 ** 9))
        assert mine == [{"client": mine[0]["client"], "ts": mine[0]["ts"], "time": mine[0]["time"], "op": "transaction",
                         "id": op.txhash().hex(), "result": result, "detail": detail,
                         "confirmed_height": height if result == "OK" else None}]
        assert (detail is None) == (result == "OK")  # a refusal says why


def test_block_text_and_the_newest_block(world, capsys):
    newest = max(world.chain)
    code, out, _ = plugpay(capsys, "ledger", "block", "--last", "--config", world.config)
    assert code == 0
    assert out.splitlines()[0].split() == ["block", str(newest)]
    assert plugpay(capsys, "ledger", "block", "-1", "--config", world.config)[1] == out
    assert world.chain[newest][0].hex() in out

    height = world.height_of[world.pay.encode()]
    duplicate = max(h for h, (_, _, batch, _, _) in world.chain.items()
                    if any(raw == world.pay.encode() for _, _, raw in batch))
    assert duplicate > height
    code, out, _ = plugpay(capsys, "ledger", "block", duplicate, "--config", world.config)
    rows = [line.split() for line in out.splitlines() if world.pay.txhash().hex() in line]
    assert [row[2:] for row in rows] == [["transaction", world.pay.txhash().hex(), "DUPLICATE"]]
    garbage = world.height_of[world.garbage]
    out = plugpay(capsys, "ledger", "block", garbage, "--config", world.config)[1]
    assert [line.split()[2:] for line in out.splitlines() if hashlib.sha256(world.garbage).hexdigest() in line] == \
        [["-", hashlib.sha256(world.garbage).hexdigest(), "MALFORMED"]]


def test_audit_names_payers_payees_and_htlc_parties(world, capsys):
    unlock = ["--dir", world.ra_dir, "--key-file", world.key_file, "--config", world.config]
    code, out, _ = plugpay(capsys, "ledger", "audit", *unlock, "--tx", world.pay.txhash().hex())
    assert code == 0
    named = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(named) == {k.address() for k in (world.ada[0], world.ada[1], world.ada[2], world.alan[0])}
    assert "Ada Lovelace" in named[world.ada[0].address()] and "LOVEL-1815" in named[world.ada[1].address()]
    assert "Alan Turing" in named[world.alan[0].address()]

    code, out, _ = plugpay(capsys, "ledger", "audit", *unlock, "--blocks", "1:")
    assert code == 0
    # 5: the garbage bytes are no request; the rejected double spend still names its payee
    assert out.splitlines()[0] == "accounts in 5 requests in blocks 1..%d:" % max(world.chain)
    names = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(names) == {k.address() for k in world.ada + world.alan}
    assert "Alan Turing" in names[world.alan[1].address()] and "Ada Lovelace" in names[world.ada[3].address()]


def test_bad_input_is_one_line_and_exit_code_2(world, capsys, tmp_path):
    config = ["--config", world.config]
    unknown = hashlib.sha256(b"never submitted").hexdigest()
    cases = [
        (["ledger", "tx", "abc", *config], "malformed hash 'abc'"),
        (["ledger", "tx", unknown + "00", *config], "expected 64 hex digits"),
        (["ledger", "tx", unknown, *config], "request %s not found" % unknown),
        (["ledger", "block", max(world.chain) + 1, *config], "block %d is beyond the tip: the newest block is %d"
         % (max(world.chain) + 1, max(world.chain))),
        (["ledger", "block", "0", *config], "heights start at 1"),
        (["ledger", "block", *config], "give a block HEIGHT, or --last"),
        (["ledger", "block", "2", "--last", *config], "give HEIGHT or --last, not both"),
        (["ledger", "audit", "--dir", world.ra_dir, "--key-file", world.key_file, "--blocks", "1:99", *config],
         "block 99 is beyond the tip"),
        (["ledger", "audit", "--dir", world.ra_dir, "--key-file", world.key_file, "--blocks", "3:2", *config],
         "malformed block range '3:2'"),
        (["ledger", "audit", "--dir", world.ra_dir, "--key-file", world.key_file, "--tx", unknown, *config],
         "not found"),
        (["ledger", "audit", "--dir", world.ra_dir, "--key-file", world.config, "--tx", unknown, *config],
         "must hold exactly 32 bytes"),
        (["ledger", "tx", unknown, "--config", tmp_path / "missing.json"],
         "%s: no such file (cluster config)" % (tmp_path / "missing.json")),
    ]
    for argv, message in cases:
        code, out, err = plugpay(capsys, *argv)
        assert (code, out) == (2, ""), argv
        prefix = "plugpay ledger %s: error: " % argv[1]
        assert err.count("\n") == 1 and err.startswith(prefix) and message in err, (argv, err)

    silent = cluster.generate(str(tmp_path / "silent"), app="plugpay.host.ledger:Ledger")  # never started
    code, _, err = plugpay(capsys, "ledger", "block", "1", "--config", silent, "--timeout", "0.4")
    assert code == 3 and err == ("plugpay ledger block: error: cannot reach the cluster of %s: replicas 0, 1, 2, 3 "
                                 "did not answer\n" % silent)


def test_block_answer_above_the_tip_is_none(world):
    async def ask():
        async with Client(world.lc.config, world.lc.secrets) as client:
            tip = max(world.chain)
            return await client.block(tip + 1), await client.block(0), await client.block(tip)
    above, zero, tip = asyncio.run(ask())
    assert above is None and zero is None
    stored_hash, prev, batch, rd, sd = world.chain[max(world.chain)]
    assert tip[:5] == [max(world.chain), prev, batch, rd, sd]
    assert {(c, ts) for c, ts, _ in tip[5]} <= {(c, ts) for c, ts, _ in batch}  # the requests it ran
    assert pbft.digest([r for _, _, r in tip[5]]) == rd


def test_the_forged_answer_is_never_accepted(world, capsys):
    """With replicas 0 and 1 stopped only honest 2 and forging 3 answer: no f+1 agree."""
    lc = world.lc
    for i in (0, 1):
        lc.stop(i)
    try:
        code, out, err = plugpay(capsys, "ledger", "tx", world.pay.txhash().hex(), "--config", world.config,
                                 "--timeout", "0.5")
        assert (code, out) == (3, "")  # no f+1 matching answers: the cluster did not answer
        assert "replicas 0, 1 did not answer; the answers of replicas 2, 3 do not match" in err
    finally:
        for i in (0, 1):
            lc.start(i)
        lc.wait_listening()
