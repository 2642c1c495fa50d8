"""The ledger state machine: every operation, every rejection reason, determinism,
snapshots and the conservation of money. Real SQLite files and real signatures."""
import hashlib
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger_helpers as H
from plugpay.host.ledger import Ledger
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError

A, B, C, D = (H.Key(x) for x in "abcd")
CONSUMER, PRODUCER = H.Key("consumer"), H.Key("producer")
R = b"r" * 32  # an HTLC preimage


@pytest.fixture
def ledger(tmp_path):
    return H.open_ledger(tmp_path / "ledger.db")


def mint(ledger, pays, nonce=0, height=1):
    (res,) = H.run(ledger, height, H.faucet(pays, nonce))
    assert res.ok, res.detail
    return H.coins(res.data, pays)


def unchanged(ledger, run):
    """Run ``run`` and assert it changed neither the digest nor the snapshot."""
    before = ledger.state_digest(), ledger.snapshot()
    out = run()
    assert (ledger.state_digest(), ledger.snapshot()) == before
    return out


def utxo(ledger, coin):
    return H.query(ledger, L.QUERY_UTXO, coin.txhash, coin.sn)


def test_reason_table_names_every_code_once():
    assert len(set(L.REASONS.values())) == len(L.REASONS)
    for code, name in L.REASONS.items():
        assert getattr(L, name) == code
    assert L.reason_name(999) == "REASON_999"


# -- faucet and transactions -------------------------------------------------------------

def test_faucet_mints_outputs_to_accounts(ledger):
    a, b = mint(ledger, [(A, 1000), (B, 500)])
    got = utxo(ledger, b)
    assert got.ok and got.data == [B.account.encode(), 500, 1, None, None]
    assert ledger.supply() == {"minted": 1500, "burnt": 0, "redeemed": 0, "live": 1500, "channels": 0, "htlcs": 0}


def test_faucet_refusals(ledger, tmp_path):
    (res,) = H.run(H.open_ledger(tmp_path / "nofaucet.db", faucet=False), 1, H.faucet([(A, 1)]))
    assert H.reasons([res]) == ["NOT_FAUCET"]
    op = H.faucet([(A, 1)], signer=H.secret("not the faucet"))
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 1, op))) == ["NOT_FAUCET"]
    mint(ledger, [(A, (1 << 64) - 1)])
    assert H.reasons(H.run(ledger, 2, H.faucet([(B, 1)], nonce=1))) == ["AMOUNT_OVERFLOW"]
    assert H.reasons(H.run(ledger, 2, H.faucet([(A, (1 << 64) - 1)]))) == ["DUPLICATE"]


def test_two_in_two_out_transaction(ledger):
    a, b = mint(ledger, [(A, 1000), (B, 500)])
    tx = H.transaction([a, b], [(C, 1200), (D, 250)])
    (res,) = H.run(ledger, 2, tx)
    assert res.ok and res.data == tx.txhash()
    assert res.request_digest == hashlib.sha256(tx.encode()).digest()
    assert utxo(ledger, H.Coin(tx.txhash(), 1, 250, D)).data[:2] == [D.account.encode(), 250]
    assert utxo(ledger, a).data[3:] == [tx.txhash(), 2]  # spent by tx at height 2
    assert H.query(ledger, L.QUERY_TX, tx.txhash()).data == [2, S.TAG_TRANSACTION, tx.encode()]
    assert ledger.supply()["burnt"] == 50 and H.conserved(ledger)


def test_double_spend_in_one_batch_and_across_batches(ledger):
    a, b = mint(ledger, [(A, 100), (B, 100)])
    first = H.transaction([a], [(C, 100)])
    second = H.transaction([a], [(D, 100)])
    assert H.reasons(H.run(ledger, 2, first, second)) == ["OK", "DOUBLE_SPEND"]
    third = H.transaction([b, a], [(D, 200)])
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 3, third))) == ["DOUBLE_SPEND"]
    assert utxo(ledger, b).data[3] is None  # the valid input of the refused tx is still live


def test_replay_of_a_confirmed_transaction_is_a_duplicate(ledger):
    (a,) = mint(ledger, [(A, 100)])
    tx = H.transaction([a], [(C, 100)])
    assert H.reasons(H.run(ledger, 2, tx, tx)) == ["OK", "DUPLICATE"]
    assert H.reasons(H.run(ledger, 3, tx)) == ["DUPLICATE"]


@pytest.mark.parametrize("build, reason", [
    (lambda a, b: H.transaction([a], [(H.Key("x", ra_secret=H.secret("fake ra")), 10)]), "BAD_ACCOUNT_SIGNATURE"),
    (lambda a, b: H.transaction([a], [(H.Key("x", epoch=9), 10)]), "UNKNOWN_RA_EPOCH"),
    (lambda a, b: H.transaction([a], [(C, 10)], signers=[B]), "BAD_INPUT_SIGNATURE"),
    (lambda a, b: H.transaction([a, b], [(C, 10)], signers=[None, A]), "BAD_INPUT_SIGNATURE"),
    (lambda a, b: H.transaction([a._replace(sn=5)], [(C, 10)]), "UNKNOWN_INPUT"),
    (lambda a, b: H.transaction([a, a], [(C, 10)]), "DUPLICATE_INPUT"),
    (lambda a, b: H.transaction([a, b], [(C, 100), (D, 101)]), "INPUTS_BELOW_OUTPUTS"),
    (lambda a, b: H.transaction([a], [(C, (1 << 64) - 1), (D, 1)]), "AMOUNT_OVERFLOW"),
    (lambda a, b: H.transaction([a], [(C, 0)]), "ZERO_AMOUNT"),
])
def test_transaction_rejections_change_nothing(ledger, build, reason):
    a, b = mint(ledger, [(A, 100), (B, 100)])
    results = unchanged(ledger, lambda: H.run(ledger, 2, build(a, b)))
    assert H.reasons(results) == [reason] and results[0].detail
    assert ledger.rejections() == {reason: 1}


def test_forged_account_signature_is_refused_even_after_the_real_one_was_seen(ledger):
    (a,) = mint(ledger, [(A, 100)])
    forged = S.Account(C.pubkey, H.RA_EPOCH, H.Key("other").account.ra_sig)
    tx = S.Transaction([S.TxInput(a.txhash, 0)], S.Price(1, 10), [S.TxOutput(forged, 10)], [b""])
    tx.witnesses = [A.sign(tx)]
    assert H.reasons(H.run(ledger, 2, tx)) == ["BAD_ACCOUNT_SIGNATURE"]


@pytest.mark.parametrize("raw, reason", [
    (b"", "MALFORMED"),
    (b"\xff\x00", "MALFORMED"),
    (codec.dumps([2, 1, [], [1, 1], [], []]), "MALFORMED"),
    (codec.dumps([99, 1]), "UNKNOWN_OP"),
    (codec.dumps("text"), "MALFORMED"),
    (b"\x40" * (L.MAX_REQUEST_BYTES + 1), "TOO_LARGE"),
])
def test_bad_bytes_are_rejected_without_state_change(ledger, raw, reason):
    (a,) = mint(ledger, [(A, 100)])
    good = H.transaction([a], [(C, 100)])
    results = unchanged(ledger, lambda: ledger.execute(2, [raw]))
    res = L.Result.decode(results[0])
    assert (res.ok, L.reason_name(res.reason)) == (False, reason)
    assert res.request_digest == hashlib.sha256(raw).digest()
    # A bad request in a batch does not affect the others.
    assert H.reasons(H.run(ledger, 2, raw, good, raw)) == [reason, "OK", reason]


def test_non_bytes_request_does_not_raise(ledger):
    (res,) = [L.Result.decode(r) for r in ledger.execute(1, [None])]
    assert L.reason_name(res.reason) == "MALFORMED"


def test_redeem_burns_inputs_into_the_issuer_and_its_mints_are_unlinkable(ledger):
    a, b = mint(ledger, [(A, 700), (A, 300)])
    op = H.redeem([a, b], 990, [(C, 500), (D, 490)], salt=b"k" * 32)
    (res,) = H.run(ledger, 2, op)
    assert res.ok and res.data == op.redeem_id()
    assert utxo(ledger, a).data[3] == op.redeem_id()  # spent by the redeem
    assert ledger.supply()["redeemed"] == 990 and ledger.supply()["burnt"] == 10 and H.conserved(ledger)
    # The issuer mints each fresh coin alone; the wallet knows where each lands.
    outputs = [S.TxOutput(C.account, 500), S.TxOutput(D.account, 490)]
    mints = []
    for i, out in enumerate(outputs):
        m = L.redeem_mint(op.redeem_id(), b"k" * 32, i, out)
        m.faucet_sig = signing.sign(H.FAUCET_SECRET, m)
        mints.append(m)
    results = H.run(ledger, 3, *mints)
    assert [r.data for r in results] == [m.txhash() for m in mints]
    assert H.conserved(ledger) and ledger.supply()["minted"] == 1000 + 990
    # Nothing on the ledger ties the mints to the redeem without the salt.
    assert op.order == L.redeem_order(b"k" * 32, outputs) != L.redeem_order(b"x" * 32, outputs)
    assert mints[0].nonce != L.redeem_mint(op.redeem_id(), b"x" * 32, 0, outputs[0]).nonce


def test_redeem_refusals_change_nothing(ledger):
    (a,) = mint(ledger, [(A, 100)])
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 2, H.redeem([a], 101)))) == ["INPUTS_BELOW_OUTPUTS"]
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 2, H.redeem([a], 100, signers=[B])))) == ["BAD_INPUT_SIGNATURE"]
    op = H.redeem([a], 100)
    assert H.run(ledger, 2, op)[0].ok
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 3, op))) == ["DUPLICATE"]
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 3, H.redeem([a], 99)))) == ["DOUBLE_SPEND"]
    with pytest.raises(DecodeError, match="amount"):
        L.Redeem([S.TxInput(a.txhash, 0)], 0, bytes(32), [b""])


# -- state channel -----------------------------------------------------------------------

def open_channel(ledger, collateral=1000, installments=10, window=5, height=2):
    (coin,) = mint(ledger, [(A, collateral + 100)], nonce=height)
    op = H.channel_open([coin], CONSUMER, PRODUCER, collateral, installments, window, change=[(A, 90)])
    (res,) = H.run(ledger, height, op)
    assert res.ok and res.data == op.channel_id(), res.detail
    return op.channel_id()


def payouts(ledger, txhash, n):
    got = []
    for sn in range(n):
        res = H.query(ledger, L.QUERY_UTXO, txhash, sn)
        got.append(res.data[1] if res.ok else 0)
    return got


def test_channel_open_locks_collateral_with_first_installment_paid(ledger):
    cid = open_channel(ledger)
    ch = H.query(ledger, L.QUERY_CHANNEL, cid).data
    assert ch[2:10] == [1000, 10, 5, L.STATUS_OPEN, 0, 100, 0, 2]  # paid = b/N at open
    assert ledger.supply() == {"minted": 1100, "burnt": 10, "redeemed": 0, "live": 90, "channels": 1000, "htlcs": 0}


def test_cooperative_close_pays_out_at_once(ledger):
    cid = open_channel(ledger)
    state = H.channel_state(cid, 7, 700, CONSUMER, PRODUCER, energy_wh=14000)
    (res,) = H.run(ledger, 3, H.channel_close(state, CONSUMER, PRODUCER))
    assert res.ok and res.data == L.channel_payout_txhash(cid)
    assert payouts(ledger, res.data, 2) == [700, 300]
    assert H.conserved(ledger) and ledger.supply()["channels"] == 0
    # The producer's payout is an ordinary output its key can spend.
    spend = H.transaction([H.Coin(res.data, 0, 700, PRODUCER)], [(D, 700)])
    assert H.reasons(H.run(ledger, 4, spend)) == ["OK"]
    again = H.channel_close(H.channel_state(cid, 8, 800, CONSUMER, PRODUCER), CONSUMER, PRODUCER)
    assert H.reasons(H.run(ledger, 5, again)) == ["CHANNEL_CLOSED"]


def test_unilateral_close_stale_state_is_overridden_within_the_window(ledger):
    cid = open_channel(ledger, window=5)
    stale = H.channel_state(cid, 3, 300, CONSUMER, PRODUCER)
    latest = H.channel_state(cid, 6, 600, CONSUMER, PRODUCER)
    (res,) = H.run(ledger, 10, H.channel_dispute(stale, CONSUMER, by_producer=False))
    assert res.ok and res.data == 15  # deadline = height + window
    assert H.reasons(H.run(ledger, 11, L.ChannelSettle(cid))) == ["CHANNEL_TOO_EARLY"]
    (res,) = H.run(ledger, 14, H.channel_dispute(latest, PRODUCER, by_producer=True))
    assert res.ok and res.data == 15  # an override keeps the deadline
    older = H.channel_state(cid, 5, 500, CONSUMER, PRODUCER)
    assert H.reasons(H.run(ledger, 14, H.channel_dispute(older, CONSUMER, False))) == ["CHANNEL_STALE_STATE"]
    stale_close = H.channel_close(H.channel_state(cid, 5, 500, CONSUMER, PRODUCER), CONSUMER, PRODUCER)
    assert H.reasons(H.run(ledger, 14, stale_close)) == ["CHANNEL_STALE_STATE"]
    newer = H.channel_state(cid, 7, 700, CONSUMER, PRODUCER)
    assert H.reasons(H.run(ledger, 15, H.channel_dispute(newer, PRODUCER, True))) == ["CHANNEL_WINDOW_OVER"]
    (res,) = H.run(ledger, 15, L.ChannelSettle(cid))
    assert res.ok and payouts(ledger, res.data, 2) == [600, 400]
    assert H.reasons(H.run(ledger, 16, L.ChannelSettle(cid))) == ["DUPLICATE"]
    assert H.conserved(ledger)


def test_unilateral_close_with_the_opening_state_pays_the_first_installment(ledger):
    cid = open_channel(ledger, collateral=1001, installments=4)
    opening = L.opening_state(cid, 250)
    assert H.reasons(H.run(ledger, 3, L.ChannelSettle(cid))) == ["CHANNEL_NOT_CLOSING"]
    assert H.run(ledger, 3, H.channel_dispute(opening, PRODUCER, by_producer=True))[0].ok
    (res,) = H.run(ledger, 8, L.ChannelSettle(cid))
    assert res.ok and payouts(ledger, res.data, 2) == [250, 751]


def test_channel_rejections(ledger):
    cid = open_channel(ledger)
    other = open_channel(ledger, height=3)
    x = H.Key("stranger")
    good = H.channel_state(cid, 2, 200, CONSUMER, PRODUCER)
    cases = [
        (H.channel_close(H.channel_state(bytes(32), 1, 100, CONSUMER, PRODUCER), CONSUMER, PRODUCER), "CHANNEL_UNKNOWN"),
        (H.channel_close(H.channel_state(cid, 2, 200, CONSUMER, None), CONSUMER, PRODUCER), "CHANNEL_NOT_SIGNED"),
        (H.channel_close(H.channel_state(cid, 2, 200, CONSUMER, x), CONSUMER, PRODUCER), "CHANNEL_BAD_SIGNATURE"),
        (H.channel_close(good, CONSUMER, x), "CHANNEL_BAD_SIGNATURE"),
        (H.channel_close(H.channel_state(cid, 2, 1001, CONSUMER, PRODUCER), CONSUMER, PRODUCER), "CHANNEL_OVERPAID"),
        (H.channel_dispute(H.channel_state(cid, 0, 999, CONSUMER, PRODUCER), CONSUMER, False), "CHANNEL_BAD_STATE"),
        (H.channel_dispute(good, PRODUCER, by_producer=False), "CHANNEL_BAD_SIGNATURE"),
        (L.ChannelSettle(bytes(32)), "CHANNEL_UNKNOWN"),
    ]
    for op, reason in cases:
        assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 4, op))) == [reason], reason
    # A state signed for one channel is refused for another, even by the same parties.
    moved = S.ChannelState(other, good.seq, good.paid_to_producer, good.energy_wh, good.receipt_digest,
                           good.sig_consumer, good.sig_producer)
    assert H.reasons(H.run(ledger, 4, H.channel_dispute(moved, CONSUMER, False))) == ["CHANNEL_BAD_SIGNATURE"]


def test_channel_open_is_funded_like_a_transaction(ledger):
    (coin,) = mint(ledger, [(A, 100)])
    fake = H.Key("fake producer", ra_secret=H.secret("fake ra"))
    for op, reason in [
        (H.channel_open([coin], CONSUMER, fake, 100), "BAD_ACCOUNT_SIGNATURE"),
        (H.channel_open([coin], CONSUMER, PRODUCER, 101), "INPUTS_BELOW_OUTPUTS"),
        (H.channel_open([coin], CONSUMER, PRODUCER, 50, change=[(A, 51)]), "INPUTS_BELOW_OUTPUTS"),
    ]:
        assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 2, op))) == [reason]
    op = H.channel_open([coin], CONSUMER, PRODUCER, 100)
    assert H.reasons(H.run(ledger, 2, op, op)) == ["OK", "DUPLICATE"]
    with pytest.raises(DecodeError, match="installments"):
        H.channel_open([coin], CONSUMER, PRODUCER, 5, installments=6)


# -- HTLC --------------------------------------------------------------------------------

def create_htlc(ledger, amount=300, timeout=20, height=2):
    (coin,) = mint(ledger, [(A, amount + 10)], nonce=height)
    op = H.htlc_create([coin], A, B, amount, R, timeout, change=[(A, 10)])
    (res,) = H.run(ledger, height, op)
    assert res.ok and res.data == op.htlc.digest(), res.detail
    return res.data


def test_htlc_claim_before_timeout(ledger):
    hid = create_htlc(ledger)
    assert ledger.supply()["htlcs"] == 300
    for op, reason in [
        (H.htlc_claim(hid, b"x" * 32, B), "HTLC_WRONG_PREIMAGE"),
        (H.htlc_claim(hid, R, A), "HTLC_BAD_SIGNATURE"),
        (H.htlc_claim(bytes(32), R, B), "HTLC_UNKNOWN"),
        (H.htlc_refund(hid, A), "HTLC_NOT_EXPIRED"),
    ]:
        assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 19, op))) == [reason]
    (res,) = H.run(ledger, 19, H.htlc_claim(hid, R, B))
    assert res.ok and res.data == L.htlc_payout_txhash(hid)
    assert utxo(ledger, H.Coin(res.data, 0, 300, B)).data[:2] == [B.account.encode(), 300]
    assert H.reasons(H.run(ledger, 25, H.htlc_refund(hid, A))) == ["HTLC_NOT_OPEN"]
    assert H.query(ledger, L.QUERY_HTLC, hid).data[5] == L.STATUS_CLAIMED
    assert H.conserved(ledger) and ledger.supply()["htlcs"] == 0


def test_htlc_refund_from_timeout_on(ledger):
    hid = create_htlc(ledger, timeout=20)
    assert H.reasons(H.run(ledger, 20, H.htlc_claim(hid, R, B))) == ["HTLC_EXPIRED"]
    assert H.reasons(H.run(ledger, 20, H.htlc_refund(hid, B))) == ["HTLC_BAD_SIGNATURE"]
    (res,) = H.run(ledger, 20, H.htlc_refund(hid, A))
    assert res.ok and utxo(ledger, H.Coin(res.data, 0, 300, A)).data[:2] == [A.account.encode(), 300]
    assert H.conserved(ledger)


def test_htlc_create_rejections(ledger):
    (coin,) = mint(ledger, [(A, 100)])
    bad_sig = H.htlc_create([coin], A, B, 50, R, 20)
    bad_sig.htlc.payer_sig = B.sign(bad_sig.htlc)
    bad_sig.witnesses = [A.sign(bad_sig)]
    for op, reason in [
        (H.htlc_create([coin], A, B, 50, R, 5), "HTLC_EXPIRED"),
        (H.htlc_create([coin], A, B, 0, R, 20), "ZERO_AMOUNT"),
        (H.htlc_create([coin], A, B, 101, R, 20), "INPUTS_BELOW_OUTPUTS"),
        (bad_sig, "HTLC_BAD_SIGNATURE"),
    ]:
        assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 5, op))) == [reason]
    op = H.htlc_create([coin], A, B, 50, R, 20)
    assert H.reasons(H.run(ledger, 5, op, op)) == ["OK", "DUPLICATE"]


def test_a_series_of_htlcs_is_n_creates(ledger):
    coins = mint(ledger, [(A, 100)] * 4)
    preimages = [bytes([i]) * 32 for i in range(4)]
    creates = [H.htlc_create([c], A, B, 100, r, 30) for c, r in zip(coins, preimages)]
    assert all(r.ok for r in H.run(ledger, 2, *creates))
    claims = [H.htlc_claim(op.htlc.digest(), r, B) for op, r in zip(creates, preimages)]
    assert all(r.ok for r in H.run(ledger, 3, *claims))
    assert ledger.supply()["live"] == 400


# -- market board ------------------------------------------------------------------------

def test_market_request_bid_update_and_commit(ledger):
    req, p1, p2 = H.Key("request"), H.Key("bidder 1"), H.Key("bidder 2")
    assert H.run(ledger, 1, H.market_request(req, bid_deadline=10))[0].ok
    first = H.market_bid(req, p1, 40, seq=1)
    better = H.market_bid(req, p1, 33, seq=2)
    results = H.run(ledger, 2, first, H.market_bid(req, p2, 35), better, H.market_bid(req, p1, 30, seq=2))
    assert H.reasons(results) == ["OK", "OK", "OK", "MARKET_STALE_BID"]
    assert H.reasons(H.run(ledger, 3, H.market_commit(req, first.digest()))) == ["MARKET_UNKNOWN_BID"]
    assert H.reasons(H.run(ledger, 3, H.market_commit(req, better.digest(), signer=p1))) == ["MARKET_BAD_SIGNATURE"]
    (res,) = H.run(ledger, 11, H.market_commit(req, better.digest()))
    assert res.ok
    got = H.query(ledger, L.QUERY_MARKET, req.pubkey).data
    assert got[:10] == ["AT-5020", 600, 660, L.WINDOW_HEIGHTS, 20000, 10, L.STATUS_COMMITTED, better.digest(), 2, 1]
    site = list(H.SALZBURG_E6)
    assert got[10] == sorted([[p1.pubkey, 2, 33, better.digest(), 2] + site, [p2.pubkey, 1, 35, results[1].data, 2] + site])
    assert H.reasons(H.run(ledger, 11, H.market_bid(req, H.Key("late"), 1))) == ["MARKET_CLOSED"]


def test_market_rejections(ledger, monkeypatch):
    req = H.Key("request")
    forged = H.market_request(req, 10)
    forged.sig = A.sign(forged)
    assert H.reasons(H.run(ledger, 1, forged, H.market_request(req, 1))) == ["MARKET_BAD_SIGNATURE", "MARKET_CLOSED"]
    assert H.reasons(H.run(ledger, 1, H.market_bid(req, A, 1))) == ["MARKET_UNKNOWN"]
    assert H.run(ledger, 1, H.market_request(req, 10))[0].ok
    assert H.reasons(H.run(ledger, 1, H.market_request(req, 10, region="elsewhere"))) == ["MARKET_EXISTS"]
    bad = H.market_bid(req, A, 1)
    bad.sig = B.sign(bad)
    assert H.reasons(H.run(ledger, 2, bad)) == ["MARKET_BAD_SIGNATURE"]
    assert H.reasons(H.run(ledger, 10, H.market_bid(req, A, 1))) == ["MARKET_CLOSED"]
    monkeypatch.setattr(L, "MAX_BIDS", 1)
    assert H.reasons(H.run(ledger, 2, H.market_bid(req, A, 1), H.market_bid(req, B, 1))) == ["OK", "MARKET_FULL"]


def test_a_withdrawn_request_takes_no_bids_and_leaves_the_region_listing(ledger):
    req, bidder = H.Key("request"), H.Key("bidder")
    assert H.run(ledger, 1, H.market_request(req, bid_deadline=100))[0].ok
    bid = H.market_bid(req, bidder, 30)
    assert H.run(ledger, 2, bid)[0].ok
    region = L.market_region_key("AT-5020")
    assert len(H.query(ledger, L.QUERY_MARKET_REGION, region).data) == 1
    assert H.reasons(unchanged(ledger, lambda: H.run(ledger, 3, H.market_withdraw(req, signer=bidder)))) == [
        "MARKET_BAD_SIGNATURE"]
    withdraw = H.market_withdraw(req)
    (res,) = H.run(ledger, 3, withdraw)
    assert res.ok and res.data == req.pubkey
    assert H.query(ledger, L.QUERY_MARKET, req.pubkey).data[6] == L.STATUS_WITHDRAWN
    assert H.query(ledger, L.QUERY_MARKET_REGION, region).data == []
    later = H.run(ledger, 4, H.market_bid(req, H.Key("late"), 1), H.market_commit(req, bid.digest()), withdraw,
                  H.market_withdraw(H.Key("nobody")))
    assert H.reasons(later) == ["MARKET_CLOSED", "MARKET_CLOSED", "DUPLICATE", "MARKET_UNKNOWN"]
    assert "withdrawn" in later[0].detail


# -- queries -----------------------------------------------------------------------------

def test_queries_never_raise(ledger):
    (a,) = mint(ledger, [(A, 100)])
    assert H.query(ledger, L.QUERY_UTXO, a.txhash, 0).ok
    assert L.reason_name(H.query(ledger, L.QUERY_UTXO, a.txhash, 1).reason) == "NOT_FOUND"
    assert L.reason_name(H.query(ledger, L.QUERY_CHANNEL, bytes(32)).reason) == "NOT_FOUND"
    assert L.reason_name(H.query(ledger, 99, bytes(32)).reason) == "UNKNOWN_OP"
    for bad in (b"", b"\x00", None, L.Query(1, bytes(32), 0).encode()[:-1]):
        assert L.reason_name(L.Result.decode(ledger.query(bad)).reason) == "MALFORMED"


# -- determinism, snapshots, reload -------------------------------------------------------

def scenario():
    """A mixed sequence of blocks: (height, [ops]) with valid and invalid requests."""
    blocks = [(1, [H.faucet([(A, 1000), (B, 500), (C, 300)])])]
    a, b, c = H.coins(blocks[0][1][0].txhash(), [(A, 1000), (B, 500), (C, 300)])
    tx = H.transaction([a], [(D, 600), (A, 390)])
    op = H.channel_open([b], CONSUMER, PRODUCER, 400, 4, 3, change=[(B, 95)])
    htlc = H.htlc_create([c], C, D, 250, R, 9)
    blocks.append((2, [tx, tx, b"junk", op, htlc, H.transaction([a], [(B, 1)])]))
    cid = op.channel_id()
    blocks.append((3, [H.channel_dispute(H.channel_state(cid, 2, 200, CONSUMER, PRODUCER), CONSUMER, False),
                       H.htlc_claim(htlc.htlc.digest(), R, D), H.market_request(H.Key("req"), 9)]))
    blocks.append((6, [L.ChannelSettle(cid)]))
    return blocks


def feed(ledger, blocks):
    return [H.run(ledger, height, *ops) for height, ops in blocks]


def test_two_ledgers_fed_the_same_blocks_agree(tmp_path):
    blocks = scenario()
    one, two = H.open_ledger(tmp_path / "one.db"), H.open_ledger(tmp_path / "two.db")
    assert feed(one, blocks) == feed(two, blocks)
    assert one.state_digest() == two.state_digest() and one.snapshot() == two.snapshot()
    assert H.conserved(one)
    digest = one.state_digest()
    one.reload()  # the incremental digest equals one recomputed from the tables
    assert one.state_digest() == digest
    reopened = H.open_ledger(tmp_path / "one.db")
    assert reopened.state_digest() == digest and reopened.snapshot() == one.snapshot()


def test_snapshot_restores_into_a_fresh_database(tmp_path):
    source = H.open_ledger(tmp_path / "source.db")
    feed(source, scenario())
    fresh = H.open_ledger(tmp_path / "fresh.db")
    fresh.restore(source.snapshot())
    fresh.conn.commit()
    assert fresh.state_digest() == source.state_digest()
    assert fresh.snapshot() == source.snapshot()
    # And it executes the next block exactly as the source does.
    (coin,) = H.coins(scenario()[1][1][0].txhash(), [(D, 600)])
    nxt = [H.transaction([coin], [(C, 600)]), H.transaction([coin], [(A, 600)])]
    assert H.run(fresh, 7, *nxt) == H.run(source, 7, *nxt)
    assert fresh.state_digest() == source.state_digest()


def test_bad_snapshots_are_refused_before_anything_changes(ledger):
    mint(ledger, [(A, 100)])
    good = codec.loads(ledger.snapshot())
    bad_row = codec.loads(ledger.snapshot())
    bad_row[1][0][1][0][1] = "sn"
    repeated = codec.loads(ledger.snapshot())
    repeated[1][0][1].append(repeated[1][0][1][0])
    bad_data = codec.loads(ledger.snapshot())
    bad_data[1][0][1][0][2] = codec.dumps([1, 2])
    for data in (b"\x00", codec.dumps([2, good[1]]), codec.dumps([1, good[1][:-1]]), codec.dumps(bad_row),
                 codec.dumps(repeated), codec.dumps(bad_data)):
        with pytest.raises(DecodeError):
            unchanged(ledger, lambda: ledger.restore(data))


def test_rollback_then_reload_restores_the_committed_state(ledger):
    (a,) = mint(ledger, [(A, 100)])
    digest = ledger.state_digest()
    assert ledger.execute(2, [H.transaction([a], [(C, 100)]).encode()])
    assert ledger.state_digest() != digest
    ledger.conn.rollback()
    ledger.reload()
    assert ledger.state_digest() == digest
    assert H.run(ledger, 2, H.transaction([a], [(C, 100)]))[0].ok


def test_state_lives_in_the_replicas_transaction(tmp_path):
    """execute never commits: a second connection sees nothing until the replica commits."""
    ledger = H.open_ledger(tmp_path / "l.db")
    ledger.conn.commit()
    ledger.execute(1, [H.faucet([(A, 5)]).encode()])
    other = Ledger(sqlite3.connect(str(tmp_path / "l.db")), H.RA_PUBKEYS)
    assert other.supply()["minted"] == 0
    ledger.conn.commit()
    other.reload()
    assert other.supply()["minted"] == 5 and other.state_digest() == ledger.state_digest()


# -- conservation under random interleavings ----------------------------------------------

KEYS = [A, B, C, D, CONSUMER, PRODUCER]
FORGED = H.Key("forged", ra_secret=H.secret("fake ra"))


class Model:
    """Drives a ledger with random operations chosen from what is live, valid or not."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.coins = []
        self.channels = []
        self.htlcs = []
        self.height = 1
        self.nonce = 0

    def op(self, data):
        """One random request and what to do with the model if the ledger accepts it."""
        kinds = ["mint"]
        if self.coins:
            kinds += ["tx", "tx", "tx", "open", "htlc", "redeem", "junk"]
        if self.channels:
            kinds += ["close", "dispute", "dispute", "settle"]
        if self.htlcs:
            kinds += ["claim", "refund"]
        kind = data.draw(st.sampled_from(kinds))
        pick = lambda xs: xs[data.draw(st.integers(0, len(xs) - 1))]
        if kind == "mint":
            self.nonce += 1
            pays = [(pick(KEYS), data.draw(st.integers(1, 500))) for _ in range(data.draw(st.integers(1, 3)))]
            return H.faucet(pays, self.nonce), lambda r: self.coins.extend(H.coins(r.data, pays))
        if kind == "junk":
            return b"\x82\x02\x01", None
        if kind in ("close", "dispute", "settle"):
            cid, collateral = pick(self.channels)
            state = H.channel_state(cid, data.draw(st.integers(1, 4)), data.draw(st.integers(0, collateral + 1)),
                                    CONSUMER, PRODUCER)
            op = {"close": lambda: H.channel_close(state, CONSUMER, PRODUCER),
                  "dispute": lambda: H.channel_dispute(state, PRODUCER, True),
                  "settle": lambda: L.ChannelSettle(cid)}[kind]()
            return op, self.collect_payouts(L.channel_payout_txhash(cid), [(PRODUCER, 0), (CONSUMER, 1)])
        if kind in ("claim", "refund"):
            hid = pick(self.htlcs)
            op = H.htlc_claim(hid, R, B) if kind == "claim" else H.htlc_refund(hid, A)
            return op, self.collect_payouts(L.htlc_payout_txhash(hid), [(B if kind == "claim" else A, 0)])
        # Spending kinds: usually valid, sometimes a double spend, a forgery or an overdraft.
        spend = [pick(self.coins) for _ in range(data.draw(st.integers(1, 2)))]
        total = sum(c.amount for c in spend)
        bad = data.draw(st.integers(0, 3)) == 0
        if kind == "tx":
            out = max(0, total - data.draw(st.integers(0, 3))) + (5 if bad else 0)
            pays = [(pick(KEYS + [FORGED] if bad else KEYS), out)]
            return H.transaction(spend, pays), self.respend(spend, lambda r: H.coins(r.data, pays))
        if kind == "redeem":
            op = H.redeem(spend, max(1, total - data.draw(st.integers(0, 3))) + (5 if bad else 0))
            return op, self.respend(spend, lambda r: [])
        if kind == "open":
            op = H.channel_open(spend, CONSUMER, PRODUCER, total + (1 if bad else 0), min(total, 1 + total % 4), 2)
            return op, self.respend(spend, lambda r: self.channels.append((r.data, op.collateral)) or [])
        op = H.htlc_create(spend, A, B, total, R, self.height + data.draw(st.integers(1, 4)))
        return op, self.respend(spend, lambda r: self.htlcs.append(r.data) or [])

    def respend(self, spent, new_coins):
        def apply(result):
            self.coins = [c for c in self.coins if c not in spent] + new_coins(result)
        return apply

    def collect_payouts(self, txhash, owners):
        def collect(result):
            for key, sn in owners:
                got = H.query(self.ledger, L.QUERY_UTXO, txhash, sn)
                if got.ok:
                    self.coins.append(H.Coin(txhash, sn, got.data[1], key))
        return collect


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_interleavings_conserve_money_and_agree(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz")
    ledger, twin = H.open_ledger(path / "a.db"), H.open_ledger(path / "b.db")
    model = Model(ledger)
    for _ in range(data.draw(st.integers(1, 8))):
        model.height += data.draw(st.integers(0, 3))
        batch = [model.op(data) for _ in range(data.draw(st.integers(1, 5)))]
        raws = [op if isinstance(op, bytes) else op.encode() for op, _ in batch]
        results = H.run(ledger, model.height, *raws)
        assert H.run(twin, model.height, *raws) == results
        for (op, on_ok), res in zip(batch, results):
            if res.ok:
                on_ok(res)
        assert H.conserved(ledger)
        assert ledger.state_digest() == twin.state_digest()
    digest = ledger.state_digest()
    ledger.reload()
    assert ledger.state_digest() == digest


# -- staged writes ---------------------------------------------

def test_staged_writes_within_one_block_match_a_recomputed_digest(tmp_path):
    """Outputs created and spent in the same block, a double spend of an output spent
    earlier in the block, a replay within the block and the burnt total updated several
    times: the staged (coalesced) writes give the same tables and digest as a reload."""
    ledger = H.open_ledger(tmp_path / "ledger.db")
    (a,) = mint(ledger, [(A, 1000)])
    tx1 = H.transaction([a], [(B, 900)])
    (b,) = H.coins(tx1.txhash(), [(B, 900)])
    tx2 = H.transaction([b], [(C, 800)])
    (c,) = H.coins(tx2.txhash(), [(C, 800)])
    tx3 = H.transaction([c], [(D, 700)])
    again = H.transaction([b], [(D, 100)])
    results = H.run(ledger, 2, tx1, tx2, tx3, again, tx1)
    assert H.reasons(results) == ["OK", "OK", "OK", "DOUBLE_SPEND", "DUPLICATE"]
    assert ledger.utxos.pending == {} and ledger.spent.pending == {}
    # a's output is spent; b and c were created and spent inside the block
    assert H.query(ledger, L.QUERY_UTXO, b.txhash, 0).data[3] == tx2.txhash()
    assert ledger.total("burnt") == 300
    digest, snap = ledger.state_digest(), ledger.snapshot()
    ledger.reload()
    assert ledger.state_digest() == digest and ledger.snapshot() == snap
    assert H.conserved(ledger)


def test_execute_flushes_even_when_a_request_raises(tmp_path, monkeypatch):
    ledger = H.open_ledger(tmp_path / "ledger.db")
    (a,) = mint(ledger, [(A, 1000)])
    boom = H.faucet([(B, 5)], nonce=1)
    real = ledger._handlers[L.TAG_FAUCET]

    def faucet_then_fail(state, op, raw, height):
        real(state, op, raw, height)
        raise RuntimeError("boom")

    ledger._handlers[L.TAG_FAUCET] = faucet_then_fail
    with pytest.raises(RuntimeError):
        ledger.execute(2, [H.transaction([a], [(C, 10)]).encode(), boom.encode()])
    assert all(t.pending == {} for t in ledger.tables)
    ledger.conn.rollback()
    ledger.reload()
    assert H.conserved(ledger) and ledger.supply()["minted"] == 1000
