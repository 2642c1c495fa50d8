"""The producer's side of the market: page through the region's open requests, quote for
the newest that fits my power, bid, undercut once, and wait for the consumer's commit.
``role.Device`` of a producer loads this module, a consumer never does.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256, sleep_ms, ticks_diff, ticks_ms

from . import market
from .role import COMMIT_WAIT_MS, POLL_MS, RoleFailure, charge_parameters


def _open_requests(device):
    """Every open request of the region, oldest first."""
    rows, page = [], 0
    while True:
        query = market.region_query(device.plan.region, page)
        found = market.read_open_requests(device.gateway.query(query).encode(), query)
        rows.extend(found)
        if len(found) < L.MARKET_PAGE_ROWS:
            return rows
        page += 1


def _quote(device, row):
    """My price for an open request, or None when it does not fit my power."""
    if row.window_unit != L.WINDOW_UNIX_MINUTES:
        return None
    capacity_wh = device.plan.power_w * (row.window_end - row.window_start) // 60
    return market.quote(device.plan.price, row.energy_wh, capacity_wh, 0)


def sell(device):
    """Bid on the newest open request that fits until one commits to me."""
    tried = []
    started = ticks_ms()
    device.say("market: looking for requests in %s" % device.plan.region)
    while ticks_diff(ticks_ms(), started) < device.plan.timeout_ms:
        height = device.height()  # a request whose bidding is over takes no more bids
        minute = device.unix_s() // 60  # nor one whose charging window has passed
        offers = []
        for row in _open_requests(device):
            price = _quote(device, row)
            if row.request_key not in tried and row.bid_deadline > height and row.window_end > minute \
                    and price is not None:
                offers.append((row, price))
        if not offers:
            sleep_ms(POLL_MS)
            continue
        row, price = offers[-1]
        tried.append(row.request_key)
        left = device.plan.timeout_ms - ticks_diff(ticks_ms(), started)
        terms = _bid(device, row, price, min(left, COMMIT_WAIT_MS))
        if terms is not None:
            return terms
    raise RoleFailure("no request in %s chose my bid within %g s" % (device.plan.region, device.plan.timeout_ms / 1000))


def _bid(device, row, price, wait_ms):
    index, _ = device.wallet.new_account()
    secret = device.wallet.keystore.secret(index)
    sent = market.bid(secret, row.request_key, device.plan.position, 1, price)
    result = device.gateway.submit(sent)
    if not result.ok:
        device.say("market: bid refused: %s %s" % (L.reason_name(result.reason), result.detail))
        return None
    if price != device.plan.price:
        device.say("market: bid %d per kWh for %d Wh (my base price %d, raised by how much of my capacity in the "
                   "window it takes)" % (price, row.energy_wh, device.plan.price))
    else:
        device.say("market: bid %d per kWh for %d Wh" % (price, row.energy_wh))
    updated = False
    started = ticks_ms()
    while ticks_diff(ticks_ms(), started) < wait_ms:
        view = device.view(row.request_key)
        if view.status == L.STATUS_WITHDRAWN:
            device.say("market: the consumer withdrew its request")
            return None
        if view.status == L.STATUS_COMMITTED:
            if not market.is_chosen(view, sent):
                device.say("market: another bid was chosen")
                return None
            unit_price = L.MarketBid.decode(sent).unit_price
            device.say("market: my bid of %d per kWh was chosen" % unit_price)
            params = charge_parameters(view, unit_price, device.plan.installments)
            sid = market.session_id(secret, row.request_key, row.request_key, sha256(sent))
            return device.terms_for(sid, view, params)
        if not updated:
            update = market.maybe_update(secret, sent, view.bids, device.plan.price)
            if update is not None:
                updated = True
                if device.gateway.submit(update).ok:
                    sent = update
                    device.say("market: undercut to %d per kWh" % L.MarketBid.decode(sent).unit_price)
        sleep_ms(POLL_MS)
    device.say("market: the request was not committed in time; looking again")
    return None
