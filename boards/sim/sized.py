"""A simulated board sized by a session's terms: what a simulated device plugs in.

The agreed power; a vehicle's battery with room for the energy (consuming) or holding it
(producing), with a margin either way; the responder's meter with a fresh key (the
responder meters, whoever produces). The clock runs ``scale`` simulated seconds per real
one, so a 20 kWh session takes seconds. Portable: a MicroPython process is a whole
simulated vehicle or charger with it.
"""
from plugpay.protocol.port import urandom

from .board import SimBoard
from .clock import ScaledClock
from .power import Battery, Meter

BATTERY_MARGIN_WH = 10000  # a simulated vehicle battery holds this much beyond the session's energy


def sized_board(terms, role, scale):
    """The ``SimBoard`` of ``role`` ("vehicle" or "charger") for ``terms``."""
    params = terms.parameters
    power = params.max_power_w
    battery = None
    if role == "vehicle":
        capacity = params.energy_wh + 2 * BATTERY_MARGIN_WH
        soc = capacity - BATTERY_MARGIN_WH if terms.producer else BATTERY_MARGIN_WH
        rate = max(150000, power)
        battery = Battery(capacity, soc, rate, rate)
    meter = None if terms.initiator else Meter(urandom(32))
    return SimBoard(role, ScaledClock(scale), power, battery=battery, meter=meter)
