"""The device wallet and the vehicle and charger roles (MicroPython and CPython)."""
