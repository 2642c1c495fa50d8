"""Power cuts at every write of a channel session, on either side, whole or torn.

The session: the consumer opens a channel (funded by a faucet coin, confirmed by the real
ledger), then pays installments 1..5 (propose, countersign, accept). For every k, one side's
storage loses power at its k-th write; the wallet reboots from its files and the session goes
on to the end. After every cut: the reopened wallet passes its integrity check, no seq was
ever signed with two different states by the side that lost power, the latest fully signed
state it knows is never older than what it had accepted before the cut, and it can always
close: the ledger accepts its unilateral close and pays out what the latest state says.
"""
import sqlite3

import pytest

from plugpay.firmware import channels
from plugpay.firmware.books import CLEAN
from plugpay.firmware.channels import ChannelError
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.protocol.structures import ChannelState
from powercut import Cut, PowerCut
from plugpay.host.ledger import Ledger
import ledger_helpers as H
from wallet_helpers import Party, ra_keys, receipt, send

INSTALLMENTS = 5


class Session:
    """Drives the session step by step so that it can resume after a reboot."""

    def __init__(self, ledger, consumer, producer):
        self.ledger, self.consumer, self.producer = ledger, consumer, producer
        self.channel_id = None
        self.signed = {"consumer": {}, "producer": {}}  # seq -> state bytes that left a side
        self.accepted = 0  # highest seq the consumer accepted fully signed
        self.height = 2
        self.payee = self.coin = self.mint_tx = self.raw = None
        self.confirmed = False

    def wallets(self, cut_side, storage):
        for side in ("consumer", "producer"):
            party = getattr(self, side)
            root = Storage(party.root) if side != cut_side else storage
            party.wallet = Wallet.open(root, party.device_key)

    def _left(self, side, state_bytes):
        state = ChannelState.decode(state_bytes)
        seen = self.signed[side].setdefault(state.seq, state.body())
        assert seen == state.body(), "%s signed two different states with seq %d" % (side, state.seq)

    def run(self):
        c, p = self.consumer.wallet, self.producer.wallet
        if self.channel_id is None:
            if self.payee is None:
                self.payee = p.new_account()
            pending = c.pending_requests()
            if pending:  # the open was signed before the power went: the same bytes again
                self.raw = pending[0]
                self.channel_id = L.decode_request(self.raw).channel_id()
            else:
                if self.coin is None:
                    self.coin = c.new_account()
                if self.mint_tx is None:
                    op = L.Faucet(1, [S.TxOutput(self.coin[1], 1500)], b"")
                    op.faucet_sig = signing.sign(H.FAUCET_SECRET, op)
                    (result,) = H.run(self.ledger, 1, op)
                    self.mint_tx = result.data
                c.receive(self.mint_tx, 0, self.coin[0], 1500, CLEAN)  # idempotent
                self.channel_id, self.raw = c.open_channel(self.payee[1], 1000, INSTALLMENTS * 2, 5, fee=3)
        if not self.confirmed:
            for result in send(self.ledger, self.height, *c.pending_requests()):
                c.handle_result(result)
            self.height += 1
            self.confirmed = True
        if self.channel_id not in p.channels:  # the producer is shown the id, reads the rest on the ledger
            answer = self.ledger.query(channels.query(self.channel_id))
            p.accept_channel(self.channel_id, answer, self.payee[0], 1000, INSTALLMENTS * 2, 5)
        for k in range(1, INSTALLMENTS + 1):
            if c.channel(self.channel_id).latest().seq >= k:
                continue
            state = c.channel(self.channel_id).propose(100 * (k + 1), 1000 * k, receipt(k))
            self._left("consumer", state)
            full = p.channel(self.channel_id).countersign(state)
            self._left("producer", full)
            c.channel(self.channel_id).accept(full)
            self.accepted = k


def _session(tmp_path, authority, ledger, tag):
    consumer = Party(tmp_path / ("c-" + tag), authority, keys=40)
    producer = Party(tmp_path / ("p-" + tag), authority, keys=40)
    return Session(ledger, consumer, producer)


@pytest.mark.parametrize("side", ["consumer", "producer"])
def test_a_power_cut_at_every_write_of_a_channel_session(tmp_path, authority, side):
    results = []
    for torn in (False, True):
        k = 1
        while True:
            conn = sqlite3.connect(str(tmp_path / ("ledger-%s-%d-%d.db" % (side, torn, k))))
            ledger = Ledger(conn, ra_keys(authority), faucet_pubkey=H.FAUCET_PUBKEY)
            s = _session(tmp_path, authority, ledger, "%s-%d-%d" % (side, torn, k))
            party = getattr(s, side)
            s.wallets(side, PowerCut(party.root, at=k, torn=torn))
            before = None
            try:
                s.run()
                finished = True
            except Cut:
                finished = False
                before = s.accepted
            s.wallets(None, None)  # reboot both from their files
            report = party.wallet.check()
            assert report["ok"], (k, torn, report["problems"])
            if s.channel_id in party.wallet.channels and before is not None:
                assert party.wallet.channel(s.channel_id).latest().seq >= (before if side == "consumer" else 0)
            try:
                s.run()
            except ChannelError as e:
                # The side that lost power may hold a proposal the other never answered: it
                # repeats the same bytes (never a different state), and the peer, having
                # countersigned it already, answers with the same full state.
                raise AssertionError("session could not resume after a cut at %d: %s" % (k, e))
            c = s.consumer.wallet.channel(s.channel_id)
            assert c.latest().seq == INSTALLMENTS
            # Whoever lost power can still close alone, on the latest state.
            closer = getattr(s, side).wallet.channel(s.channel_id)
            dispute = closer.dispute()
            assert L.decode_request(dispute).state.paid_to_producer == 100 * (INSTALLMENTS + 1)
            (result,) = H.run(s.ledger, 50, dispute)
            assert result.ok, result.detail
            assert H.reasons(H.run(s.ledger, 60, closer.settle())) == ["OK"]
            assert H.conserved(s.ledger)
            results.append((torn, k, finished))
            if finished:
                break
            k += 1
    assert sum(1 for r in results if not r[2]) >= 2 * 6  # every write of the session was cut
