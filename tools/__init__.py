"""The ``plugpay`` command line and the host-side helpers behind it."""
