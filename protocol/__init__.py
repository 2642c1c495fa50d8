"""Wire formats, signed structures, crypto shim and sans-IO link state machines.

Runs unchanged on CPython and MicroPython; see DESIGN.md's portability rule.
"""
