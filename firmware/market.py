"""The market of Unterweger et al. on the ledger's board: exploration, bidding, evaluation.

Sans-IO: the functions build signed ledger operations and queries as bytes and read the
ledger's answers; the caller sends and fetches them through the gateway.

* Exploration: the consumer posts a ``MarketRequest`` under a fresh one-time key
  (``request``) naming a coarse region, a time window and the energy. Its own position
  never leaves the device: it is an argument of ``evaluate`` and nothing else.
* Bidding: a producer pages through the open requests of its region (``region_query``,
  ``read_open_requests``), prices one with ``quote`` (its f_i(T, e)) and bids with
  its public site (``bid``). Seeing the other bids (``market_query``, ``read_market``) it
  may undercut them (``maybe_update``: f_i(T, e, U b_j)).
* Evaluation: once the bid deadline has passed the consumer picks argmin g(d_i, b_i')
  (``evaluate``) and commits to that bid (``commit``). The winner sees its bid chosen
  (``is_chosen``) and both derive the link's session id from the commitment and an ECDH
  secret of the request key and the bidder key (``session_id``): the link topics name
  neither side, and nobody else reading the board can compute them.

Prices are per kWh in the smallest currency unit, as in the session terms. All the
arithmetic is in integers, so a choice comes out the same on every platform (an ESP32's
single-precision floats would break near-ties differently from CPython's doubles).
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import const, sha256
from plugpay.protocol.schema import U64, ArrayOf, Bytes, Nested, Record, Text, UInt
from plugpay.protocol.structures import HASH

SESSION_DOMAIN = b"plugpay/market-session/v2"
# Default weight of distance in g: each km marks the price up by 2 % (in parts per million).
KM_MARKUP_PPM = const(20000)
# Metres per micro-degree of arc, times 1e8: 6371008.8 m mean Earth radius * pi / 180 / 1e6.
_M_PER_UDEG_E8 = const(11119508)
_SCALE = 10 ** 12  # fixed point of the cosine
_PI_SCALED = 3141592653590  # pi * _SCALE


class MarketError(ValueError):
    """A ledger answer this side cannot use; the text says why."""


# -- the ledger's answers ---------------------------------------------------------------------

class BidRow(Record):
    """One current bid as ``QUERY_MARKET`` lists it."""

    NAME = "market_bid_row"
    FIELDS = (
        ("bidder_key", L.PUBKEY),
        ("seq", U64),
        ("unit_price", U64),
        ("digest", HASH),
        ("height", U64),
        ("lat_e6", L.LATITUDE_E6),
        ("lon_e6", L.LONGITUDE_E6),
    )

    def site(self):
        return self.lat_e6, self.lon_e6


class MarketView(Record):
    """A request and its bids: the data of a ``QUERY_MARKET`` answer."""

    NAME = "market_view"
    FIELDS = (
        ("region", Text(32)),
        ("window_start", U64),
        ("window_end", U64),
        ("window_unit", UInt(L.WINDOW_UNIX_MINUTES)),
        ("energy_wh", U64),
        ("bid_deadline", U64),
        ("status", UInt(L.STATUS_WITHDRAWN)),
        ("chosen", Bytes(min=0, max=32)),
        ("bid_count", UInt(L.MAX_BIDS)),
        ("height", U64),
        ("bids", ArrayOf(Nested(BidRow), L.MAX_BIDS)),
    )

    def validate(self, path):
        if self.status not in (L.STATUS_OPEN, L.STATUS_COMMITTED, L.STATUS_WITHDRAWN):
            raise DecodeError(path + ".status", "%d is no market status" % self.status)
        if len(self.chosen) != (32 if self.status == L.STATUS_COMMITTED else 0):
            raise DecodeError(path + ".chosen", "a committed request names one bid digest, an open one none")
        if self.bid_count != len(self.bids):
            raise DecodeError(path + ".bid_count", "%d bids listed, %d counted" % (len(self.bids), self.bid_count))


class OpenRequest(Record):
    """One request that still takes bids, as ``QUERY_MARKET_REGION`` lists it."""

    NAME = "open_request"
    FIELDS = (
        ("request_key", L.PUBKEY),
        ("window_start", U64),
        ("window_end", U64),
        ("window_unit", UInt(L.WINDOW_UNIX_MINUTES)),
        ("energy_wh", U64),
        ("bid_deadline", U64),
        ("height", U64),
    )


def _result(data, query):
    """The ``Result`` answering ``query`` (bytes), or ``MarketError``."""
    try:
        result = L.Result.decode(data)
    except DecodeError as e:
        raise MarketError("ledger result: %s" % e)
    if result.request_digest != sha256(query):
        raise MarketError("the result does not answer this query")
    return result


HEIGHT_QUERY = L.Query(L.QUERY_HEIGHT, bytes(32), 0).encode()  # the same bytes from every device


def read_height(data):
    """The block height in the gateway's answer to ``HEIGHT_QUERY``: what a bid deadline
    or an HTLC timeout is counted from, without naming any earlier object of one's own."""
    result = _result(data, HEIGHT_QUERY)
    if not result.ok:
        raise MarketError("height query refused: %s %s" % (L.reason_name(result.reason), result.detail))
    data = result.data
    if not isinstance(data, list) or len(data) != 1 or type(data[0]) is not int or data[0] < 0:
        raise MarketError("the height answer is malformed")
    return data[0]


def region_query(region, page=0):
    """The query of page ``page`` of the open requests in ``region``."""
    return L.Query(L.QUERY_MARKET_REGION, L.market_region_key(region), page).encode()


def read_open_requests(data, query):
    """The ``OpenRequest`` rows of the ledger's answer to ``region_query`` bytes ``query``,
    oldest first; ``[]`` past the last page. A full page (``L.MARKET_PAGE_ROWS`` rows)
    means the next page may hold more."""
    result = _result(data, query)
    if result.reason == L.NOT_FOUND:
        return []
    if not result.ok:
        raise MarketError("region query refused: %s %s" % (L.reason_name(result.reason), result.detail))
    listing = ArrayOf(Nested(OpenRequest), L.MARKET_PAGE_ROWS)
    try:
        return listing.check(result.data, "open_requests")
    except DecodeError as e:
        raise MarketError(str(e))


def market_query(request_key):
    """The query of one request and its current bids."""
    return L.Query(L.QUERY_MARKET, request_key, 0).encode()


def read_market(data, query):
    """The ``MarketView`` in the ledger's answer to ``market_query`` bytes ``query``."""
    result = _result(data, query)
    if not result.ok:
        raise MarketError("no market request: %s %s" % (L.reason_name(result.reason), result.detail))
    try:
        return MarketView.from_value(result.data)
    except DecodeError as e:
        raise MarketError(str(e))


# -- consumer -------------------------------------------------------------------------------

def request(secret, region, window, energy_wh, bid_deadline, window_unit=L.WINDOW_HEIGHTS):
    """Exploration: a signed ``MarketRequest`` for ``energy_wh`` in ``window`` (start,
    end) in ``region``, taking bids until block ``bid_deadline``. ``secret`` is a fresh
    one-time key (e.g. the keystore's secret of a new account): its public key is the
    request's id, and it alone can commit."""
    op = L.MarketRequest(signing.public_key(secret), region, window[0], window[1], window_unit, energy_wh,
                         bid_deadline, b"")
    op.sig = signing.sign(secret, op)
    return op.encode()


def markup(ppm_per_km):
    """The decision function g(d, b) = b * (1 + d_km * ppm_per_km / 1e6), scaled by 1e9 to
    stay an integer: a bid's price marked up by the way to its site (time, detour energy),
    a fixed share per km. ``ppm_per_km=0`` decides on price alone."""

    def g(distance_m, unit_price):
        return unit_price * (1000000000 + distance_m * ppm_per_km)

    return g


def _cos_scaled(udeg):
    """cos of an angle in micro-degrees, times ``_SCALE``, by its Taylor series in integers,
    summed until the terms vanish (|angle| <= 90 degrees here)."""
    x = abs(udeg) * _PI_SCALED // 180000000
    x2 = x * x // _SCALE
    total, term, k = _SCALE, _SCALE, 1
    while term:
        term = term * x2 // _SCALE // ((2 * k - 1) * 2 * k)
        total += -term if k & 1 else term
        k += 1
    return total


def _isqrt(n):
    if n < 2:
        return n
    x, y = n, (n + 1) // 2
    while y < x:
        x, y = y, (y + n // y) // 2
    return x


def distance_m(a, b):
    """Metres between two sites ``(lat_e6, lon_e6)``: equirectangular, the longitude
    difference scaled by the cosine of the mean latitude. Within 0.1 % of the great
    circle at the scale of a region (tens of km) and exact integers everywhere."""
    L.LATITUDE_E6.check(a[0], "site.lat_e6")
    L.LATITUDE_E6.check(b[0], "site.lat_e6")
    L.LONGITUDE_E6.check(a[1], "site.lon_e6")
    L.LONGITUDE_E6.check(b[1], "site.lon_e6")
    dlat = abs(b[0] - a[0])  # magnitudes first: rounding then does not depend on direction
    dlon = abs((b[1] - a[1] + 180000000) % 360000000 - 180000000)  # the short way round
    dx = dlon * _cos_scaled((a[0] + b[0]) // 2) // _SCALE
    return _isqrt(dlat * dlat + dx * dx) * _M_PER_UDEG_E8 // 100000000


DEFAULT_G = markup(KM_MARKUP_PPM)


def evaluate(bids, my_position, g=DEFAULT_G):
    """Evaluation: the ``BidRow`` minimising ``g(distance_m, unit_price)`` from the private
    ``my_position`` (lat_e6, lon_e6) to each bid's site, or None without bids. Ties go to
    the lower price, then the nearer site, then the lower bid digest, so the choice is a
    function of the bids alone."""
    best, best_rank = None, None
    for row in bids:
        d = distance_m(my_position, row.site())
        rank = (g(d, row.unit_price), row.unit_price, d, row.digest)
        if best is None or rank < best_rank:
            best, best_rank = row, rank
    return best


def withdraw(secret, request_key):
    """A signed ``MarketWithdraw`` of my open request: no session follows, so producers
    should stop bidding and waiting for a commit."""
    op = L.MarketWithdraw(request_key, b"")
    op.sig = signing.sign(secret, op)
    return op.encode()


def commit(secret, request_key, bid_digest):
    """The ``MarketCommit`` choosing the bid with ``bid_digest``, signed by the request's
    one-time key."""
    op = L.MarketCommit(request_key, bid_digest, b"")
    op.sig = signing.sign(secret, op)
    return op.encode()


# -- producer -------------------------------------------------------------------------------

def quote(base_price, energy_wh, capacity_wh, load_wh):
    """A producer's pricing function f_i(T, e): its base price per kWh, raised by how full
    selling ``energy_wh`` would make it in the window. With u = (load_wh + energy_wh) /
    capacity_wh the price is base * (1 + u**2): nearly flat while the producer is mostly
    idle, doubling at full use (a convex cost, as a peak tariff or a V2G battery's wear
    is). None when the energy does not fit in what is left."""
    used = load_wh + energy_wh
    if energy_wh < 1 or used > capacity_wh:
        return None
    return base_price + base_price * used * used // (capacity_wh * capacity_wh)


def bid(secret, request_key, site, seq, unit_price):
    """Bidding: a signed ``MarketBid`` on the request ``request_key`` at ``unit_price`` per
    kWh from ``site`` (lat_e6, lon_e6), under the producer's one-time key ``secret``
    (one key per request, so bids on two requests are not linkable)."""
    op = L.MarketBid(request_key, signing.public_key(secret), site[0], site[1], unit_price, seq, b"")
    op.sig = signing.sign(secret, op)
    return op.encode()


def maybe_update(secret, my_bid, other_bids, floor, step=1):
    """f_i(T, e, U b_j): after seeing the current bids (``BidRow``s, mine among them or
    not), the bid ``step`` below the cheapest rival when a rival matches or undercuts
    ``my_bid`` (the bytes I sent) and the result stays at or above my ``floor``; else
    None. The update carries ``seq + 1`` so it replaces my bid. Producers compete on
    price only: the consumer's position, and so its weighing of distance, is not theirs
    to know."""
    mine = L.MarketBid.decode(my_bid)
    cheapest = None
    for row in other_bids:
        if row.bidder_key != mine.bidder_key and (cheapest is None or row.unit_price < cheapest):
            cheapest = row.unit_price
    if cheapest is None or cheapest > mine.unit_price or cheapest - step < floor:
        return None
    return bid(secret, mine.request_key, (mine.lat_e6, mine.lon_e6), mine.seq + 1, cheapest - step)


# -- after the commitment ---------------------------------------------------------------------

def is_chosen(view, my_bid):
    """True once the request of ``view`` (a ``MarketView``) is committed to ``my_bid``, the
    bytes of my latest bid (what the ledger's bid digest covers)."""
    return view.status == L.STATUS_COMMITTED and view.chosen == sha256(my_bid)


def session_id(my_secret, peer_key, request_key, bid_digest):
    """The link session id both sides compute from the commitment: 16 bytes of
    SHA-256(domain, ECDH secret, request key, chosen bid digest). The consumer passes its
    request secret and the chosen bidder key, the producer its bid secret and the request
    key. ``topics.link_topics`` builds the link's topics from it: they name neither side,
    and whoever reads the board without one of the two secrets cannot find them (to watch
    or disturb the session). ``SignatureError`` (a ``ValueError``) for a bad key."""
    if len(request_key) != 33 or len(bid_digest) != 32:
        raise ValueError("a request key is 33 bytes and a bid digest 32")
    return sha256(SESSION_DOMAIN + signing.shared_secret(my_secret, peer_key) + request_key + bid_digest)[:16]
