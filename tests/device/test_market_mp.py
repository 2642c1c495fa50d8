"""The market's device side under the real MicroPython: sites with negative micro-degrees on
the wire, integer distances, evaluation, pricing, bid updates, reading the ledger's answers
and refusing the ones that do not fit. (tests/test_market.py runs the same code against the
real ledger and checks that CPython and MicroPython build the same bytes.)"""
import mpyunit
from plugpay.firmware import market as M
from plugpay.protocol import codec, signing
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

HOME = (47812000, 13040000)
CITY, HIGHWAY = (47805000, 13045000), (47850000, 12950000)
REQUEST_KEY = bytes([2]) + bytes([7]) * 32


def row(price, site, n):
    return M.BidRow(bytes([2]) + bytes([n]) * 32, 1, price, bytes([n]) * 32, 1, site[0], site[1])


def answer(query, data, ok=True):
    return L.Result(sha256(query), ok, L.OK if ok else L.NOT_FOUND, "", data).encode()


def test_a_bid_from_the_southern_and_western_hemispheres_round_trips():
    mpyunit.step("start")
    raw = M.bid(sha256(b"producer"), REQUEST_KEY, (-33900000, -151200000), 1, 300)
    bid = L.MarketBid.decode(raw)
    assert (bid.lat_e6, bid.lon_e6, bid.unit_price, bid.seq) == (-33900000, -151200000, 300, 1)
    assert L.decode_request(raw) == bid
    value = codec.loads(raw)
    for field, bad in ((4, 90000001), (5, -180000001), (4, True), (5, "13")):
        value[field] = bad
        try:
            L.MarketBid.decode(codec.dumps(value))
            raise AssertionError("accepted site field %r" % (bad,))
        except DecodeError:
            pass
        value = codec.loads(raw)
    mpyunit.step("signed")


def test_distances_are_integers_symmetric_and_take_the_short_way_round():
    assert M.distance_m(HOME, CITY) == 863 and M.distance_m(HOME, HIGHWAY) == 7936
    assert M.distance_m((0, 179900000), (0, -179900000)) == 22239
    assert M.distance_m(CITY, HOME) == M.distance_m(HOME, CITY) and M.distance_m(HOME, HOME) == 0
    try:
        M.distance_m(HOME, (91000000, 0))
        raise AssertionError("measured to a latitude past the pole")
    except ValueError:
        pass


def test_evaluate_weighs_distance_and_breaks_ties_the_same_way():
    near, far = row(260, CITY, 1), row(250, HIGHWAY, 2)
    assert M.evaluate([far, near], HOME) is near
    assert M.evaluate([near, far], HOME, M.markup(0)) is far
    twins = [row(250, CITY, 9), row(250, CITY, 3)]
    assert M.evaluate(twins, HOME) is twins[1] and M.evaluate([twins[1], twins[0]], HOME) is twins[1]
    assert M.evaluate([], HOME) is None


def test_pricing_and_undercutting():
    assert M.quote(300, 50000, 100000, 25000) == 468 and M.quote(300, 1, 100, 100) is None
    secret = sha256(b"producer")
    mine = M.bid(secret, REQUEST_KEY, CITY, 4, 300)
    assert M.maybe_update(secret, mine, [row(301, HIGHWAY, 5)], 0) is None
    assert M.maybe_update(secret, mine, [row(280, HIGHWAY, 5)], 280) is None
    new = L.MarketBid.decode(M.maybe_update(secret, mine, [row(280, HIGHWAY, 5)], 0))
    assert (new.unit_price, new.seq, (new.lat_e6, new.lon_e6)) == (279, 5, CITY)


def test_reading_answers_and_the_commitment():
    q = M.market_query(REQUEST_KEY)
    mine = M.bid(sha256(b"producer"), REQUEST_KEY, CITY, 1, 300)
    bids = [[b"\x02" * 33, 1, 300, sha256(mine), 2, CITY[0], CITY[1]]]
    data = ["AT", 0, 10, 0, 1000, 5, L.STATUS_COMMITTED, sha256(mine), 1, 1, bids]
    view = M.read_market(answer(q, data), q)
    assert M.is_chosen(view, mine) and view.bids[0].site() == CITY
    assert not M.is_chosen(view, M.bid(sha256(b"producer"), REQUEST_KEY, CITY, 2, 299))
    # Both ends derive the session id, each from its own secret and the other's key (ECDH).
    consumer, producer = sha256(b"consumer"), sha256(b"producer")
    request_key = signing.public_key(consumer)
    sid = M.session_id(producer, request_key, request_key, sha256(mine))
    assert len(sid) == 16 and sid == M.session_id(consumer, signing.public_key(producer), request_key, view.chosen)
    for bad in (data[:6] + [L.STATUS_OPEN] + data[7:], data[:8] + [2] + data[9:], data[:-1]):
        try:
            M.read_market(answer(q, bad), q)
            raise AssertionError("read a malformed market answer")
        except M.MarketError:
            pass
    try:
        M.read_market(answer(M.market_query(b"\x03" * 33), data), q)
        raise AssertionError("took the answer to another query")
    except M.MarketError:
        pass
    rq = M.region_query("AT-Salzburg", 1)
    assert M.read_open_requests(answer(rq, None, ok=False), rq) == []
    listed = M.read_open_requests(answer(rq, [[REQUEST_KEY, 600, 660, 0, 20000, 5, 1]]), rq)
    assert listed[0].request_key == REQUEST_KEY and listed[0].bid_deadline == 5
