"""The market board: a consumer's request for energy in a region, producers' bids until the
bid deadline height, the consumer's commit to one bid or withdrawal of the request."""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256

from .state import Bid, Listed, MarketRow, Reject

SQL_MAX_INT = (1 << 63) - 1  # a bid deadline beyond this (never reached) is stored as this
_SQL_BIDDING_OVER = ("SELECT region_key, height, request_key, bid_deadline FROM ledger_market_open"
                     " WHERE bid_deadline <= ?")


def create_index(conn):
    """Derived from the table, so outside the digest: finds the requests whose bidding ends."""
    conn.execute("CREATE INDEX IF NOT EXISTS ledger_market_open_deadline ON ledger_market_open (bid_deadline)")


def _listing_key(request_key, region, height, bid_deadline):
    return L.market_region_key(region), height, request_key, min(bid_deadline, SQL_MAX_INT)


def close_bidding(st, height):
    """Take the requests whose bidding is over at ``height`` (the first block that refuses
    their bids) off the region listing; the requests themselves stay. Runs before every
    block's requests."""
    st.market_open.flush()
    for row in st.conn.execute(_SQL_BIDDING_OVER, (min(height, SQL_MAX_INT),)).fetchall():
        st.market_open.delete(tuple(row), Listed())


def market_request(st, op, raw, height):
    st.require_new(sha256(raw))
    if st.market.get((op.request_key,)) is not None:
        raise Reject(L.MARKET_EXISTS, "request key already used")
    if op.bid_deadline <= height:
        raise Reject(L.MARKET_CLOSED, "bid deadline %d is not after height %d" % (op.bid_deadline, height))
    if not st.verify(op.request_key, op, op.sig):
        raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the request key")
    st.market.insert((op.request_key,), MarketRow(
        op.region, op.window_start, op.window_end, op.window_unit, op.energy_wh, op.bid_deadline,
        L.STATUS_OPEN, b"", 0, height))
    st.market_open.insert(_listing_key(op.request_key, op.region, height, op.bid_deadline), Listed())
    st.confirm(sha256(raw), height, op, raw)
    return op.request_key


def _open_request(st, request_key):
    request = st.market.get((request_key,))
    if request is None:
        raise Reject(L.MARKET_UNKNOWN, "no request " + request_key.hex())
    if request.status != L.STATUS_OPEN:
        raise Reject(L.MARKET_CLOSED, "the request is %s" % (
            "withdrawn" if request.status == L.STATUS_WITHDRAWN else "committed"))
    return request


def _unlist(st, request_key, request):
    """A commit or a withdrawal before the deadline ends bidding too."""
    listed = _listing_key(request_key, request.region, request.height, request.bid_deadline)
    if st.market_open.get(listed) is not None:
        st.market_open.delete(listed, Listed())


def market_bid(st, op, raw, height):
    st.require_new(sha256(raw))
    request = _open_request(st, op.request_key)
    if height >= request.bid_deadline:
        raise Reject(L.MARKET_CLOSED, "bidding ended at height %d" % request.bid_deadline)
    key = (op.request_key, op.bidder_key)
    old = st.bids.get(key)
    if old is not None and op.seq <= old.seq:
        raise Reject(L.MARKET_STALE_BID, "seq %d does not beat the bidder's %d" % (op.seq, old.seq))
    if old is None and request.bids >= L.MAX_BIDS:
        raise Reject(L.MARKET_FULL, "the request has %d bids" % L.MAX_BIDS)
    if not st.verify(op.bidder_key, op, op.sig):
        raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the bidder key")
    digest = op.digest()
    bid = Bid(op.seq, op.unit_price, digest, height, op.lat_e6, op.lon_e6)
    if old is None:
        st.bids.insert(key, bid)
        st.market.update((op.request_key,), request, request._replace(bids=request.bids + 1))
    else:
        st.bids.update(key, old, bid)
    st.confirm(sha256(raw), height, op, raw)
    return digest


def market_commit(st, op, raw, height):
    st.require_new(sha256(raw))
    request = _open_request(st, op.request_key)
    if not any(bid.digest == op.bid_digest for _, bid in st.bids.with_prefix(op.request_key)):
        raise Reject(L.MARKET_UNKNOWN_BID, "no current bid has that digest")
    if not st.verify(op.request_key, op, op.sig):
        raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the request key")
    st.market.update((op.request_key,), request, request._replace(status=L.STATUS_COMMITTED, chosen=op.bid_digest))
    _unlist(st, op.request_key, request)
    st.confirm(sha256(raw), height, op, raw)
    return op.bid_digest


def market_withdraw(st, op, raw, height):
    st.require_new(sha256(raw))
    request = _open_request(st, op.request_key)
    if not st.verify(op.request_key, op, op.sig):
        raise Reject(L.MARKET_BAD_SIGNATURE, "not signed by the request key")
    st.market.update((op.request_key,), request, request._replace(status=L.STATUS_WITHDRAWN))
    _unlist(st, op.request_key, request)
    st.confirm(sha256(raw), height, op, raw)
    return op.request_key


def query_market(st, q):
    row = st.market.get((q.key,))
    if row is None:
        return None
    bids = [[key[1]] + list(bid) for key, bid in st.bids.with_prefix(q.key)]
    return list(row) + [bids]


def query_market_region(st, q):
    listed = st.market_open.page(q.key, q.index * L.MARKET_PAGE_ROWS, L.MARKET_PAGE_ROWS)
    if not listed and q.index:
        raise Reject(L.NOT_FOUND, "page %d is past the last page of open requests in this region" % q.index)
    rows = []
    for (_, height, request_key, _), _ in listed:
        r = st.market.get((request_key,))
        rows.append([request_key, r.window_start, r.window_end, r.window_unit, r.energy_wh, r.bid_deadline, height])
    return rows


HANDLERS = {
    L.TAG_MARKET_REQUEST: market_request,
    L.TAG_MARKET_BID: market_bid,
    L.TAG_MARKET_COMMIT: market_commit,
    L.TAG_MARKET_WITHDRAW: market_withdraw,
}
QUERIES = {L.QUERY_MARKET: query_market, L.QUERY_MARKET_REGION: query_market_region}
