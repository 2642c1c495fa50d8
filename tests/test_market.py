"""The market (Unterweger et al.: exploration, bidding, evaluation) between firmware/market.py
and the real ledger state machine on SQLite: a whole round, the region listing, bad input
refused without a state change, the consumer's position kept off the ledger, and the same
bytes and choices from the real MicroPython."""
import json
import math

import pytest

import ledger_helpers as H
from plugpay.firmware import market as M
from plugpay.protocol import codec, signing, topics
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256
from plugpay.tools import micropython

REGION = "AT-Salzburg"
HOME = (47812000, 13040000)  # the consumer's private position, micro-degrees
CITY, HIGHWAY, NEIGHBOUR = (47805000, 13045000), (47850000, 12950000), (47830000, 13060000)


class Producer:
    """A charger or a V2G vehicle: its one-time bidding key, public site, base price per
    kWh, capacity and load in the window (Wh), and the lowest price it goes to."""

    def __init__(self, label, site, base, capacity_wh, load_wh, floor):
        self.secret = H.secret(label)
        self.site, self.base, self.capacity, self.load, self.floor = site, base, capacity_wh, load_wh, floor
        self.sent = None  # the bytes of my latest bid

    def bid(self, request, seq=1):
        price = M.quote(self.base, request.energy_wh, self.capacity, self.load)
        self.sent = M.bid(self.secret, request.request_key, self.site, seq, price)
        return self.sent

    def update(self, view):
        new = M.maybe_update(self.secret, self.sent, view.bids, self.floor)
        if new is not None:
            self.sent = new
        return new


@pytest.fixture
def ledger(tmp_path):
    return H.open_ledger(tmp_path / "ledger.db")


def submit(ledger, height, *raws):
    return H.run(ledger, height, *raws)


def open_requests(ledger, region=REGION, page=0):
    q = M.region_query(region, page)
    return M.read_open_requests(ledger.query(q), q)


def view(ledger, request_key):
    q = M.market_query(request_key)
    return M.read_market(ledger.query(q), q)


def state(ledger):
    return ledger.state_digest(), ledger.snapshot()


def post_request(ledger, label, height=1, deadline=5, region=REGION, energy_wh=20000):
    secret = H.secret(label)
    raw = M.request(secret, region, (600, 660), energy_wh, deadline)
    (res,) = submit(ledger, height, raw)
    assert res.ok, res.detail
    return secret, res.data


def test_a_whole_round(ledger, tmp_path):
    sent = []
    consumer, request_key = post_request(ledger, "consumer request", height=1, deadline=5)
    sent.append(M.request(consumer, REGION, (600, 660), 20000, 5))
    city = Producer("city", CITY, 300, 100000, 50000, 240)  # 0.9 km away, half booked
    highway = Producer("highway", HIGHWAY, 250, 200000, 0, 250)  # 8 km away, idle
    neighbour = Producer("neighbour", NEIGHBOUR, 280, 40000, 0, 300)  # a V2G car 2.4 km away

    # Exploration: the producers find the request in their region.
    (listed,) = open_requests(ledger)
    assert (listed.request_key, listed.energy_wh, listed.bid_deadline, listed.height) == (request_key, 20000, 5, 1)
    assert open_requests(ledger, "AT-Wien") == []

    # Bidding: each prices it with its load and bids from its site.
    bids = [p.bid(listed) for p in (city, highway, neighbour)]
    assert [L.MarketBid.decode(b).unit_price for b in bids] == [447, 252, 350]
    assert all(r.ok for r in submit(ledger, 2, *bids))
    sent += bids
    # Seeing the others: the city charger undercuts, then the highway one goes to its floor.
    update = city.update(view(ledger, request_key))
    assert L.MarketBid.decode(update).unit_price == 251 and L.MarketBid.decode(update).seq == 2
    assert neighbour.update(view(ledger, request_key)) is None  # 251 is below its floor
    assert submit(ledger, 3, update)[0].ok
    update = highway.update(view(ledger, request_key))
    assert L.MarketBid.decode(update).unit_price == 250
    assert submit(ledger, 4, update)[0].ok
    assert M.maybe_update(city.secret, city.sent, view(ledger, request_key).bids, city.floor)  # it could go on...
    sent += [city.sent, highway.sent]

    # The bid window closes at the deadline: late bids are refused, the listing drops it.
    late = M.bid(H.secret("late"), request_key, CITY, 1, 1)
    assert H.reasons(submit(ledger, 5, late)) == ["MARKET_CLOSED"]
    assert open_requests(ledger) == []

    # Evaluation: near and a little dearer beats far and a little cheaper; on price alone not.
    seen = view(ledger, request_key)
    assert seen.status == L.STATUS_OPEN and seen.bid_count == 3
    assert [row.site() for row in seen.bids] == [p.site for p in sorted(
        (city, highway, neighbour), key=lambda p: L.MarketBid.decode(p.sent).bidder_key)]
    chosen = M.evaluate(seen.bids, HOME)
    assert chosen.digest == sha256(city.sent) and chosen.unit_price == 251
    assert M.evaluate(seen.bids, HOME, M.markup(0)).digest == sha256(highway.sent)
    commit = M.commit(consumer, request_key, chosen.digest)
    assert submit(ledger, 6, commit)[0].ok
    sent.append(commit)

    # The winner recognises the commitment; both derive the same link session.
    after = view(ledger, request_key)
    assert after.status == L.STATUS_COMMITTED
    assert [M.is_chosen(after, p.sent) for p in (city, highway, neighbour)] == [True, False, False]
    consumer_side = M.session_id(consumer, chosen.bidder_key, request_key, chosen.digest)
    producer_side = M.session_id(city.secret, request_key, request_key, sha256(city.sent))
    assert consumer_side == producer_side and len(consumer_side) == 16
    # What the board shows is not enough: a third key gets another session.
    assert M.session_id(signing.new_secret(), request_key, request_key, chosen.digest) != consumer_side
    to_responder, _ = topics.link_topics(consumer_side)
    assert request_key.hex() not in to_responder and L.MarketBid.decode(city.sent).bidder_key.hex() not in to_responder

    # The consumer's position is nowhere: not in what it sent, not in the state, not on disk.
    ledger.conn.commit()
    stored = ledger.snapshot() + (tmp_path / "ledger.db").read_bytes()
    for value in HOME:
        for encoding in (codec.dumps(value), value.to_bytes(4, "big"), value.to_bytes(4, "little"),
                         str(value).encode()):
            assert encoding not in stored and not any(encoding in raw for raw in sent)


def test_region_listing_pages_oldest_first_and_forgets_closed_requests(ledger):
    keys, secrets = [], {}
    for height in (1, 2, 3):
        ops = []
        for i in range(24):
            secret = H.secret("req %d %d" % (height, i))
            ops.append(M.request(secret, REGION, (0, 10), 1000, 50 + i))
            secrets[L.MarketRequest.decode(ops[-1]).request_key] = secret
        ops.append(M.request(H.secret("elsewhere %d" % height), "AT-Wien", (0, 10), 1000, 50))
        assert all(r.ok for r in submit(ledger, height, *ops))
        keys += sorted(L.MarketRequest.decode(op).request_key for op in ops[:-1])
    pages = [open_requests(ledger, page=p) for p in (0, 1, 2)]
    assert [len(p) for p in pages] == [L.MARKET_PAGE_ROWS, L.MARKET_PAGE_ROWS, 72 - 2 * L.MARKET_PAGE_ROWS]
    listed = [row for page in pages for row in page]
    assert [row.request_key for row in listed] == keys  # by height, then by key
    assert [row.height for row in listed] == [1] * 24 + [2] * 24 + [3] * 24
    assert len(open_requests(ledger, "AT-Wien")) == 3

    # A commit before the deadline takes the request off the list; so does the deadline.
    first = listed[0].request_key
    bid = M.bid(H.secret("bidder"), first, CITY, 1, 300)
    assert submit(ledger, 4, bid)[0].ok
    assert submit(ledger, 4, M.commit(secrets[first], first, sha256(bid)))[0].ok
    assert first not in [row.request_key for row in open_requests(ledger)]
    submit(ledger, 100)  # an empty block past every deadline
    assert open_requests(ledger) == [] and open_requests(ledger, "AT-Wien") == []
    assert view(ledger, listed[1].request_key).status == L.STATUS_OPEN  # the request itself stays


def test_page_past_the_end_and_bad_queries_are_refused_with_reasons(ledger):
    post_request(ledger, "only")
    before = state(ledger)
    past = L.Result.decode(ledger.query(M.region_query(REGION, 1)))
    assert L.reason_name(past.reason) == "NOT_FOUND" and "page 1" in past.detail
    assert M.read_open_requests(ledger.query(M.region_query(REGION, 1)), M.region_query(REGION, 1)) == []
    too_far = L.Query(L.QUERY_MARKET_REGION, L.market_region_key(REGION), 1).encode()[:-1] + bytes([0x10])
    refused = L.Result.decode(ledger.query(too_far))
    assert L.reason_name(refused.reason) == "MALFORMED" and "index" in refused.detail
    assert H.query(ledger, L.QUERY_MARKET_REGION, L.market_region_key("nowhere")).data == []
    assert state(ledger) == before


def test_bad_market_input_is_refused_and_changes_nothing(ledger):
    consumer, request_key = post_request(ledger, "consumer", deadline=5)
    honest = M.bid(H.secret("p1"), request_key, CITY, 1, 300)
    assert submit(ledger, 2, honest)[0].ok
    before = state(ledger)
    off_the_map = codec.loads(M.bid(H.secret("p2"), request_key, CITY, 1, 300))
    off_the_map[4] = 90000001
    moved = codec.loads(M.bid(H.secret("p2"), request_key, CITY, 1, 300))
    moved[4] += 1  # another site under the same signature
    stale = M.bid(H.secret("p1"), request_key, CITY, 1, 200)
    wrong_key = M.commit(H.secret("p1"), request_key, sha256(honest))
    cases = [
        (codec.dumps(off_the_map), "MALFORMED"),
        (honest[:-1], "MALFORMED"),
        (b"\x87\x18\x19\x01", "MALFORMED"),
        (codec.dumps(moved), "MARKET_BAD_SIGNATURE"),
        (stale, "MARKET_STALE_BID"),
        (wrong_key, "MARKET_BAD_SIGNATURE"),
        (M.commit(consumer, request_key, sha256(b"no such bid")), "MARKET_UNKNOWN_BID"),
        (M.request(consumer, REGION, (600, 660), 20000, 9), "MARKET_EXISTS"),
    ]
    for raw, reason in cases:
        assert H.reasons(submit(ledger, 2, raw)) == [reason], reason
        assert state(ledger) == before, reason
    submit(ledger, 5)  # the deadline block: bidding is over
    closed = state(ledger)
    assert H.reasons(submit(ledger, 5, M.bid(H.secret("p3"), request_key, CITY, 1, 100))) == ["MARKET_CLOSED"]
    assert H.reasons(submit(ledger, 6, M.bid(H.secret("p1"), request_key, CITY, 2, 100))) == ["MARKET_CLOSED"]
    assert state(ledger) == closed
    assert submit(ledger, 6, M.commit(consumer, request_key, sha256(honest)))[0].ok


def test_two_ledgers_agree_and_a_snapshot_carries_the_listing(tmp_path):
    blocks = [(1, [M.request(H.secret("r%d" % i), REGION, (0, 10), 1000, 3 + i) for i in range(4)]), (2, []), (4, [])]
    one, two = H.open_ledger(tmp_path / "one.db"), H.open_ledger(tmp_path / "two.db")
    for height, ops in blocks[:2]:
        assert submit(one, height, *ops) == submit(two, height, *ops)
    fresh = H.open_ledger(tmp_path / "fresh.db")
    fresh.restore(one.snapshot())
    fresh.conn.commit()
    for ledger in (one, two, fresh):
        submit(ledger, 4)
    assert one.state_digest() == two.state_digest() == fresh.state_digest()
    assert len(open_requests(fresh)) == 2  # deadlines 5 and 6 are still ahead
    digest = one.state_digest()
    one.reload()
    assert one.state_digest() == digest


# -- the firmware's pure parts ----------------------------------------------------------------

def haversine_m(a, b):
    la1, lo1, la2, lo2 = (math.radians(v / 1e6) for v in (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


@pytest.mark.parametrize("a, b", [
    (HOME, CITY), (HOME, HIGHWAY), (HOME, NEIGHBOUR), ((60000000, 10000000), (60500000, 11000000)),
    ((-33900000, 151200000), (-34100000, 150900000)), ((0, 179900000), (0, -179900000)),
])
def test_distance_is_within_a_tenth_of_a_percent_of_the_great_circle(a, b):
    assert abs(M.distance_m(a, b) - haversine_m(a, b)) <= 1 + haversine_m(a, b) / 1000
    assert M.distance_m(a, b) == M.distance_m(b, a) and M.distance_m(a, a) == 0


def row(price, site, digest_byte):
    return M.BidRow(bytes([2]) + bytes([digest_byte]) * 32, 1, price, bytes([digest_byte]) * 32, 1, site[0], site[1])


def test_evaluate_weighs_distance_against_price_and_breaks_ties_by_digest():
    near, far = row(260, CITY, 1), row(250, HIGHWAY, 2)
    assert M.evaluate([far, near], HOME) is near and M.evaluate([near, far], HOME, M.markup(0)) is far
    twins = [row(250, CITY, 9), row(250, CITY, 3)]
    assert M.evaluate(twins, HOME) is twins[1] and M.evaluate(twins[::-1], HOME) is twins[1]
    assert M.evaluate([], HOME) is None
    with pytest.raises(ValueError):
        M.evaluate([near], (91000000, 0))


def test_quote_rises_with_energy_and_load_and_refuses_what_does_not_fit():
    assert M.quote(300, 1000, 100000, 0) == 300
    assert M.quote(300, 50000, 100000, 0) == 375 < M.quote(300, 50000, 100000, 25000) == 468
    assert M.quote(300, 100000, 100000, 0) == 600
    assert M.quote(300, 1, 100000, 100000) is None and M.quote(300, 0, 100000, 0) is None


def test_maybe_update_undercuts_only_down_to_the_floor():
    secret, key = H.secret("producer"), H.Key("request").pubkey
    mine = M.bid(secret, key, CITY, 4, 300)
    me = L.MarketBid.decode(mine).bidder_key
    own = M.BidRow(me, 4, 300, sha256(mine), 1, CITY[0], CITY[1])
    assert M.maybe_update(secret, mine, [own], 0) is None  # nobody else
    assert M.maybe_update(secret, mine, [own, row(301, HIGHWAY, 5)], 0) is None  # nobody cheaper
    new = L.MarketBid.decode(M.maybe_update(secret, mine, [own, row(300, HIGHWAY, 5), row(280, NEIGHBOUR, 6)], 0))
    assert (new.unit_price, new.seq, new.bidder_key, (new.lat_e6, new.lon_e6)) == (279, 5, me, CITY)
    assert M.maybe_update(secret, mine, [row(280, HIGHWAY, 5)], 279) is not None
    assert M.maybe_update(secret, mine, [row(280, HIGHWAY, 5)], 280) is None


def test_answers_that_do_not_fit_are_refused():
    q = M.market_query(H.Key("request").pubkey)
    other = M.market_query(H.Key("other").pubkey)
    good = ["AT", 0, 10, 0, 1000, 5, L.STATUS_OPEN, b"", 0, 1, []]

    def answer(data, query=q, ok=True):
        reason = L.OK if ok else L.NOT_FOUND
        return L.Result(sha256(query), ok, reason, "", data).encode()

    assert M.read_market(answer(good), q).region == "AT"
    for data, query, ok in [
        (good, other, True),  # the answer to another query
        (None, q, False),  # no such request
        (good[:-1], q, True),
        (good[:6] + [L.STATUS_COMMITTED, b""] + good[8:], q, True),  # committed to nothing
        (good[:8] + [1] + good[9:], q, True),  # counts a bid it does not list
        (good[:10] + [[[b"\x02" * 33, 1, 1, b"d" * 32, 1, 91000000, 0]]], q, True),
    ]:
        with pytest.raises(M.MarketError):
            M.read_market(answer(data, query, ok), q)
    with pytest.raises(M.MarketError):
        M.read_market(b"\xff", q)
    rq = M.region_query(REGION)
    with pytest.raises(M.MarketError):
        M.read_open_requests(L.Result(sha256(rq), True, L.OK, "", [[b"x"]]).encode(), rq)
    key = signing.public_key(signing.new_secret())
    with pytest.raises(ValueError):
        M.session_id(signing.new_secret(), key, b"\x02" * 32, b"d" * 32)
    with pytest.raises(ValueError):
        M.session_id(signing.new_secret(), b"\x02" + b"\xff" * 32, key, b"d" * 32)  # not on the curve


DEVICE = """
import json
from plugpay.firmware import market as M
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256
c = json.loads(CASE)
sites = [tuple(s) for s in c["sites"]]
req = M.request(sha256(b"consumer"), c["region"], (600, 660), 20000, 5)
key = L.MarketRequest.decode(req).request_key
bids = [M.bid(sha256(b"producer %d" % i), key, site, 1, 250 + 7 * i) for i, site in enumerate(sites)]
rows = [M.BidRow(L.MarketBid.decode(b).bidder_key, 1, 250 + 7 * i, sha256(b), 2, s[0], s[1])
        for i, (b, s) in enumerate(zip(bids, sites))]
home = tuple(c["home"])
chosen = M.evaluate(rows, home)
out = {"ops": [x.hex() for x in [req] + bids + [M.commit(sha256(b"consumer"), key, chosen.digest)]],
       "distances": [M.distance_m(home, s) for s in sites], "chosen": chosen.digest.hex(),
       "session": M.session_id(sha256(b"consumer"), chosen.bidder_key, key, chosen.digest).hex(),
       "query": M.region_query(c["region"], 3).hex()}
print("@@ " + json.dumps(out))
"""


def test_micropython_builds_the_same_operations_and_makes_the_same_choice():
    case = {"region": "AT-Salzburg \u00d6st", "home": list(HOME),
            "sites": [list(CITY), list(HIGHWAY), list(NEIGHBOUR), [-33900000, -151200000]]}
    got = micropython.run("CASE = %r\n" % json.dumps(case) + DEVICE, timeout=240).check().records[-1]
    sites = [tuple(s) for s in case["sites"]]
    req = M.request(sha256(b"consumer"), case["region"], (600, 660), 20000, 5)
    key = L.MarketRequest.decode(req).request_key
    bids = [M.bid(sha256(b"producer %d" % i), key, site, 1, 250 + 7 * i) for i, site in enumerate(sites)]
    rows = [M.BidRow(L.MarketBid.decode(b).bidder_key, 1, 250 + 7 * i, sha256(b), 2, s[0], s[1])
            for i, (b, s) in enumerate(zip(bids, sites))]
    chosen = M.evaluate(rows, HOME)
    ops = [req] + bids + [M.commit(sha256(b"consumer"), key, chosen.digest)]
    assert got["ops"] == [x.hex() for x in ops]
    assert got["distances"] == [M.distance_m(HOME, s) for s in sites]
    assert got["chosen"] == chosen.digest.hex()
    assert got["session"] == M.session_id(sha256(b"consumer"), chosen.bidder_key, key, chosen.digest).hex()
    assert got["query"] == M.region_query(case["region"], 3).hex()
