"""A place on Earth as integer micro-degrees, read from ``"LAT,LON"`` in decimal degrees.

Exact, without floats (an ESP32's are single precision, and both sides of a market compare
positions), and small on purpose: a board's config checker reads it at boot, before
anything else is loaded.
"""


def micro_degrees(text, limit):
    """Micro-degrees of a decimal degree string ("47.8", "-13.04"), within +-``limit``
    degrees; ``ValueError`` names what is wrong."""
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    if not (whole or frac) or not (whole + frac).isdigit() or len(frac) > 6:
        raise ValueError("not a decimal number of degrees with at most 6 decimals: %r" % (text,))
    value = sign * (int(whole or "0") * 1000000 + int((frac + "000000")[:6]))
    if abs(value) > limit * 1000000:
        raise ValueError("%r is beyond +-%d degrees" % (text, limit))
    return value


def parse_position(text):
    """``(lat_e6, lon_e6)`` of ``"LAT,LON"``; ``ValueError`` names what is wrong."""
    parts = text.split(",") if isinstance(text, str) else ()
    if len(parts) != 2:
        raise ValueError("expected LAT,LON in degrees (e.g. 47.80,13.04), got %r" % (text,))
    return micro_degrees(parts[0].strip(), 90), micro_degrees(parts[1].strip(), 180)
