"""The signing energy meter of the side that meters a session (the responder).

Each ``read`` is a ``MeterReading`` of the session's chain, as the link checks it: index 1,
2, ..., the cumulative Wh this session, the unit price, the installment, the previous
reading's digest (zeros for the first) and a time, signed with the meter's key. What the
register shows is the board's ``measured_wh``, which a simulated meter replaces with its
own count (``boards/sim/power.py``).
"""
from plugpay.protocol import signing
from plugpay.protocol.structures import MeterReading

ZERO_DIGEST = bytes(32)


class Meter:
    """Signs readings with ``key`` over what ``board`` measured this session."""

    def __init__(self, key, board=None):
        self.key = key
        self.pubkey = signing.public_key(key)
        self.board = board
        self.session_id = None
        self.unit_price = 0
        self.index = 0
        self.prev_digest = ZERO_DIGEST

    def start(self, session_id, unit_price):
        """Begin a session's reading chain."""
        self.session_id = session_id
        self.unit_price = unit_price
        self.index = 0
        self.prev_digest = ZERO_DIGEST

    @property
    def session_wh(self):
        """What the register shows for this session (whole Wh)."""
        return self.board.measured_wh

    def read(self, installment, timestamp):
        """The next signed reading of this session's chain."""
        if self.session_id is None:
            raise ValueError("the meter has no session: call start first")
        r = MeterReading(self.session_id, self.index + 1, self.session_wh, self.unit_price, installment,
                         self.prev_digest, timestamp, b"")
        r.meter_sig = signing.sign(self.key, r)
        self.index += 1
        self.prev_digest = r.digest()
        return r
