"""What both sides of a session agreed before the link starts, and how a test side cheats.

Both sides compute the budget and every installment from the same ``Terms``, so they agree
on each amount without sending it.
"""
from plugpay.protocol import link_messages as M

CHANNEL = M.MODE_STATE_CHANNEL
HTLC = M.MODE_HTLC


class Terms:
    """What both sides agreed before the link starts (in the market): the charge
    parameters, the payment mode, the session id, who produces and who initiates, the
    channel's dispute window (blocks), the HTLCs' timeout (block height: the producer takes
    no series that refunds earlier) and the fee offered with each ledger request."""

    def __init__(self, session_id, parameters, mode, producer, initiator, window=10, htlc_timeout=100000, fee=0):
        if mode not in (CHANNEL, HTLC):
            raise ValueError("unknown payment mode %r" % (mode,))
        self.session_id = session_id
        self.parameters = parameters
        self.mode = mode
        self.producer = producer
        self.initiator = initiator
        self.window = window
        self.htlc_timeout = htlc_timeout
        self.fee = fee

    def budget(self):
        p = self.parameters
        b = p.energy_wh * p.unit_price // 1000
        return b - b % p.installments if self.mode == HTLC else b

    def paid_after(self, k):
        """What the producer holds once installment k is accepted."""
        return self.budget() * (k + 1) // self.parameters.installments


class Misbehaviour:
    """A side that cheats, for tests and the demo: a producer that stops delivering after
    reading ``stop_delivering_after``, a consumer that stops paying from installment
    ``stop_paying_at``, a consumer that closes with a stale state at the end."""

    def __init__(self, stop_delivering_after=None, stop_paying_at=None, stale_close=False):
        self.stop_delivering_after = stop_delivering_after
        self.stop_paying_at = stop_paying_at
        self.stale_close = stale_close
