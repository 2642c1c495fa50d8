"""One set of ledger tests on both engines: our PBFT replicas and CometBFT validators, each a
real network of processes (``ledger_engines``). The same requests get the same answers:
payments and every refusal, double spends also sent to two nodes at once, a channel closed
cooperatively and one closed stale, disputed in the window and settled, HTLCs claimed and
refunded by height, the market; and every node ends in one state."""
import hashlib

import pytest

import ledger_helpers as H
from ledger_engines import ENGINES, network
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S


@pytest.fixture(scope="module", params=ENGINES)
def net(request, tmp_path_factory):
    with network(request.param, tmp_path_factory.mktemp(request.param)) as n:
        yield n
        n.assert_one_state()


def mint(net, *pays):
    op = H.faucet(list(pays), nonce=next(net.nonces))
    (result,) = net.submit(op)
    assert result.ok, result.detail
    return H.coins(result.data, list(pays))


def test_payments_and_every_refusal(net):
    alice, bob, carol = H.Key("p-alice"), H.Key("p-bob"), H.Key("p-carol")
    a, b = mint(net, (alice, 1000), (alice, 500))
    pay = H.transaction([a, b], [(bob, 1200), (carol, 250)])
    (bob_coin, carol_coin) = H.coins(pay.txhash(), [(bob, 1200), (carol, 250)])
    not_ra = H.Key("p-dave", ra_secret=H.secret("not the RA"))
    unknown_op = codec.dumps([99, 1, b"x"])
    results = net.submit(
        pay,
        H.transaction([a], [(carol, 900)]),                            # spent above
        H.transaction([bob_coin], [(carol, 1201)]),                    # more out than in
        H.transaction([bob_coin], [(carol, 10)], signers=[carol]),     # not the owner's signature
        H.transaction([bob_coin], [(not_ra, 10)]),                     # an account the RA never signed
        pay,                                                           # replay
        b"\x86\x02\x01",                                               # malformed CBOR
        unknown_op,
        b"\x86" + b"\x00" * L.MAX_REQUEST_BYTES,                       # over the ledger's size limit
    )
    assert H.reasons(results) == ["OK", "DOUBLE_SPEND", "INPUTS_BELOW_OUTPUTS", "BAD_INPUT_SIGNATURE",
                                  "BAD_ACCOUNT_SIGNATURE", "DUPLICATE", "MALFORMED", "UNKNOWN_OP", "TOO_LARGE"]
    assert results[0].data == pay.txhash()
    assert results[6].request_digest == hashlib.sha256(b"\x86\x02\x01").digest()
    got = net.query(L.QUERY_UTXO, carol_coin.txhash, carol_coin.sn)
    assert got.ok and got.data[:2] == [carol.account.encode(), 250] and got.data[3] is None
    spent = net.query(L.QUERY_UTXO, a.txhash, a.sn)
    assert spent.data[3] == pay.txhash()
    assert net.query(L.QUERY_TX, pay.txhash()).data[1:] == [S.TAG_TRANSACTION, pay.encode()]


def test_double_spends_sent_to_two_nodes_at_once(net):
    owner = H.Key("d-owner")
    coins = mint(net, *[(owner, 100 + i) for i in range(3)])
    for i, coin in enumerate(coins):
        one = H.transaction([coin], [(H.Key("d-x%d" % i), coin.amount)])
        other = H.transaction([coin], [(H.Key("d-y%d" % i), coin.amount)])
        assert sorted(H.reasons(net.submit_at_once(one, other))) == ["DOUBLE_SPEND", "OK"]


def open_channel(net, label, collateral=1000, installments=10, window=4):
    consumer, producer = H.Key(label + "-consumer"), H.Key(label + "-producer")
    (coin,) = mint(net, (consumer, collateral + 50))
    op = H.channel_open([coin], consumer, producer, collateral, installments, window,
                        change=[(H.Key(label + "-change"), 50)])
    (result,) = net.submit(op)
    assert result.ok, result.detail
    return result.data, consumer, producer


def test_channel_open_and_cooperative_close(net):
    channel_id, consumer, producer = open_channel(net, "coop")
    state = H.channel_state(channel_id, 6, 600, consumer, producer, energy_wh=1200)
    (result,) = net.submit(H.channel_close(state, consumer, producer))
    assert result.ok, result.detail
    payout = L.channel_payout_txhash(channel_id)
    assert net.query(L.QUERY_UTXO, payout, 0).data[:2] == [producer.account.encode(), 600]
    assert net.query(L.QUERY_UTXO, payout, 1).data[:2] == [consumer.account.encode(), 400]
    assert net.query(L.QUERY_CHANNEL, channel_id).data[5] == L.STATUS_CLOSED


def test_a_stale_close_is_disputed_in_the_window_and_settled_after_it(net):
    channel_id, consumer, producer = open_channel(net, "stale", window=4)
    stale = H.channel_state(channel_id, 2, 200, consumer, producer)
    latest = H.channel_state(channel_id, 5, 500, consumer, producer)
    closed, early = net.submit(H.channel_dispute(stale, consumer, False), L.ChannelSettle(channel_id))
    assert closed.ok and H.reasons([early]) == ["CHANNEL_TOO_EARLY"]
    deadline = closed.data
    disputed, replayed_stale = net.submit(H.channel_dispute(latest, producer, True),
                                          H.channel_dispute(stale, consumer, False))
    assert disputed.ok and disputed.data == deadline  # the window does not restart
    assert H.reasons([replayed_stale]) == ["DUPLICATE"]
    net.advance_to(deadline)
    (settled,) = net.submit(L.ChannelSettle(channel_id))
    assert settled.ok, settled.detail
    payout = L.channel_payout_txhash(channel_id)
    assert net.query(L.QUERY_UTXO, payout, 0).data[:2] == [producer.account.encode(), 500]
    after = H.channel_state(channel_id, 6, 600, consumer, producer)
    assert H.reasons(net.submit(H.channel_dispute(after, producer, True))) == ["CHANNEL_CLOSED"]


def test_htlcs_are_claimed_before_the_timeout_and_refunded_from_it(net):
    payer, payee = H.Key("h-payer"), H.Key("h-payee")
    coins = mint(net, (payer, 300), (payer, 300), (payer, 300))
    timeout = net.height() + 20  # past the six requests below, one block each (two on CometBFT)
    claimed, refunded, late = (H.htlc_create([c], payer, payee, 300, b"r%d" % i * 16, timeout)
                               for i, c in enumerate(coins))
    results = net.submit(claimed, refunded, late)
    assert H.reasons(results) == ["OK", "OK", "OK"]
    ids = [r.data for r in results]
    wrong, claim, early = net.submit(H.htlc_claim(ids[0], b"w" * 32, payee),
                                     H.htlc_claim(ids[0], b"r0" * 16, payee), H.htlc_refund(ids[1], payer))
    assert H.reasons([wrong, claim, early]) == ["HTLC_WRONG_PREIMAGE", "OK", "HTLC_NOT_EXPIRED"]
    assert net.query(L.QUERY_UTXO, L.htlc_payout_txhash(ids[0]), 0).data[:2] == [payee.account.encode(), 300]
    net.advance_to(timeout)
    refund, too_late = net.submit(H.htlc_refund(ids[1], payer), H.htlc_claim(ids[2], b"r2" * 16, payee))
    assert H.reasons([refund, too_late]) == ["OK", "HTLC_EXPIRED"]
    assert net.query(L.QUERY_HTLC, ids[1]).data[5] == L.STATUS_REFUNDED


def test_market_request_bid_and_commit(net):
    consumer, charger, other = H.Key("m-consumer"), H.Key("m-charger"), H.Key("m-other")
    request = H.market_request(consumer, net.height() + 40, region="AT-9999")
    bid = H.market_bid(consumer, charger, 290)
    better = H.market_bid(consumer, charger, 280, seq=2)
    results = net.submit(request, bid, better, H.market_bid(consumer, charger, 270, seq=2))
    assert H.reasons(results) == ["OK", "OK", "OK", "MARKET_STALE_BID"]
    region = net.query(L.QUERY_MARKET_REGION, L.market_region_key("AT-9999"))
    assert [row[0] for row in region.data] == [consumer.pubkey]
    committed, late = net.submit(H.market_commit(consumer, better.digest()), H.market_bid(consumer, other, 250))
    assert committed.ok and H.reasons([late]) == ["MARKET_CLOSED"]
    row = net.query(L.QUERY_MARKET, consumer.pubkey).data
    assert row[6] == L.STATUS_COMMITTED and row[7] == better.digest()
    assert net.query(L.QUERY_MARKET_REGION, L.market_region_key("AT-9999")).data == []
