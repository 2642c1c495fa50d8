"""``plugpay wallet recover``: rebuild a wallet from its seed and the public chain, after its
files lost something (``wallet check`` names the damage) or were restored from a backup.

Why a replay and not a query per key: asking the ledger which coins pay each of the
wallet's keys would tell whoever answers that those keys belong together, the one link the
one-time keys exist to prevent. So every block is read from the cluster (each on f+1
matching answers, as ``plugpay ledger block`` reads them) and replayed here into a
throwaway copy of the replicas' own chain store and ledger, each block's hash checked
against the one the cluster signed. The wallet's keys are looked for in that copy; nothing
about which keys are the wallet's leaves this machine. ``firmware/recovery`` then rebuilds
the counters, the book and the channels.

Run it with no session of this wallet running: a request in flight while the chain is read
may confirm after (its coins would then be refused as spent, and reported as lost).
"""
import asyncio
import sqlite3
import sys
import time

from plugpay.firmware import recovery
from plugpay.firmware.coins import CLEAN, Coin
from plugpay.firmware.channels import CONSUMER, PRODUCER
from plugpay.host.replica import ChainStore, load_application
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S
from plugpay.tools import ledger_inspect

PROGRESS_EVERY_S = 1.0


class RecoverError(Exception):
    """The chain could not be read or does not replay: one line for the user."""


async def _replay(config_path, timeout, progress):
    config, _ = ledger_inspect.load_config(config_path)
    if config.get("engine") == "cometbft":
        raise ledger_inspect.InspectError("%s is a CometBFT network: wallet recover replays PBFT blocks only"
                                          % config_path)
    conn = sqlite3.connect(":memory:")
    app = load_application(config["app"], conn, config.get("app_options", {}))
    store = ChainStore(conn, app)
    async with ledger_inspect.reader(config_path, timeout) as read:
        tip = await read.tip()
        shown = 0.0
        for height in range(1, tip + 1):
            block = await read.block(height, tip)
            batch = [[r.client, r.ts, r.raw] for r in block.requests]
            if not store.apply_block([height, block.prev, batch], block.hash):
                raise RecoverError("block %d does not replay to the hash the cluster holds: nothing was changed"
                                   % height)
            if time.monotonic() - shown >= PROGRESS_EVERY_S or height == tip:
                shown = time.monotonic()
                progress("replayed block %d of %d" % (height, tip))
    return app


def _group(ledger, txhash, payouts):
    """The coin's group (``books``): CLEAN for a coin the issuer minted alone, the channel
    id for a channel payout, else the id of what made it (coins of one request together)."""
    if txhash in payouts:
        return payouts[txhash]
    made = ledger.confirmed.get((txhash,))
    if made is not None and made.tag == L.TAG_FAUCET:
        op = L.decode_request(made.raw)
        if len(op.outputs) == 1:
            return CLEAN
    return txhash


def found_on_chain(ledger, accounts):
    """``(coins, channels, highest key index)`` of the wallet's keys in the replayed ledger."""
    highest = -1
    payouts = {}
    channels = []
    for (channel_id,), row in ledger.channels.rows.items():
        payouts[L.channel_payout_txhash(channel_id)] = channel_id
        for role, mine, theirs in ((CONSUMER, row.consumer, row.producer), (PRODUCER, row.producer, row.consumer)):
            index = accounts.get(mine)
            if index is None:
                continue
            highest = max(highest, index)
            if row.status in (L.STATUS_OPEN, L.STATUS_CLOSING):
                channels.append((channel_id, role, index, S.Account.decode(theirs),
                                 (row.collateral, row.installments, row.window)))
    coins = []
    for (txhash, sn), utxo in sorted(ledger.utxos.rows.items()):
        index = accounts.get(utxo.account)
        if index is not None:
            highest = max(highest, index)
            coins.append(Coin(txhash, sn, index, utxo.amount, _group(ledger, txhash, payouts)))
    spent = ledger.spent  # keys that were paid and have spent are in use too
    for row in spent.scan():
        index = accounts.get(spent.record(*codec.loads(row[-1], spent.name)).account)
        if index is not None:
            highest = max(highest, index)
    for _, row in ledger.htlcs.rows.items():
        for account in (row.payer, row.payee):
            index = accounts.get(account)
            if index is not None:
                highest = max(highest, index)
    return coins, channels, highest


def recover(wallet, config_path, timeout=10.0, progress=None):
    """Rebuild ``wallet`` from the chain of the cluster in ``config_path``; the lines of
    what was done. ``RecoverError`` or ``ledger_inspect.InspectError`` change nothing."""
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    progress("deriving the wallet's %d registered keys" % wallet.keystore.capacity())
    accounts = recovery.key_accounts(wallet)
    ledger = asyncio.run(_replay(config_path, timeout, progress))
    coins, channels, highest = found_on_chain(ledger, accounts)
    return recovery.rebuild(wallet, coins, channels, highest)
