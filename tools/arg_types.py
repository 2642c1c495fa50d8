"""Argument types for the command line that refuse values out of range where they are
parsed, so ``plugpay demo -n 0`` is refused before anything starts with the option named
(``argument -n/--installments: expected an integer 1..100000, got '0'``) instead of
running with some other value or failing later."""
import argparse
import math

MAX_AMOUNT = 10 ** 12  # prices and funds, in the smallest unit
MAX_WH = 10 ** 9  # energy, Wh
MAX_W = 10 ** 7  # power, W
MAX_INSTALLMENTS = 100000


def integer(low, high=None):
    """An integer ``low..high`` (no upper bound when ``high`` is None)."""
    def parse(text):
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError("expected an integer %s, got %r" % (_range(low, high), text))
        return value
    parse.__name__ = "integer"
    return parse


def number(low=0.0, high=None, low_open=True):
    """A finite number above ``low`` (at least ``low`` when not ``low_open``), at most ``high``."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (low_open and value == low) \
                or (high is not None and value > high):
            what = "a number above %g" % low if low_open else "a number of at least %g" % low
            if high is not None:
                what += " and at most %g" % high
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text))
        return value
    parse.__name__ = "number"
    return parse


def replicas(text):
    """A replica count n = 3f+1 with f >= 1 (4, 7, 10, ... 100)."""
    n = integer(4, 100)(text)
    if (n - 1) % 3:
        raise argparse.ArgumentTypeError("expected 3f+1 replicas (4, 7, 10, ...), got %r" % text)
    return n


def _range(low, high):
    return "of at least %d" % low if high is None else "%d..%d" % (low, high)


PORT = integer(1, 65535)
COUNT = integer(1)  # how many of something: at least one
AMOUNT = integer(1, MAX_AMOUNT)
ENERGY_WH = integer(1, MAX_WH)
POWER_W = integer(1, MAX_W)
INSTALLMENTS = integer(1, MAX_INSTALLMENTS)
SECONDS = number()  # a time span above zero
HEAP = integer(64 * 1024, 1 << 30)  # a MicroPython heap, bytes
