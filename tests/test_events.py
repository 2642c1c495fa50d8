"""The ledger's event log (``host.events``) and what is open (``host.ledger_view``), from
blocks the real ledger state machine executed on SQLite: every kind of request, each
event's id the one the ledger confirms the request under, refusals with their reason."""
import time

import pytest

from plugpay.host import events as E
from plugpay.host.ledger_view import LedgerView
from plugpay.protocol import ledger_ops as L

import ledger_helpers as H
from ledger_story import Story

TS = 1_790_000_000 * 10 ** 9 + 3  # a whole second plus a count, as clients stamp requests


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(story, ledger, [(height, events, view snapshot after the block)])."""
    story = Story(1)
    ledger = H.open_ledger(tmp_path_factory.mktemp("events") / "ledger.sqlite")
    view, blocks = LedgerView(), []
    for height, step in enumerate(story.encoded(), start=1):
        requests = [("client-%d" % i, TS + i, raw) for i, raw in enumerate(step)]
        results = ledger.execute(height, step)
        ledger.conn.commit()
        events = E.block_events(height, requests, {(c, ts): r for (c, ts, _), r in zip(requests, results)})
        view.apply(height, events)
        blocks.append((height, events, view.snapshot()))
    return story, ledger, blocks


def all_events(chain):
    return [e for _, events, _ in chain[2] for e in events]


def test_every_applied_request_is_found_by_the_ledger_under_its_event_id(chain):
    story, ledger, _ = chain
    events = all_events(chain)
    assert sorted(set(e["kind"] for e in events)) == sorted(
        ["faucet", "transaction", "redeem", "channel_open", "channel_dispute", "channel_settle", "channel_close",
         "htlc_create", "htlc_claim", "htlc_refund", "market_request", "market_bid", "market_commit",
         "market_withdraw", "unknown"])
    applied = [e for e in events if e["ok"]]
    assert len(applied) == len(events) - 2  # the double spend and the garbage
    for e in applied:  # what `plugpay ledger tx ID` looks up
        found = H.query(ledger, L.QUERY_TX, bytes.fromhex(e["id"]))
        assert found.ok and found.data[0] == e["height"] and L.decode_request(found.data[2]).NAME == e["kind"], e
    by_kind = {}
    for e in events:
        by_kind.setdefault(e["kind"], e)  # the first of each kind
    assert by_kind["redeem"]["id"] == story.redeem.redeem_id().hex()  # was the digest of the bytes before
    assert by_kind["channel_open"]["id"] == by_kind["channel_open"]["channel"] == story.ch1.hex()
    assert by_kind["htlc_create"]["id"] == by_kind["htlc_create"]["htlc"]


def test_events_carry_what_the_public_ledger_shows(chain):
    story, _, blocks = chain
    by_kind = {}
    for e in all_events(chain):
        by_kind.setdefault(e["kind"], []).append(e)
    opened = by_kind["channel_open"][0]
    assert (opened["collateral"], opened["installments"], opened["first_installment"], opened["window"]) == \
        (1000, 10, 100, 1)
    assert opened["consumer"] == {"address": story.k["con1"].account.address().hex(), "ra_epoch": H.RA_EPOCH}
    dispute = by_kind["channel_dispute"][0]
    assert (dispute["by"], dispute["seq"], dispute["paid_to_producer"], dispute["energy_wh"]) == \
        ("consumer", 2, 200, 400)
    assert dispute["deadline"] == dispute["height"] + 1  # the window of one block
    bid = by_kind["market_bid"][0]
    assert (bid["unit_price"], bid["site"], bid["bid"]) == (310, [47.8095, 13.055], story.bid1.digest().hex())
    assert by_kind["market_request"][0]["region"] == "AT-5020" and by_kind["market_request"][0]["energy_wh"] == 12000
    assert [o["amount"] for o in by_kind["faucet"][0]["outputs"]] == [1000] * 8
    assert by_kind["htlc_create"][0]["timeout"] == 1001
    double = [e for e in by_kind["transaction"] if not e["ok"]][0]
    assert double["result"] == "DOUBLE_SPEND" and double["detail"]
    garbage = by_kind["unknown"][0]
    assert not garbage["ok"] and garbage["result"] in ("MALFORMED", "UNKNOWN_OP")
    assert {e["time"] for e in all_events(chain)} == {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_790_000_000))}


def test_a_line_per_event_names_its_id_and_why_it_was_refused(chain):
    story, _, _ = chain
    lines = {e["id"]: E.event_line(e) for e in all_events(chain)}
    settle = lines[[e["id"] for e in all_events(chain) if e["kind"] == "channel_settle"][0]]
    assert settle.startswith("#5 2026-09-21T") and "channel_settle" in settle and story.ch1.hex()[:16] in settle
    double = lines[story.double.txhash().hex()]
    assert "REFUSED DOUBLE_SPEND: " in double and double.startswith("#9 ")
    assert "channel %s: collateral 1000 in 10 installments, dispute window 1 blocks" % story.ch1.hex()[:16] in \
        lines[story.ch1.hex()]
    assert "REFUSED" not in lines[story.pay.txhash().hex()]


def test_a_replayed_request_the_block_did_not_run_says_so():
    [e] = E.block_events(3, [("c", TS, H.market_withdraw(H.Key("x")).encode())], {})
    assert (e["kind"], e["ok"], e["result"]) == ("market_withdraw", False, None)
    assert "not run in this block" in E.event_line(e)


def test_the_view_of_what_is_open_follows_the_chain(chain):
    story, _, blocks = chain
    views = {height: view for height, _, view in blocks}
    assert [c["channel"] for c in views[3]["channels"]] == [story.ch1.hex()]
    assert views[4]["channels"][0]["status"] == "closing" and views[4]["channels"][0]["deadline"] == 5
    assert views[5]["channel_count"] == 0  # settled
    assert views[3]["market"][0]["bids"] == [] and views[5]["market"][0]["bids"][0]["unit_price"] == 310
    assert views[7]["market_count"] == 1  # req1 committed, req2 still open
    assert views[8]["market_count"] == 0  # req2 withdrawn
    assert views[3]["htlc_count"] == 1 and views[9]["htlc_count"] == 1 and views[4]["locked_in_htlcs"] == 2000
    channels, htlcs, market = story.open_at_end()
    last = views[len(blocks)]
    assert {c["channel"] for c in last["channels"]} == channels and last["locked_in_channels"] == 800
    assert {h["htlc"] for h in last["htlcs"]} == htlcs
    assert {m["request"] for m in last["market"]} == market and last["market"][0]["bids"][0]["unit_price"] == 290


def test_a_request_whose_bidding_ended_leaves_the_view():
    view = LedgerView()
    request = H.market_request(H.Key("late"), 5)
    view.apply(3, E.block_events(3, [("c", TS, request.encode())], {("c", TS): _ok(request)}))
    assert view.snapshot()["market_count"] == 1
    assert view.apply(4, []) is False and view.snapshot()["market_count"] == 1
    assert view.apply(5, []) is True and view.snapshot()["market_count"] == 0  # bids end at height 5


def _ok(op):
    return L.Result(bytes(32), True, L.OK, "", None).encode()
