"""The consumer's side of the market (Unterweger et al.'s exploration and evaluation): post
a request under a one-time key, take bids for a while, choose the best for my private
position and commit, again when a bid changed under me; withdraw the request when no
session follows. ``role.Device`` of a consumer loads this module, a producer never does.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sleep_ms

from . import market
from .role import COMMIT_TRIES, RoleFailure, charge_parameters


def buy(device):
    """Post my request, wait out the bid window, commit to the best bid: the terms."""
    plan = device.plan
    status = device.wallet.status()
    balance = status["clean_balance"]
    if not balance:
        raise RoleFailure("the wallet holds no money that may fund a session%s: fund it (on a test network)" % (
            " (%d waits to be redeemed)" % status["balance"] if status["balance"] else ""))
    index, _ = device.wallet.new_account()
    secret = device.wallet.keystore.secret(index)
    start = device.unix_s() // 60
    raw = market.request(secret, plan.region, (start, start + plan.window_min), plan.energy_wh,
                         device.height() + plan.bid_blocks, L.WINDOW_UNIX_MINUTES)
    device.ask(raw)
    request_key = L.MarketRequest.decode(raw).request_key
    device.say("market: asked for %d Wh in %s within %d min; taking bids for %g s" % (
        plan.energy_wh, plan.region, plan.window_min, plan.bid_window_ms / 1000))
    sleep_ms(plan.bid_window_ms)
    try:
        return _choose(device, secret, request_key, balance)
    except RoleFailure:  # no session follows: take the request back, so no producer waits for it
        try:
            withdrawn = device.gateway.submit(market.withdraw(secret, request_key))
            device.say("market: request withdrawn" if withdrawn.ok else "market: withdrawing the request: %s" %
                       L.reason_name(withdrawn.reason))
        except Exception as e:  # the failure that brought us here is the one to report
            device.say("market: the request could not be withdrawn: %s" % e)
        raise


def _choose(device, secret, request_key, balance):
    """Evaluate the bids on my request and commit to the best; the session's terms."""
    plan = device.plan
    for _ in range(COMMIT_TRIES):
        view = device.view(request_key)
        chosen = market.evaluate(view.bids, plan.position)
        if chosen is None:
            raise RoleFailure("no bids on the request in %s within the %g s bid window: is a producer "
                              "running in that region?" % (plan.region, plan.bid_window_ms / 1000))
        params = charge_parameters(view, chosen.unit_price, plan.installments)
        sid = market.session_id(secret, chosen.bidder_key, request_key, chosen.digest)
        terms = device.terms_for(sid, view, params)
        if terms.budget() > balance:
            raise RoleFailure("the wallet holds %d, the chosen bid (%d per kWh) needs %d: fund it" % (
                balance, chosen.unit_price, terms.budget()))
        result = device.gateway.submit(market.commit(secret, request_key, chosen.digest))
        if result.ok:
            device.say("market: %d bid(s); chose %d per kWh at %d m" % (
                len(view.bids), chosen.unit_price, market.distance_m(plan.position, chosen.site())))
            return terms
        if result.reason != L.MARKET_UNKNOWN_BID:  # else the producer updated its bid just now
            raise RoleFailure("the ledger refused the commit: %s %s" % (
                L.reason_name(result.reason), result.detail))
    raise RoleFailure("the bids kept changing: no commit after %d tries" % COMMIT_TRIES)
