"""A wallet folder copied back from earlier in a channel (LND's breach test), on either side.

The session runs to seq 5 with a backup of one side's folder taken at seq 2; that side's
process dies; its folder is restored from the backup and used: ``settle`` (what ``plugpay
wallet settle`` runs) closes what it holds. The other side is still running. Checked from
outside, on every signed state that crossed the link or reached the ledger: the restored
side signs no seq a second time, the restored consumer cannot close on its older, cheaper
state, and the restored producer is paid what the newest state gave it.
"""
import shutil

import pytest

from plugpay.firmware import channels
from plugpay.firmware.session import CHANNEL
from plugpay.firmware.settle import settle
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.structures import ChannelState
from test_session import World


class Dead:
    """A side whose process is gone: it sends, hears and does nothing."""

    finished = True

    def next_deadline(self):
        return None

    def link_messages(self):
        return []

    def ledger_requests(self):
        return []

    def tick(self, now):
        pass

    def link_received(self, data, now):
        pass


class LedgerGateway:
    """What ``settle`` needs of a gateway, on the test's ledger state machine."""

    def __init__(self, ledger):
        self.ledger = ledger

    def submit(self, raw):
        return L.Result.decode(self.ledger.submit(raw))

    def query(self, raw):
        return L.Result.decode(self.ledger.query(raw))


def _states(data):
    """Channel states inside a link message or a ledger request, with who signed them."""
    out = []
    try:
        msg = M.decode_message(data)[0]
        proof = getattr(msg, "proof", None)
        if proof:
            out.append(ChannelState.decode(proof))
    except (DecodeError, ValueError):
        pass
    try:
        op = L.decode_request(data)
        if hasattr(op, "state"):
            out.append(op.state)
    except (DecodeError, L.UnknownOp, ValueError):
        pass
    return out


class Witness:
    """Every state each side's signature left on: ``{side: {seq: body}}``, and clashes."""

    def __init__(self, world):
        self.world = world
        self.bodies = {"consumer": {}, "producer": {}}
        self.clashes = []

    def saw(self, data):
        for state in _states(data):
            for side, sig in (("consumer", state.sig_consumer), ("producer", state.sig_producer)):
                if sig:
                    seen = self.bodies[side].setdefault(state.seq, state.body())
                    if seen != state.body():
                        self.clashes.append((side, state.seq))


def _run_with_backup(tmp_path, authority, side):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10)
    witness = Witness(w)
    w.pair.drop = lambda name, data: witness.saw(data) or False
    ledger_submit = w.ledger.submit

    def submit(raw):
        witness.saw(raw)
        return ledger_submit(raw)

    w.ledger.submit = submit
    c, p = w.consumer, w.producer
    name = w.consumer_name if side == "consumer" else w.producer_name
    party = w.parties[name]
    w.pair.run(until=lambda: c.channel is not None and c.channel.latest().seq >= 2 and c.channel.pending() is None
                and not c.channel.unsaved)
    backup = tmp_path / "backup"
    shutil.copytree(party.root, backup)
    w.pair.run(until=lambda: c.channel.latest().seq >= 5)
    latest = (c if side == "consumer" else p).channel.latest()
    w.pair.sides[name] = Dead()  # the process dies
    shutil.rmtree(party.root)
    shutil.copytree(backup, party.root)  # the owner restores the backup
    restored = Wallet.open(Storage(party.root), party.device_key)
    (channel,) = restored.channels.values()
    assert channel.latest().seq == 2 < latest.seq
    return w, witness, restored, latest


def _settle_until_closed(w, wallet):
    """``plugpay wallet settle`` now, then again every minute while the live side goes on.
    A block here is one submission, so the dispute window (10 blocks) lasts as long as the
    settles it takes: the live side notices the dead one at its link's timeout (40 s here)
    and answers within it, as a real window must be long enough for."""
    gateway = LedgerGateway(w.ledger)
    for _ in range(20):
        settle(wallet, gateway)
        if not wallet.channels:
            return
        w.pair.run(limit_ms=w.clock.now_ms() + 60000)
    raise AssertionError("the restored wallet's channel never closed")


@pytest.mark.parametrize("side", ["consumer", "producer"])
def test_a_restored_backup_neither_signs_an_old_seq_again_nor_loses_the_newer_state(tmp_path, authority, side):
    w, witness, restored, latest = _run_with_backup(tmp_path, authority, side)
    _settle_until_closed(w, restored)  # it closes alone with seq 2; the live side answers with seq 5
    w.run()
    other = w.producer if side == "consumer" else w.consumer
    assert other.finished
    answer = w.ledger.query(channels.query(latest.channel_id))
    row = channels.channel_row(latest.channel_id, answer)
    assert row[5] == L.STATUS_CLOSED and row[6] == latest.seq  # closed on the newest state
    assert witness.clashes == []  # no side signed two states with one seq, before or after the restore
    paid = latest.paid_to_producer
    assert row[7] == paid
    if side == "producer":
        assert restored.status()["balance"] == paid  # what the newest state gave it, not seq 2's
    else:
        assert w.producer.payout == paid  # the restored consumer's older, cheaper state did not stand
    assert restored.check()["ok"]

