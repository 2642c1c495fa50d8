"""The wallet on CPython against the real RA and a real ledger on SQLite: coins, payments,
state channels, HTLC series, reboots between steps, tampered files, and bad input to every
public method refused without changing a byte on flash."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

import ledger_helpers as H
from plugpay.firmware import channels, records
from plugpay.firmware.books import CLEAN, MAX_SPENDS, InsufficientFunds, WouldLink
from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.channels import ChannelError
from plugpay.firmware.htlcs import CLAIMED, FAILED, OPEN, HtlcError
from plugpay.firmware.keystore import KeystoreError
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as msg
from plugpay.protocol import structures as S
from powercut import Cut, PowerCut
from wallet_helpers import (accept, decoded, fresh_vin, mint, open_channel, ra_keys, receipt, redeem, send, settle_all,
                            unchanged, update)

# -- coins and payments ----------------------------------------------------------------------

def test_faucet_coins_then_a_payment_with_change(ledger, consumer, producer):
    mint(ledger, consumer, [1000, 40])
    assert consumer.wallet.status()["balance"] == 1040
    index, account = producer.wallet.new_account()
    raw = consumer.wallet.pay([(account, 300)], fee=5, unit_price=35)
    tx = decoded(raw)
    assert [o.amount for o in tx.outputs] == [300, 695] and tx.price.total == 300
    status = consumer.wallet.status()
    assert (status["balance"], status["locked"], status["incoming"], status["pending_requests"]) == (40, 1000, 695, 1)
    (result,) = send(ledger, 2, raw)
    assert consumer.wallet.handle_result(result) == "confirmed"
    assert consumer.wallet.status()["balance"] == 735
    assert producer.wallet.receive(tx.txhash(), 0, index, 300, tx.txhash())
    assert not producer.wallet.receive(tx.txhash(), 0, index, 300, tx.txhash())  # known: no write
    # What it received names the consumer's payment: spent in another payment it would tie
    # the two together, so the wallet refuses and the coin goes back through the issuer
    # (whose ledger check proves the book's coins really are its keys').
    unchanged(producer, lambda: producer.wallet.pay([(consumer.wallet.new_account()[1], 300)]), WouldLink,
              "redeem them first")
    assert redeem(ledger, producer, tx.txhash(), 3) == "confirmed"
    status = producer.wallet.status()
    assert (status["balance"], status["clean_balance"], status["to_redeem"]) == (300, 300, 0)
    assert [c.amount for c in producer.wallet.books.coins] == [256, 32, 8, 4]
    (result,) = send(ledger, 5, producer.wallet.pay([(consumer.wallet.new_account()[1], 300)]))
    assert producer.wallet.handle_result(result) == "confirmed"
    assert producer.wallet.status()["balance"] == 0
    assert H.conserved(ledger) and ledger.supply()["burnt"] == 5 and ledger.supply()["redeemed"] == 300


def test_coin_selection_exact_then_smallest_cover_then_largest_first(ledger, consumer, producer):
    mint(ledger, consumer, [100, 250, 400, 1000])
    w = consumer.wallet
    payee = producer.wallet.new_account()[1]
    reserved = w.keystore.reserved
    exact = decoded(w.pay([(payee, 240)], fee=10))
    assert len(exact.inputs) == 1 and len(exact.outputs) == 1  # the 250 coin: no change
    assert w.keystore.reserved == reserved  # so no key was spent on change
    cover = decoded(w.pay([(payee, 300)]))
    assert [o.amount for o in cover.outputs] == [300, 100]  # the 400, not the 1000
    assert w.keystore.reserved == reserved + 1
    with pytest.raises(InsufficientFunds):
        w.pay([(payee, 1101)])
    largest = decoded(w.pay([(payee, 1050)]))
    assert len(largest.inputs) == 2 and sum(o.amount for o in largest.outputs) == 1100  # 1000 + 100
    assert [r for r in (w.handle_result(x) for x in send(ledger, 2, *w.pending_requests()))] == ["confirmed"] * 3
    assert w.status()["balance"] == 100 + 50  # two change coins


def test_a_signed_payment_survives_a_reboot_and_is_sent_again(ledger, consumer, producer):
    mint(ledger, consumer, [500])
    payee = producer.wallet.new_account()[1]
    raw = consumer.wallet.pay([(payee, 200)])
    send(ledger, 2, raw)  # the ledger confirmed it; the result was lost with the power
    w = consumer.reboot()
    assert w.pending_requests() == [raw]  # the same bytes, never a second signature
    with pytest.raises(InsufficientFunds):
        w.pay([(payee, 100)])  # its coin is not spendable while the spend is pending
    (result,) = send(ledger, 3, raw)
    assert L.Result.decode(result).reason == L.DUPLICATE
    assert w.handle_result(result) == "confirmed"
    assert w.status()["balance"] == 300 and w.pending_requests() == []


def test_a_refused_request_gives_its_coins_back(ledger, consumer, producer):
    mint(ledger, consumer, [500], height=30)
    series = consumer.wallet.start_htlcs(producer.wallet.new_account()[1], 100, 1, timeout=5)
    raw = consumer.wallet.fund_htlc(series.series_id, 0)
    (result,) = send(ledger, 31, raw)  # the timeout is in the past: HTLC_EXPIRED
    assert consumer.wallet.handle_result(result) == "refused"
    assert consumer.wallet.status()["balance"] == 500 and series.state(0) == FAILED
    consumer.reboot()


def test_a_coin_the_ledger_says_is_spent_is_taken_out_of_use(ledger, consumer, producer):
    mint(ledger, consumer, [500, 70])
    w = consumer.wallet
    coin = next(c for c in w.books.coins if c.amount == 500)
    # The same key spends the coin elsewhere (a leaked key, a restored old backup).
    rogue = S.Transaction([S.TxInput(coin.txhash, coin.sn)], S.Price(0, 500),
                          [S.TxOutput(producer.wallet.new_account()[1], 500)], [b""])
    rogue.witnesses = [signing.sign(w.keystore.secret(coin.index), rogue)]
    assert H.reasons(H.run(ledger, 2, rogue)) == ["OK"]
    raw = w.pay([(producer.wallet.new_account()[1], 450)])
    assert settle_all(ledger, 3, w) == ["lost"]
    status = w.status()
    assert status["balance"] == 70 and any("DOUBLE_SPEND" in p for p in status["problems"])
    assert w.pending_requests() == [] and raw
    w = Wallet.open(Storage(consumer.root), consumer.device_key)  # remembered across a reboot
    assert w.status()["balance"] == 70 and w.check()["problems"] == status["problems"]
    assert w.receive(coin.txhash, coin.sn, coin.index, coin.amount, coin.group)  # a person puts it back
    assert w.status()["problems"] == []


# -- state channels --------------------------------------------------------------------------

def test_channel_open_updates_and_cooperative_close(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer)
    assert consumer.wallet.status()["balance"] == 197  # 1200 - 1000 collateral - 3 fee
    for k in range(2, 6):
        update(consumer, producer, channel_id, k)
        if k == 3:
            consumer.reboot()
            producer.reboot()
    (row,) = [c for c in consumer.wallet.status()["channels"]]
    assert (row["role"], row["status"], row["seq"], row["paid"], row["collateral"]) == ("consumer", "open", 4, 500, 1000)
    assert producer.wallet.status()["channels"][0]["role"] == "producer"
    half = consumer.wallet.channel(channel_id).sign_close()
    with pytest.raises(ChannelError, match="closing"):
        consumer.wallet.channel(channel_id).propose(600, 12000, receipt(6))
    close = producer.wallet.channel(channel_id).countersign_close(half)
    (result,) = H.run(ledger, 3, close)
    assert result.ok and result.data == L.channel_payout_txhash(channel_id)
    for party, payout in ((consumer, 500), (producer, 500)):
        channel = party.wallet.channel(channel_id)
        assert party.wallet.finish_channel(channel_id, ledger.query(channel.query())) == payout
        assert party.wallet.status()["channels"] == []
        party.reboot()
    assert consumer.wallet.status()["balance"] == 697 and producer.wallet.status()["balance"] == 500
    assert H.conserved(ledger)


def test_an_acceptance_kept_in_memory_is_written_by_save_or_lost_whole(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer)
    full = producer.wallet.channel(channel_id).countersign(consumer.wallet.channel(channel_id).propose(200, 2000, receipt(2)))
    consumer.wallet.channel(channel_id).accept(full, store=False)
    consumer.reboot()  # the power went before the write: seq 1 still waits, nothing is lost
    c = consumer.wallet.channel(channel_id)
    assert (c.latest().seq, c.pending().seq) == (0, 1)
    assert c.accept(full, store=False).seq == 1 and c.unsaved
    before = consumer.wallet.storage.writes
    c.save()
    c.save()  # nothing left to write
    assert consumer.wallet.storage.writes - before == 1 and not c.unsaved
    c = consumer.reboot().channel(channel_id)
    assert (c.latest().seq, c.pending()) == (1, None)


def test_unilateral_close_and_the_higher_state_in_the_window(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer, window=5)
    for k in (2, 3):
        update(consumer, producer, channel_id, k)
    state = consumer.wallet.channel(channel_id).propose(400, 8000, receipt(4))
    producer.wallet.channel(channel_id).countersign(state)  # its answer never reaches the consumer
    c = consumer.reboot().channel(channel_id)
    assert c.pending().seq == 3 and c.propose(400, 8000, receipt(4)) == state  # the same bytes again
    unchanged(consumer, lambda: c.propose(450, 9000, receipt(4)), ChannelError, "waits")
    (result,) = H.run(ledger, 10, c.dispute())  # the consumer closes with seq 2
    assert result.ok and result.data == 15
    (result,) = H.run(ledger, 11, producer.wallet.channel(channel_id).dispute())  # seq 3 overrides
    assert result.ok
    assert H.reasons(H.run(ledger, 12, c.settle())) == ["CHANNEL_TOO_EARLY"]
    unchanged(consumer, lambda: consumer.wallet.finish_channel(channel_id, ledger.query(c.query())), ChannelError,
              "not closed")
    assert H.reasons(H.run(ledger, 15, c.settle())) == ["OK"]
    assert consumer.wallet.finish_channel(channel_id, ledger.query(c.query())) == 600
    assert producer.wallet.finish_channel(channel_id, ledger.query(c.query())) == 400
    consumer.reboot()
    producer.reboot()
    assert H.conserved(ledger)


def test_a_power_cut_between_payout_and_removal_is_finished_at_open(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer)
    update(consumer, producer, channel_id, 2)
    H.run(ledger, 3, producer.wallet.channel(channel_id).countersign_close(
        consumer.wallet.channel(channel_id).sign_close()))
    answer = ledger.query(producer.wallet.channel(channel_id).query())
    # The power goes at the second write of finish: the payout is in the book, the
    # channel record is not removed yet.
    w = Wallet.open(PowerCut(producer.root, at=2), producer.device_key)
    with pytest.raises(Cut):
        w.finish_channel(channel_id, answer)
    w = producer.reboot()
    assert w.status()["channels"] == [] and w.status()["balance"] == 200


def test_the_opening_state_closes_a_channel_without_updates(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer, collateral=1000, installments=4)
    (result,) = H.run(ledger, 3, producer.wallet.channel(channel_id).dispute())
    assert result.ok
    H.run(ledger, 3 + 5, L.ChannelSettle(channel_id))
    query = ledger.query(producer.wallet.channel(channel_id).query())
    assert producer.wallet.finish_channel(channel_id, query) == 250  # the first installment


# -- HTLC series -----------------------------------------------------------------------------

def test_htlc_series_claims_and_refund(ledger, consumer, producer):
    payee_index, payee = producer.wallet.new_account()
    series = consumer.wallet.start_htlcs(payee, 100, 3, timeout=20)
    sid = series.series_id
    mint(ledger, consumer, [100, 100, 100], height=2)
    creates = [consumer.wallet.fund_htlc(sid, i) for i in range(3)]
    assert all(len(decoded(r).inputs) == 1 and not decoded(r).change for r in creates)
    assert settle_all(ledger, 3, consumer.wallet) == ["confirmed"] * 3
    payer = consumer.reboot().series(sid)
    assert [payer.state(i) for i in range(3)] == [OPEN] * 3
    got = producer.wallet.accept_htlcs(payer.terms(), payee_index)
    assert got.series_id == sid
    for i, height in ((0, 4), (1, 5)):
        r = payer.reveal(i)
        assert producer.wallet.series(sid).take_preimage(i, r)
        claim = producer.reboot().series(sid).claim(i)
        (result,) = send(ledger, height, claim)
        assert producer.wallet.settle_htlc(sid, i, result) == "claimed"
    (result,) = send(ledger, 19, payer.refund(2))
    assert L.Result.decode(result).reason == L.HTLC_NOT_EXPIRED
    (result,) = send(ledger, 20, payer.refund(2))
    assert consumer.wallet.settle_htlc(sid, 2, result) == "refunded"
    assert producer.wallet.status()["balance"] == 200 and consumer.wallet.status()["balance"] == 100
    # What came back names the series on the ledger: it waits to be redeemed.
    assert {c.group for c in producer.wallet.books.coins} == {sid} == {c.group for c in consumer.wallet.books.coins}
    assert producer.wallet.series(sid).done() and payer.done()
    for party in (consumer, producer):
        party.wallet.forget_series(sid)
        assert party.reboot().status()["htlc_series"] == []
    assert H.conserved(ledger)


def test_preimages_are_revealed_in_order_and_only_for_open_htlcs(ledger, consumer, producer):
    mint(ledger, consumer, [300])
    payee_index, payee = producer.wallet.new_account()
    series = consumer.wallet.start_htlcs(payee, 100, 2, timeout=50)
    unchanged(consumer, lambda: series.reveal(0), HtlcError, "new, not open")
    consumer.wallet.fund_htlc(series.series_id, 0)
    unchanged(consumer, lambda: consumer.wallet.fund_htlc(series.series_id, 0), WalletError, "funded already")
    assert settle_all(ledger, 2, consumer.wallet) == ["confirmed"]
    unchanged(consumer, lambda: series.reveal(1), HtlcError, "order")
    first = series.reveal(0)
    assert consumer.reboot().series(series.series_id).reveal(0) == first  # again: the same, no write
    payee_series = producer.wallet.accept_htlcs(series.terms(), payee_index)
    unchanged(producer, lambda: payee_series.take_preimage(0, b"x" * 32), HtlcError, "hashlock")
    unchanged(producer, lambda: payee_series.claim(0), HtlcError, "not come")
    assert payee_series.take_preimage(0, first) and not payee_series.take_preimage(0, first)


def test_bad_input_to_an_htlc_series_is_refused_without_change(ledger, consumer, producer):
    mint(ledger, consumer, [100, 100])
    payee_index, payee = producer.wallet.new_account()
    other_index, _ = producer.wallet.new_account()
    series = consumer.wallet.start_htlcs(payee, 100, 2, timeout=50)
    sid = series.series_id
    terms = series.terms()
    payer_secret = consumer.wallet.keystore.secret(series.rec.my_index)
    changed = S.Htlc.decode(terms[1])
    changed.amount = 99
    changed.payer_sig = signing.sign(payer_secret, changed)
    forged = S.Htlc.decode(terms[1])
    forged.amount = 99
    for call, match in (
        (lambda: producer.wallet.accept_htlcs(terms, other_index), "another account"),
        (lambda: producer.wallet.accept_htlcs([terms[0], changed.encode()], payee_index), "other terms"),
        (lambda: producer.wallet.accept_htlcs([terms[0], terms[0]], payee_index), "repeats a hashlock"),
        (lambda: producer.wallet.accept_htlcs([terms[0], forged.encode()], payee_index), "other terms"),
        (lambda: producer.wallet.accept_htlcs(terms, 10**5), "never handed out"),
    ):
        unchanged(producer, call, WalletError, match)
    for call, match in (
        (lambda: consumer.wallet.fund_htlc(sid, 2), "no HTLC 2"),
        (lambda: consumer.wallet.fund_htlc(sid, True), "no HTLC"),
        (lambda: series.refund(0), "nothing to refund"),
        (lambda: series.reveal(-1), "no HTLC"),
        (lambda: consumer.wallet.forget_series(bytes(16)), "no usable"),
    ):
        unchanged(consumer, call, WalletError, match)
    for i in range(2):
        consumer.wallet.fund_htlc(sid, i)
    settle_all(ledger, 2, consumer.wallet)
    unchanged(consumer, lambda: consumer.wallet.forget_series(sid), WalletError, "still holds")
    theirs = producer.wallet.accept_htlcs(terms, payee_index)
    assert producer.wallet.accept_htlcs(terms, payee_index) is theirs  # shown again: the same series
    unchanged(producer, lambda: theirs.take_preimage(0, b"short"), HtlcError, "32 bytes")
    unchanged(producer, lambda: theirs.take_preimage(1, series.reveal(0)), HtlcError, "hashlock")
    theirs.take_preimage(0, series.reveal(0))
    (result,) = send(ledger, 3, series.refund(1))  # too early: the ledger refuses
    unchanged(consumer, lambda: consumer.wallet.settle_htlc(sid, 1, result), HtlcError, "HTLC_NOT_EXPIRED")
    unchanged(producer, lambda: producer.wallet.settle_htlc(sid, 0, result), HtlcError, "does not answer")
    (result,) = send(ledger, 4, theirs.claim(0))
    lie = L.Result.decode(result)
    lie.data = bytes(32)
    unchanged(producer, lambda: producer.wallet.settle_htlc(sid, 0, lie.encode()), HtlcError, "another payout")
    assert producer.wallet.settle_htlc(sid, 0, result) == "claimed"
    channel_id = open_channel(ledger, consumer, producer, height=6)
    other_query = ledger.query(L.Query(L.QUERY_CHANNEL, bytes(32), 0).encode())
    unchanged(consumer, lambda: consumer.wallet.finish_channel(channel_id, other_query), ChannelError, "does not answer")


def test_a_claim_after_a_reboot_between_payout_and_state(ledger, consumer, producer):
    mint(ledger, consumer, [100])
    payee_index, payee = producer.wallet.new_account()
    series = consumer.wallet.start_htlcs(payee, 100, 1, timeout=50)
    consumer.wallet.fund_htlc(series.series_id, 0)
    settle_all(ledger, 2, consumer.wallet)
    theirs = producer.wallet.accept_htlcs(series.terms(), payee_index)
    theirs.take_preimage(0, series.reveal(0))
    (result,) = send(ledger, 3, theirs.claim(0))
    w = Wallet.open(PowerCut(producer.root, at=2), producer.device_key)  # cut after the coin is in the book
    with pytest.raises(Cut):
        w.settle_htlc(series.series_id, 0, result)
    assert producer.reboot().series(series.series_id).state(0) == CLAIMED
    assert producer.wallet.status()["balance"] == 100


# -- reboots, tampering and bad input ----------------------------------------------------------

def test_every_step_of_a_session_survives_a_reboot(ledger, consumer, producer):
    """Reboot both wallets after every step: each reopen passes check and the session goes on."""
    mint(ledger, consumer, [2000])
    consumer.reboot()
    index, account = producer.wallet.new_account()
    producer.reboot()
    channel_id, raw = consumer.wallet.open_channel(account, 1000, 10, 5)
    consumer.reboot()
    assert consumer.wallet.pending_requests() == [raw]
    (result,) = send(ledger, 2, raw)
    consumer.wallet.handle_result(result)
    consumer.reboot()
    accept(ledger, producer, channel_id, index, 1000, 10, 5)
    producer.reboot()
    for k in range(2, 5):
        state = consumer.wallet.channel(channel_id).propose(100 * k, 1000 * k, receipt(k))
        consumer.reboot()
        full = producer.wallet.channel(channel_id).countersign(state)
        producer.reboot()
        consumer.wallet.channel(channel_id).accept(full)
        consumer.reboot()
    assert consumer.wallet.channel(channel_id).latest().seq == 3
    assert producer.wallet.channel(channel_id).latest().encode() == consumer.wallet.channel(channel_id).latest().encode()


def test_tampered_and_truncated_records_are_reported_and_not_used(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer)
    update(consumer, producer, channel_id, 2)
    update(consumer, producer, channel_id, 3)
    root = consumer.root
    name = "ch-" + channel_id[:8].hex()
    # One copy cut short (what a power cut mid-write leaves): the other copy, the newest
    # completed write, is used; the problem is reported.
    newest = name + records.SLOTS[consumer.wallet.channel(channel_id).record.slot]
    with open(os.path.join(root, newest), "r+b") as f:
        f.truncate(30)
    w = Wallet.open(Storage(root), consumer.device_key)
    assert w.channel(channel_id).latest().seq == 1
    assert any(newest in p and "interrupted write" in p for p in w.status()["problems"])  # a torn write: benign
    assert w.channel(channel_id).record.behind is None
    # Both copies of the book tampered: reported, refused, never overwritten.
    for slot in records.SLOTS:
        path = os.path.join(root, "books" + slot)
        blob = bytearray(open(path, "rb").read())
        blob[-5] ^= 1
        open(path, "wb").write(bytes(blob))
    consumer.wallet = w = Wallet.open(Storage(root), consumer.device_key)
    report = w.check()
    assert not report["ok"] and any(p.startswith("books:") and "authentication" in p for p in report["problems"])
    assert w.status()["balance"] is None
    unchanged(consumer, lambda: w.pay([(producer.wallet.new_account()[1], 1)]), WalletError, "cannot be used")
    unchanged(consumer, lambda: w.receive(bytes(32), 0, 0, 5, CLEAN), WalletError, "cannot be used")
    # The channel without a book still closes with its latest state.
    assert L.ChannelDispute.decode(w.channel(channel_id).dispute()).state.seq == 1
    with pytest.raises(KeystoreError, match="does not unseal"):
        Wallet.open(Storage(root), os.urandom(32))


def test_an_interrupted_create_is_completed_and_a_wallet_is_never_replaced(tmp_path, authority):
    root = tmp_path / "w"
    root.mkdir()
    key = os.urandom(32)
    Wallet.create(Storage(str(root)), key, ra_keys(authority))
    for slot in records.SLOTS:  # the power went before the profile was written
        if (root / ("profile" + slot)).exists():
            (root / ("profile" + slot)).unlink()
    with pytest.raises(WalletError, match="profile"):
        Wallet.open(Storage(str(root)), key)
    Wallet.create(Storage(str(root)), key, ra_keys(authority))
    assert Wallet.open(Storage(str(root)), key).check()["ok"]
    with pytest.raises(WalletError, match="exists"):
        Wallet.create(Storage(str(root)), key, ra_keys(authority))
    with pytest.raises(KeystoreError, match="no keystore"):
        Wallet.open(Storage(str(tmp_path)), key)


def test_bad_input_to_the_book_is_refused_without_change(ledger, consumer, producer, authority):
    mint(ledger, consumer, [500])
    w = consumer.wallet
    index, payee = producer.wallet.new_account()
    forged = S.Account(payee.pubkey, payee.epoch, H.Key("x").account.ra_sig)
    unknown_epoch = S.Account(payee.pubkey, payee.epoch + 9, payee.ra_sig)
    for call, match in (
        (lambda: w.pay([(forged, 10)]), "RA signature"),
        (lambda: w.pay([(unknown_epoch, 10)]), "epoch"),
        (lambda: w.pay([(payee, 0)]), "amount"),
        (lambda: w.pay([(payee, True)]), "amount"),
        (lambda: w.pay([(payee, 10)], fee=-1), "fee"),
        (lambda: w.pay([]), "payees"),
        (lambda: w.pay([(payee.encode(), 10)]), "not an Account"),
        (lambda: w.pay([(payee, 501)]), "needed"),
        (lambda: w.receive(b"short", 0, 0, 5, CLEAN), "coin"),
        (lambda: w.receive(bytes(32), 0, 0, 0, CLEAN), "amount"),
        (lambda: w.receive(bytes(32), 0, 10**5, 5, CLEAN), "never handed out"),
        (lambda: w.receive(bytes(32), 99, 0, 5, CLEAN), "coin"),
        (lambda: w.receive(bytes(32), 0, 0, 5, b"x" * 33), "coin"),
        (lambda: w.receive(w.books.coins[0].txhash, 0, 0, 7, CLEAN), "in the book"),
        (lambda: w.redeem(CLEAN), "only coins that came back"),
        (lambda: w.handle_result(b"junk"), "ledger result"),
        (lambda: w.handle_result(L.Result(bytes(32), True, 0, "", None).encode()), "no pending request"),
        (lambda: w.open_channel(forged, 100, 10, 5), "RA signature"),
        (lambda: w.open_channel(payee, 100, 101, 5), "installments"),
        (lambda: w.open_channel(payee, 100, 10, 0), "window"),
        (lambda: w.start_htlcs(forged, 10, 2, 5), "RA signature"),
        (lambda: w.start_htlcs(payee, 10, 0, 5), "positive"),
        (lambda: w.accept_channel(b"\x80", b"", 0, 1, 1, 1), "channel id"),
        (lambda: w.accept_channel(bytes(32), b"\x80", 0, 1, 1, 1), "ledger result"),
        (lambda: w.accept_htlcs([b"junk"], 0), "htlc"),
        (lambda: w.accept_htlcs([], 0), "series"),
        (lambda: w.finish_channel(bytes(32), b""), "no usable channel"),
        (lambda: w.fund_htlc(bytes(16), 0), "no usable"),
    ):
        unchanged(consumer, call, WalletError, match)
    # A result that claims success for another id is refused; the spend stays pending.
    raw = w.pay([(payee, 100)])
    lie = L.Result(hashlib.sha256(raw).digest(), True, L.OK, "", bytes(32)).encode()
    unchanged(consumer, lambda: w.handle_result(lie), WalletError, "not this request")
    assert w.pending_requests() == [raw]
    # A full book refuses further spends before any key is reserved.
    mint(ledger, consumer, [1] * 8, height=2)
    mint(ledger, consumer, [1] * 8, height=2)
    while len(w.books.spends) < MAX_SPENDS:
        w.pay([(payee, 1)])
    unchanged(consumer, lambda: w.pay([(payee, 1)]), WalletError, "wait for their result")


def test_bad_input_to_a_channel_is_refused_without_change(ledger, consumer, producer):
    channel_id = open_channel(ledger, consumer, producer, collateral=1000)
    update(consumer, producer, channel_id, 2)
    c, p = consumer.wallet.channel(channel_id), producer.wallet.channel(channel_id)
    good = c.propose(300, 6000, receipt(3))
    state = S.ChannelState.decode(good)

    def variant(**changes):
        v = S.ChannelState.decode(good)
        for k, value in changes.items():
            setattr(v, k, value)
        if "sig_consumer" not in changes:
            v.sig_consumer = signing.sign(consumer.wallet.keystore.secret(c.rec.my_index), v)
        return v.encode()

    for data, match in (
        (variant(seq=3), "not the next"),
        (variant(seq=1), "not the next"),
        (variant(paid_to_producer=100), "below the latest"),
        (variant(energy_wh=10), "below the latest"),
        (variant(paid_to_producer=1001), "exceeds the collateral"),
        (variant(sig_consumer=bytes(64)), "signature"),
        (variant(sig_consumer=signing.sign(H.secret("someone"), state)), "signature"),
        (variant(channel_id=bytes(32)), "channel"),
        (b"junk", "channel state"),
        (good[:-3], "channel state"),
    ):
        unchanged(producer, lambda: p.countersign(data), ChannelError if match != "channel state" else WalletError, match)
    full = p.countersign(good)
    assert p.countersign(good) == full  # a repeat gets the same bytes, no new signature
    forged = S.ChannelState.decode(full)
    forged.sig_producer = signing.sign(H.secret("someone"), forged)
    unchanged(consumer, lambda: c.accept(forged.encode()), ChannelError, "producer's signature")
    other = S.ChannelState.decode(full)
    other.receipt_digest = receipt(99)
    unchanged(consumer, lambda: c.accept(other.encode()), ChannelError, "not the state")
    for call, match in (
        (lambda: p.propose(400, 8000, receipt(4)), "only the consumer"),
        (lambda: c.countersign(good), "only the producer"),
        (lambda: c.propose(400, 8000, receipt(4)), "waits"),
    ):
        unchanged(consumer, call, ChannelError, match)
    c.accept(full)
    for call, match in (
        (lambda: c.propose(200, 9000, receipt(4)), "below the latest"),
        (lambda: c.propose(1001, 9000, receipt(4)), "exceeds"),
        (lambda: c.propose(400, 9000, b"short"), "channel state"),
        (lambda: c.propose(-1, 9000, receipt(4)), "channel state"),
        (lambda: c.accept(good), "no proposal"),
    ):
        unchanged(consumer, call, WalletError, match)
    stale = L.ChannelClose(L.opening_state(channel_id, 100), b"", b"")
    stale.sig_producer = signing.sign(producer.wallet.keystore.secret(p.rec.my_index), stale)
    unchanged(consumer, lambda: c.countersign_close(stale.encode()), ChannelError, "my latest")
    half = L.ChannelClose.decode(p.sign_close())
    half.sig_producer = bytes(64)
    unchanged(consumer, lambda: c.countersign_close(half.encode()), ChannelError, "signature")


def test_accept_channel_checks_the_channel_on_the_ledger(ledger, consumer, producer):
    mint(ledger, consumer, [1000, 500])
    index, account = producer.wallet.new_account()
    other_index, _ = producer.wallet.new_account()
    channel_id, raw = consumer.wallet.open_channel(account, 1000, 10, 5)
    answer = lambda: ledger.query(channels.query(channel_id))  # noqa: E731
    unchanged(producer, lambda: producer.wallet.accept_channel(channel_id, answer(), index, 1000, 10, 5),
              WalletError, "no channel")  # named before it is on the ledger
    assert consumer.wallet.handle_result(send(ledger, 2, raw)[0]) == "confirmed"
    other = ledger.query(channels.query(bytes(32)))
    for call, match in (
        (lambda: producer.wallet.accept_channel(channel_id, answer(), other_index, 1000, 10, 5),
         "another producer account"),
        (lambda: producer.wallet.accept_channel(channel_id, answer(), index, 900, 10, 5), "agreed"),
        (lambda: producer.wallet.accept_channel(channel_id, answer(), 10**5, 1000, 10, 5), "never handed out"),
        (lambda: producer.wallet.accept_channel(channel_id, other, index, 1000, 10, 5), "does not answer"),
        (lambda: producer.wallet.accept_channel(channel_id, answer()[:-1], index, 1000, 10, 5), "ledger result"),
    ):
        unchanged(producer, call, WalletError, match)
    channel = producer.wallet.accept_channel(channel_id, answer(), index, 1000, 10, 5)
    assert producer.wallet.accept_channel(channel_id, answer(), index, 1000, 10, 5) is channel  # no second object
    again_id, again = consumer.wallet.open_channel(account, 500, 5, 5)
    assert consumer.wallet.handle_result(send(ledger, 3, again)[0]) == "confirmed"
    unchanged(producer, lambda: accept(ledger, producer, again_id, index, 500, 5, 5), WalletError, "already")


def test_bad_registration_replies_store_nothing(consumer, authority):
    w = consumer.wallet
    request = w.refill_request(4)
    assert w.refill_request(4) == request  # in flight: the same request again
    good = msg.decode_reply(authority.handle(request))
    forged = msg.RegistrationResponse(good.nonce, good.epoch, good.ra_sigs[:3] + [good.ra_sigs[0]])
    unchanged(consumer, lambda: w.refill_reply(forged.encode()), KeystoreError, "does not verify")
    unchanged(consumer, lambda: w.refill_reply(b"\xa1\x00"), KeystoreError, "malformed")
    assert w.refill_reply(good.encode()) == 4
    # An answer lost and asked for again: the RA signs the same batch again.
    request = w.refill_request(2)
    authority.handle(request)
    assert w.refill_reply(authority.handle(request)) == 2
    # A refusal of the request in flight abandons it, so the next refill asks afresh.
    request = w.refill_request(2)
    authority.set_identity_enabled(w.identity_id, False)
    with pytest.raises(KeystoreError, match="IDENTITY_DISABLED"):
        w.refill_reply(authority.handle(request))
    authority.set_identity_enabled(w.identity_id, True)
    assert w.keystore.pending is None
    assert w.refill_reply(authority.handle(w.refill_request(2))) == 2
    assert w.needs_refill(100) and not w.needs_refill(1)


def test_writes_per_operation(ledger, consumer, producer):
    """The write counts the docstrings promise (what a power-cut test iterates over)."""
    mint(ledger, consumer, [1000, 300])
    w = consumer.wallet
    writes = lambda: w.storage.writes  # noqa: E731
    index, payee = producer.wallet.new_account()
    before = writes()
    raw = w.pay([(payee, 300)])  # exact coin: no change key
    assert writes() - before == 1
    before = writes()
    w.handle_result(send(ledger, 2, raw)[0])
    assert writes() - before == 1
    before = writes()
    limit = w.keystore.limit
    channel_id, raw = w.open_channel(payee, 500, 5, 5)  # consumer key + change key + book
    # Both keys come from a block already reserved on flash: only the book is written.
    assert w.keystore.limit == limit and writes() - before == 1
    before = writes()
    w.handle_result(send(ledger, 3, raw)[0])  # channel record, its listing in the profile, book
    assert writes() - before == 3
    accept(ledger, producer, channel_id, index, 500, 5, 5)
    c, p = w.channel(channel_id), producer.wallet.channel(channel_id)
    before, pbefore = writes(), producer.wallet.storage.writes
    full = p.countersign(c.propose(200, 100, receipt(1)))
    c.accept(full)
    assert (writes() - before, producer.wallet.storage.writes - pbefore) == (2, 1)
    full = p.countersign(c.propose(300, 200, receipt(2)))
    before = writes()
    c.accept(full, store=False)  # kept for the next write
    assert writes() == before
    c.propose(400, 300, receipt(3))  # one write: seq 2 accepted and seq 3 proposed
    assert writes() - before == 1
    before = writes()
    H.run(ledger, 4, p.countersign_close(c.sign_close()))
    assert writes() - before == 1
    before = writes()
    w.finish_channel(channel_id, ledger.query(c.query()))  # payout coin, unlisting, two removals
    assert writes() - before == 4


# -- the command line ------------------------------------------------------------------------

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]


def cli(*args):
    return subprocess.run(PLUGPAY + ["wallet"] + list(args), capture_output=True, text=True, timeout=120)


def test_cli_init_status_check_and_errors(tmp_path, authority):
    d, key = tmp_path / "w", tmp_path / "device.key"
    ra_arg = "%d:%s" % (authority.vault.epoch, authority.vault.public_key.hex())
    out = cli("init", "--dir", str(d), "--device-key", str(key), "--ra-pubkey", ra_arg)
    assert out.returncode == 0, out.stderr
    assert key.stat().st_size == 32 and "device public key" in out.stdout
    identity = authority.register_identity({"name": "Ada Lovelace", "licence": "LOV-1815",
                                            "vehicle_id": fresh_vin()},
                                           bytes.fromhex(out.stdout.split("device public key: ")[1].split()[0]))
    assert cli("identity", "--dir", str(d), "--device-key", str(key), "--identity", identity.hex()).returncode == 0
    out = cli("status", "--dir", str(d), "--device-key", str(key), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["identity"] == identity.hex() and status["balance"] == 0
    out = cli("status", "--dir", str(d), "--device-key", str(key))
    assert out.returncode == 0 and "balance" in out.stdout
    assert cli("check", "--dir", str(d), "--device-key", str(key)).returncode == 0
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    for args, match in (
        (("status", "--dir", str(d), "--device-key", str(wrong)), "does not unseal"),
        (("status", "--dir", str(tmp_path / "none"), "--device-key", str(key)), "no wallet"),
        (("check", "--dir", str(d), "--device-key", str(tmp_path / "missing.key")), "no device key"),
        (("init", "--dir", str(d), "--device-key", str(key), "--ra-pubkey", ra_arg), "exists"),
        (("init", "--dir", str(tmp_path / "x"), "--device-key", str(key), "--ra-pubkey", "zz"), "EPOCH:HEX"),
    ):
        out = cli(*args)
        assert out.returncode == 2 and match in out.stderr and len(out.stderr.strip().splitlines()) == 1, out
    for slot in records.SLOTS:
        path = d / ("profile" + slot)
        if path.exists():
            path.write_bytes(path.read_bytes()[:20])
    out = cli("check", "--dir", str(d), "--device-key", str(key))
    assert out.returncode == 2 and "profile" in out.stderr, out
    shutil.rmtree(d)
