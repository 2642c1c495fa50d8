"""Coins that do not chain sessions: what came back from one session never funds another;
it goes back through the issuer and returns as fresh coins nobody else can tie to it.

Real parts: the wallet on files, the RA, a real ledger on SQLite and the issuer's logic
(host/issuer.py) minting what a redeem asks for."""
import os

import pytest

import ledger_helpers as H
from plugpay.firmware import books as B
from plugpay.firmware import coins as C
from plugpay.firmware.books import CLEAN, WouldLink
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host.faucet import Refused
from plugpay.host.issuer import Issuer, NotYet
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256
from powercut import Cut, PowerCut
from wallet_helpers import mint, open_channel, redeem, send, unchanged, update


def close(ledger, consumer, producer, channel_id, height):
    """Cooperative close on the latest state; both wallets take their payout."""
    half = consumer.wallet.channel(channel_id).sign_close()
    H.run(ledger, height, producer.wallet.channel(channel_id).countersign_close(half))
    for party in (consumer, producer):
        party.wallet.finish_channel(channel_id, ledger.query(party.wallet.channel(channel_id).query()))


def test_a_refund_names_its_session_and_funds_no_other_until_redeemed(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer, collateral=1000, installments=10)  # mints 1200 alone
    update(consumer, producer, channel_id, 2)
    close(ledger, consumer, producer, channel_id, 3)
    w = consumer.wallet
    assert sorted((c.amount, c.group) for c in w.books.coins) == [(197, channel_id), (800, channel_id)]
    status = w.status()
    assert (status["balance"], status["clean_balance"], status["to_redeem"]) == (997, 0, 1)
    # The change of the open and the refund both name the channel: a second session paid
    # with them would be tied to the first on the ledger. The wallet says so and signs nothing.
    _, account = producer.wallet.new_account()
    unchanged(consumer, lambda: w.open_channel(account, 500, 5, 5), WouldLink, "redeem them first")
    assert redeem(ledger, consumer, channel_id, 4) == "confirmed"
    status = w.status()
    assert (status["balance"], status["clean_balance"], status["to_redeem"]) == (997, 997, 0)
    assert [c.amount for c in w.books.coins] == [512, 256, 128, 64, 32, 4, 1]
    # A deposit the denominations add up to takes them exactly: no change, nothing to redeem after.
    _, raw = w.open_channel(account, 484, 4, 5)
    assert sorted(c.amount for c in w.books.spends[0].inputs) == [4, 32, 64, 128, 256]
    assert L.decode_request(raw).change == []
    assert w.handle_result(send(ledger, 6, raw)[0]) == "confirmed"
    assert w.status()["to_redeem"] == 0 and H.conserved(ledger)


def test_the_issuers_mints_are_where_the_wallet_expects_and_name_nothing(ledger, consumer, producer):
    mint(ledger, consumer, [300])
    _, account = producer.wallet.new_account()
    raw = consumer.wallet.pay([(account, 100)])
    tx = L.decode_request(raw)
    assert consumer.wallet.handle_result(send(ledger, 2, raw)[0]) == "confirmed"
    request = L.RedeemRequest.decode(consumer.wallet.redeem(tx.txhash()))
    redeem_op, mints = Issuer(H.FAUCET_SECRET, consumer.wallet.ra_pubkeys).check(request.encode())
    assert redeem_op == request.redeem
    expected = {L.redeem_mint(L.Redeem.decode(redeem_op).redeem_id(), request.salt, i, out).txhash()
                for i, out in enumerate(request.outputs)}
    assert {c.txhash for c in consumer.wallet.books.spends[0].inputs} == {tx.txhash()}
    (done,) = H.run(ledger, 3, redeem_op)
    minted = H.run(ledger, 4, *mints)
    assert {r.data for r in minted} == expected
    # Each fresh coin is a mint of its own to a fresh key; nothing in a mint is in the redeem.
    for raw_mint in mints:
        op = L.Faucet.decode(raw_mint)
        assert len(op.outputs) == 1 and op.outputs[0].account.pubkey not in redeem_op
        assert op.nonce.to_bytes(8, "big") not in redeem_op
    assert consumer.wallet.handle_result(Issuer.answer(redeem_op, mints, done, minted)) == "confirmed"
    assert {c.txhash for c in consumer.wallet.books.coins} == expected
    assert all(c.group == CLEAN and c.sn == 0 for c in consumer.wallet.books.coins)


def test_the_issuer_refuses_what_it_cannot_honour_before_anything_is_burnt(ledger, consumer, producer):
    mint(ledger, consumer, [300])
    _, account = producer.wallet.new_account()
    raw = consumer.wallet.pay([(account, 100)])
    assert consumer.wallet.handle_result(send(ledger, 2, raw)[0]) == "confirmed"
    good = L.RedeemRequest.decode(consumer.wallet.redeem(L.decode_request(raw).txhash()))
    issuer = Issuer(H.FAUCET_SECRET, consumer.wallet.ra_pubkeys)
    forged = S.Account(good.outputs[0].account.pubkey, good.outputs[0].account.epoch, bytes(64))
    other_epoch = S.Account(good.outputs[0].account.pubkey, 77, good.outputs[0].account.ra_sig)
    for request, reason in (
        (L.RedeemRequest(good.redeem, bytes(32), good.outputs), L.MALFORMED),  # another salt: not the order
        (L.RedeemRequest(good.redeem, good.salt, good.outputs[:1]), L.MALFORMED),
        (L.RedeemRequest(good.redeem, good.salt, [S.TxOutput(forged, good.outputs[0].amount)] + good.outputs[1:]),
         L.MALFORMED),  # the order commits to the accounts too
        (L.RedeemRequest(b"\x80", good.salt, good.outputs), L.MALFORMED),
    ):
        with pytest.raises(Refused) as info:
            issuer.check(request.encode())
        assert info.value.reason == reason
    with pytest.raises(Refused):
        issuer.check(b"\xff")
    # A wallet asking for accounts the ledger would refuse is refused before its coins burn.
    for account, reason in ((forged, L.BAD_ACCOUNT_SIGNATURE), (other_epoch, L.UNKNOWN_RA_EPOCH)):
        outputs = [S.TxOutput(account, good.outputs[0].amount)] + good.outputs[1:]
        op = L.Redeem.decode(good.redeem)
        op.order = L.redeem_order(good.salt, outputs)
        with pytest.raises(Refused) as info:
            issuer.check(L.RedeemRequest(op.encode(), good.salt, outputs).encode())
        assert info.value.reason == reason
    # Mints not yet confirmed: the wallet is told to ask again, and books nothing.
    redeem_op, mints = issuer.check(good.encode())
    (done,) = H.run(ledger, 3, redeem_op)
    with pytest.raises(NotYet, match="no answer"):
        Issuer.answer(redeem_op, mints, done, [])
    refused = L.Result(sha256(mints[0]), False, L.NOT_FAUCET, "no", None)
    with pytest.raises(NotYet, match="NOT_FAUCET"):
        Issuer.answer(redeem_op, mints, done, [refused])
    assert len(consumer.wallet.books.spends) == 1
    # Asked again (the answer was lost), everything is a duplicate and counts as done.
    H.run(ledger, 4, *mints)
    (again,) = H.run(ledger, 5, redeem_op)
    assert again.reason == L.DUPLICATE
    minted = H.run(ledger, 5, *mints)
    assert {r.reason for r in minted} == {L.DUPLICATE}
    assert consumer.wallet.handle_result(Issuer.answer(redeem_op, mints, again, minted)) == "confirmed"
    assert consumer.wallet.status()["clean_balance"] == 200 and H.conserved(ledger)


def test_an_htlc_series_funds_its_later_htlcs_from_its_own_change_only(ledger, consumer, producer):
    mint(ledger, consumer, [1000])
    _, payee = producer.wallet.new_account()
    first = consumer.wallet.start_htlcs(payee, 100, 3, timeout=50)
    raw = consumer.wallet.fund_htlc(first.series_id, 0)
    assert consumer.wallet.handle_result(send(ledger, 2, raw)[0]) == "confirmed"
    (change,) = consumer.wallet.books.coins
    assert (change.amount, change.group) == (900, first.series_id)
    raw = consumer.wallet.fund_htlc(first.series_id, 1)  # its own change: allowed
    assert L.decode_request(raw).inputs[0].pre_txhash == change.txhash
    assert consumer.wallet.handle_result(send(ledger, 3, raw)[0]) == "confirmed"
    # Another series (another session) may not touch the first one's change.
    _, payee2 = producer.wallet.new_account()
    second = consumer.wallet.start_htlcs(payee2, 100, 2, timeout=50)
    unchanged(consumer, lambda: consumer.wallet.fund_htlc(second.series_id, 0), WouldLink, "redeem")
    mint(ledger, consumer, [100], height=4)
    raw = consumer.wallet.fund_htlc(second.series_id, 0)  # the clean 100, exactly
    assert [c.group for c in consumer.wallet.books.spends[0].inputs] == [CLEAN]
    assert consumer.wallet.check()["ok"]


def test_a_redeem_survives_a_power_cut_at_every_write(ledger, consumer, producer):
    mint(ledger, consumer, [300])
    _, account = producer.wallet.new_account()
    raw = consumer.wallet.pay([(account, 100)])
    group = L.decode_request(raw).txhash()
    assert consumer.wallet.handle_result(send(ledger, 2, raw)[0]) == "confirmed"
    keys_before = consumer.wallet.keystore.reserved
    base = consumer.files()
    for at in range(1, 8):
        for torn in (False, True):
            _restore(consumer, base)
            w = Wallet.open(PowerCut(consumer.root, at=at, torn=torn), consumer.device_key)
            try:
                request = w.redeem(group)
                cut = False
            except Cut:
                cut = True
            w = Wallet.open(Storage(consumer.root), consumer.device_key)
            assert w.check()["ok"], (at, torn, w.check()["problems"])
            pending, groups = w.to_redeem()
            if pending:  # the redeem was stored: the very same request goes out again
                assert groups == [] and w.books.balance() == 0
                if not cut:
                    assert pending == [request]
                spend = w.books.spends[0]
                assert len({o.index for o in spend.change}) == len(spend.change)
                assert min(o.index for o in spend.change) >= keys_before  # fresh keys, never a used one
            else:  # not stored: the coin is still there to redeem, nothing was signed away
                assert cut and groups == [group] and w.books.balance() == 200
    _restore(consumer, base)


def _restore(party, files):
    """Put a wallet folder back as it was (the next power cut starts from the same state)."""
    for name in os.listdir(party.root):
        if name not in files:
            os.remove(os.path.join(party.root, name))
    for name, data in files.items():
        with open(os.path.join(party.root, name), "wb") as f:
            f.write(data)


def test_a_book_of_version_1_is_read_with_every_coin_waiting_to_be_redeemed(consumer):
    w = consumer.wallet
    index, _ = w.new_account()
    txhash = bytes(range(32))
    old = [B.TAG_BOOK, 1, [[txhash, 0, index, 700], [txhash, 1, index, 300]], [], []]
    w.books.record.store(codec.dumps(old))
    w = Wallet.open(Storage(consumer.root), consumer.device_key)
    assert sorted((c.amount, c.group) for c in w.books.coins) == [(300, txhash), (700, txhash)]
    assert w.status()["clean_balance"] == 0 and w.status()["to_redeem"] == 1
    w.books._commit(w.books.coins, w.books.spends, w.books.lost)  # written back as version 2
    assert codec.loads(w.books.record.load())[:2] == [B.TAG_BOOK, 2]


def test_check_reports_a_pending_request_that_ties_two_sessions(ledger, consumer, producer):
    mint(ledger, consumer, [300])
    _, account = producer.wallet.new_account()
    raw = consumer.wallet.pay([(account, 100)])
    assert consumer.wallet.handle_result(send(ledger, 2, raw)[0]) == "confirmed"
    books = consumer.wallet.books
    (coin,) = books.coins
    # A book edited to sign a session's coin into a payment (a bug, a downgrade): check says so.
    tx = S.Transaction([S.TxInput(coin.txhash, coin.sn)], S.Price(0, 100), [S.TxOutput(account, 100)], [b""])
    tx.witnesses = [signing.sign(consumer.wallet.keystore.secret(coin.index), tx)]
    spend = B.Spend(tx.TAG, tx.txhash(), tx.encode(), [coin], [], None)
    books._commit([], [spend], [])
    problems = consumer.wallet.check()["problems"]
    assert any("ties them together" in p for p in problems), problems


@pytest.mark.parametrize("amount, parts, plan", [
    (1, 16, [1]),
    (500, 16, [256, 128, 64, 32, 16, 4]),
    (2 ** 20 - 1, 16, [2 ** i for i in range(19, 4, -1)] + [31]),  # 20 bits: the 5 smallest share a coin
    (7, 2, [4, 3]),
])
def test_coin_plan_is_powers_of_two_within_the_output_limit(amount, parts, plan):
    assert C.coin_plan(amount, parts) == plan


def test_exact_change_is_found_among_powers_of_two():
    coins = [C.Coin(bytes([i]) * 32, 0, i, a, CLEAN) for i, a in enumerate([512, 256, 128, 64, 32, 16, 8, 1])]
    assert sorted(c.amount for c in C.exact(coins, 120)) == [8, 16, 32, 64]
    assert C.exact(coins, 2) is None
    assert [c.amount for c in C.cover(coins, 2)] == [8]  # the smallest that covers
