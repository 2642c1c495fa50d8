"""The power parts of a simulated board: battery and signing energy meter (the contactor and
the meter's reading chain are production code: ``firmware/board.py``, ``firmware/meter.py``).

Energy inside the simulation is counted in integer millijoules (mJ = W x ms), so a power in
watts over a time in milliseconds adds up exactly, with no floats and no rounding step by
step; only what is shown or signed is turned into whole Wh (1 Wh = 3 600 000 mJ), by
flooring the exact count.
"""
from plugpay.firmware.meter import Meter as SigningMeter
from plugpay.protocol.port import const

MJ_PER_WH = const(3600000)
PPM = const(1000000)


def check_ppm(error_ppm):
    """A measuring error in parts per million: above -100 % (a meter still counts)."""
    if not isinstance(error_ppm, int) or error_ppm <= -PPM:
        raise ValueError("measuring error must be an integer above -1000000 ppm, got %r" % (error_ppm,))
    return error_ppm


def registered_wh(mj, error_ppm):
    """Whole Wh an instrument with ``error_ppm`` shows for ``mj`` of true energy."""
    return mj * (PPM + error_ppm) // (MJ_PER_WH * PPM)


def mj_to_register(wh, registered_mj, error_ppm):
    """True mJ still to flow before an instrument that has seen ``registered_mj`` shows ``wh``."""
    short = wh * MJ_PER_WH * PPM - registered_mj * (PPM + error_ppm)
    if short <= 0:
        return 0
    scale = PPM + error_ppm
    return (short + scale - 1) // scale


class Battery:
    """A traction battery: what it holds, bounded by 0 and its capacity, and the most power
    it takes or gives. Energy in and out is in mJ so a board can step it exactly."""

    def __init__(self, capacity_wh, soc_wh, max_charge_w, max_discharge_w):
        for name, value in (("capacity_wh", capacity_wh), ("soc_wh", soc_wh), ("max_charge_w", max_charge_w),
                            ("max_discharge_w", max_discharge_w)):
            if not isinstance(value, int) or value < 0:
                raise ValueError("battery %s must be a non-negative integer, got %r" % (name, value))
        if soc_wh > capacity_wh:
            raise ValueError("battery holds %d Wh, more than its capacity of %d Wh" % (soc_wh, capacity_wh))
        self.capacity_mj = capacity_wh * MJ_PER_WH
        self.stored_mj = soc_wh * MJ_PER_WH
        self.max_charge_w = max_charge_w
        self.max_discharge_w = max_discharge_w

    @property
    def soc_wh(self):
        return self.stored_mj // MJ_PER_WH

    def room_mj(self):
        return self.capacity_mj - self.stored_mj

    def absorb_mj(self, mj):
        """Take up to ``mj``; return what it took (less once it is full)."""
        taken = min(mj, self.room_mj())
        self.stored_mj += taken
        return taken

    def supply_mj(self, mj):
        """Give up to ``mj``; return what it gave (less once it is empty)."""
        given = min(mj, self.stored_mj)
        self.stored_mj -= given
        return given


class Meter(SigningMeter):
    """A simulated signing meter (the charger's, or a producing vehicle's): the reading
    chain of ``firmware.meter`` over a register that counts the true energy through it since
    ``start`` and shows it as whole Wh, off by ``error_ppm`` (positive over-counts: a
    drifting or dishonest meter)."""

    def __init__(self, key, error_ppm=0):
        SigningMeter.__init__(self, key)
        self.error_ppm = check_ppm(error_ppm)
        self.session_mj = 0  # true energy through the meter this session

    def start(self, session_id, unit_price):
        """Begin a session: a new reading chain and the session's register at zero."""
        SigningMeter.start(self, session_id, unit_price)
        self.session_mj = 0

    def count(self, mj):
        self.session_mj += mj

    @property
    def session_wh(self):
        """What the meter shows for this session (whole Wh, with its error)."""
        return registered_wh(self.session_mj, self.error_ppm)
