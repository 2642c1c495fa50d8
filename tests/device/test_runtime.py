"""MicroPython-side proof that the harness runs the real protocol code on the real port.

Run by tests/mpy_plugin.py under the WebAssembly and the unix port; never imported by CPython.
"""
import sys

import mpyunit
from plugpay.protocol import port


def test_runs_on_micropython():
    assert sys.implementation.name == "micropython", sys.implementation.name
    assert port.MICROPYTHON
    # the WebAssembly port mounts the tree at /lib/plugpay/, the unix port finds it on MICROPYPATH
    assert port.__file__.endswith("/lib/plugpay/protocol/port.py"), port.__file__


def test_sha256_abc():
    expected = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert port.sha256(b"abc") == expected


def test_hmac_sha256_rfc4231_case_2():
    expected = bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert port.hmac_sha256(b"Jefe", b"what do ya want for nothing?") == expected
    assert port._hmac_sha256_fallback(b"Jefe", b"what do ya want for nothing?") == expected


def test_hmac_sha256_rfc4231_case_6_long_key():
    # A key longer than the block is hashed first: exercises the other branch.
    key = b"\xaa" * 131
    msg = b"Test Using Larger Than Block-Size Key - Hash Key First"
    expected = bytes.fromhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    assert port.hmac_sha256(key, msg) == expected
    assert port._hmac_sha256_fallback(key, msg) == expected


def test_urandom():
    a = port.urandom(32)
    b = port.urandom(32)
    assert isinstance(a, bytes) and len(a) == 32
    assert len(b) == 32
    assert a != b
    assert port.urandom(0) == b""


def test_ticks():
    start_ms = port.ticks_ms()
    start_us = port.ticks_us()
    acc = 0
    for i in range(20000):
        acc += i
    assert acc == 199990000
    # Monotonic, not a resolution: the WebAssembly port's ticks_us moves in whole ms.
    assert port.ticks_diff(port.ticks_us(), start_us) >= 0
    assert port.ticks_diff(port.ticks_ms(), start_ms) >= 0


def test_step_records_allocation():
    mpyunit.step("before")
    block = bytearray(50000)
    mpyunit.step("50 kB bytearray held")
    before, held = mpyunit._steps[0]["heap"], mpyunit._steps[1]["heap"]
    assert held - before >= 50000, (before, held)
    assert len(block) == 50000


def _fill_digests(held, count):
    # Allocate in a helper: MicroPython's GC is conservative and a generator's own value
    # stack keeps stale pointers, so objects that pass through it can outlive `del`.
    for i in range(count):
        held.append(port.sha256(i.to_bytes(4, "big")))
    assert len(set(held)) == count


def test_heavier_step_frees_on_release():
    # A generator test: each yield is a step measured after a real collection, even on the
    # WebAssembly port, whose GC only runs between calls from JS.
    held = []
    yield "start"
    _fill_digests(held, 2000)
    yield "2000 digests held"
    held.clear()
    yield "released"
    start, full, released = [s["heap"] for s in mpyunit._steps]
    # 2000 32-byte digests plus their list: at least 64 kB live while held.
    assert full - start >= 2000 * 32, (start, full)
    assert released - start < 2000 * 32 // 4, (start, released)
