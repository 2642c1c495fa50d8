"""What a wallet asks of the issuer through the gateway: money on a test network, and fresh
coins for those that came back from sessions.

``fund`` asks the faucet for an amount as clean coins of ``books.coin_plan`` denominations
(powers of two, so later deposits can be paid exactly), each to a fresh one-time key and
each minted alone, sealed so the broker cannot see that they belong together.

A coin a session gave back (deposit change, a channel's refund or payout, an HTLC claim or
refund) names that session on the ledger, so the wallet never spends it in another one
(``books``). ``refresh`` redeems each such group of coins: the wallet signs and stores a
``Redeem`` (``Wallet.redeem``), sends the ``RedeemRequest`` sealed to the host, and books
the issuer's fresh clean coins from its answer (``Wallet.handle_result``). A redeem that
got no answer, or that the issuer cannot finish yet, stays pending in the wallet and goes
out again, byte for byte, at the next ``refresh``: the issuer and the ledger treat a repeat
as the same request, so nothing is lost or paid twice.

Run it at the end of a session, on that session's connection: the broker sees one more
sealed request there, and the ledger a redeem of coins that already name that session.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.structures import TxOutput

from .bookkeeping import WalletError
from .coins import CLEAN, coin_plan
from .gateway_client import DEFAULT_TIMEOUT_MS, GatewayError, GatewayRefused

NOT_NEEDED = "not_needed"
REDEEMED = "redeemed"
WAITING = "waiting"  # a redeem went out and is not finished: it goes out again next time
REFUSED = "refused"  # the issuer's ledger refused a redeem: its coins are back, or lost (see status)


def fund(wallet, gateway_client, amount, timeout_ms=DEFAULT_TIMEOUT_MS):
    """Ask the faucet (test networks) for ``amount`` as fresh clean coins; the ``Result``.
    A refusal books nothing; ``GatewayError`` when no answer came."""
    outputs, keys = [], []
    for value in coin_plan(amount, L.MAX_FAUCET_OUTPUTS):
        index, account = wallet.new_account()
        keys.append(index)
        outputs.append(TxOutput(account, value))
    result = gateway_client.faucet(outputs, wallet.ra_pubkeys, timeout_ms)
    if result.ok:
        for txhash, index, out in zip(result.data, keys, outputs):
            wallet.receive(txhash, 0, index, out.amount, CLEAN)  # each minted alone
    return result


class RefreshReport:
    """What ``refresh`` did: ``status`` (one of the constants above), the amount
    ``redeemed`` for fresh coins and, for anything but success, ``detail``."""

    def __init__(self, status, redeemed, detail=""):
        self.status = status
        self.redeemed = redeemed
        self.detail = detail

    def __repr__(self):
        return "RefreshReport(%s, redeemed=%d%s)" % (self.status, self.redeemed, ", " + self.detail if self.detail else "")


class _Stop(Exception):
    def __init__(self, status, detail):
        Exception.__init__(self, detail)
        self.status = status
        self.detail = detail


def refresh(wallet, gateway_client, timeout_ms=DEFAULT_TIMEOUT_MS):
    """Redeem every group of coins that came back from sessions (pending redeems first)."""
    pending, groups = wallet.to_redeem()
    if not pending and not groups:
        return RefreshReport(NOT_NEEDED, 0)
    redeemed = 0
    try:
        for request in pending:
            redeemed += _send(wallet, gateway_client, request, timeout_ms)
        for group in groups:
            while group in wallet.to_redeem()[1]:  # 16 coins a redeem: again until the group is gone
                redeemed += _send(wallet, gateway_client, wallet.redeem(group), timeout_ms)
    except _Stop as e:
        return RefreshReport(e.status, redeemed, e.detail)
    return RefreshReport(REDEEMED, redeemed)


def _send(wallet, gateway_client, request, timeout_ms):
    """Send one stored redeem and book the answer; the amount made fresh."""
    try:
        answer = gateway_client.redeem(request, wallet.ra_pubkeys, timeout_ms)
    except GatewayRefused as e:
        from plugpay.protocol.sealed import UNAVAILABLE

        why = e.refusal.text if e.refusal.code == UNAVAILABLE else str(e.refusal)
        raise _Stop(WAITING, "the issuer has not finished a redeem (%s); it goes out again next time" % why)
    except GatewayError as e:
        raise _Stop(WAITING, "%s; the redeem goes out again next time" % e)
    outcome = wallet.handle_result(answer)
    if outcome != "confirmed":
        raise _Stop(REFUSED, "the ledger refused a redeem: its coins are %s" % (
            "back in the book" if outcome == "refused" else "out of use (see the wallet's problems)"))
    try:
        return sum(o.amount for o in L.RedeemRequest.decode(request).outputs)
    except ValueError as e:  # the wallet's own stored bytes: a bug, not input
        raise WalletError("a stored redeem does not decode: %s" % e)
