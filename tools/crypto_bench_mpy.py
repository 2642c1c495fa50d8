"""The crypto benchmark's device half: run under MicroPython by ``plugpay bench crypto``.

Prints ``@@ {json}`` records (the harness's marker) with per-operation times and the heap
the signing backend and its tables hold once imported. The work runs in phases: the
WebAssembly port frees memory only when control returns to JavaScript, so the harness calls
``__harness_next__`` once per phase and the heap figures between phases are real. On a board,
copy this file and call ``main()``. ``REPS`` and ``ACCOUNTS`` may be set before it runs.
"""
import gc
import json
import time

try:
    REPS
except NameError:
    REPS = 40
try:
    ACCOUNTS
except NameError:
    ACCOUNTS = 300


def _heap():
    gc.collect()
    return gc.mem_alloc()


def _per_op_ms(fn, n):
    fn(0)  # warm-up: the first calls run slower (V8 tiers up the interpreter)
    t = time.ticks_ms()  # ticks_us has 1 ms resolution on the WebAssembly port anyway
    for i in range(n):
        fn(i)
    return time.ticks_diff(time.ticks_ms(), t) / n


def _phases():
    state = {"before": _heap()}
    yield True
    from plugpay.protocol import secp256k1_table  # noqa: F401  (a board keeps it in flash)

    yield True
    state["table"] = _heap() - state["before"]
    from plugpay.protocol import signing
    from plugpay.protocol.structures import Account

    yield True
    state["crypto"] = _heap() - state["before"]
    secret = signing.new_secret()
    digests = [signing.message_digest(b"plugpay/bench/v1", bytes((i % 256,))) for i in range(REPS)]
    pub = signing.public_key(secret)
    sigs = [signing.sign_digest(secret, d) for d in digests]
    keygen = _per_op_ms(lambda i: signing.public_key(signing.new_secret()), REPS)
    sign = _per_op_ms(lambda i: signing.sign_digest(secret, digests[i]), REPS)
    verify = _per_op_ms(lambda i: signing.verify_digest(pub, digests[i], sigs[i]), REPS)
    for i in range(REPS):
        assert signing.verify_digest(pub, digests[i], sigs[i])
    # The primitive everything above is made of: scales the figures to another board.
    p = signing.P
    a = int.from_bytes(signing.new_secret(), "big")
    b = int.from_bytes(signing.new_secret(), "big")
    t = time.ticks_ms()
    for _ in range(20000):
        a = a * b % p
    mulmod_us = time.ticks_diff(time.ticks_ms(), t) * 1000 / 20000
    ra = signing.new_secret()
    t = time.ticks_ms()
    for _ in range(ACCOUNTS):
        acc = Account(signing.public_key(signing.new_secret()), 0, b"")
        acc.ra_sig = signing.sign(ra, acc)
    accounts_ms = time.ticks_diff(time.ticks_ms(), t)
    digests = sigs = None
    yield True
    record = {
        "backend": signing.BACKEND,
        "keygen_ms": keygen,
        "sign_ms": sign,
        "verify_ms": verify,
        "accounts_ms": accounts_ms,
        "mulmod_us": mulmod_us,
        "accounts": ACCOUNTS,
        "heap_crypto_bytes": state["crypto"],
        "heap_table_bytes": state["table"],
        "heap_idle_bytes": _heap(),
    }
    print("@@ " + json.dumps(record))


_run = _phases()


def __harness_next__():
    return next(_run, False)


def main():
    for _ in _run:
        pass
