"""``plugpay bench crypto``: key generation, signing, verification and account registration.

Every ECDSA backend is timed in the same run, on CPython and under the real MicroPython
(WebAssembly port), and printed beside python-ecdsa (the reference, measured here) and
Gao et al.'s figures (3.16 ms per key pair, 3.45 ms per RA signature, 1,935 ms for 300
registered accounts, on a 2.5 GHz CPU).
"""
import json
import time
from pathlib import Path

from plugpay.protocol import signing
from plugpay.protocol.structures import Account

# How much slower an ESP32 (Xtensa LX6, 240 MHz) runs the same MicroPython big-integer code
# than the WebAssembly port on this machine: an estimate, derived in the README.
ESP32_SLOWDOWN = (15, 25)
PAPER = {"keygen_ms": 3.16, "sign_ms": 3.45, "accounts_300_ms": 1935.0}
ACCOUNTS = 300


def per_op_ms(fn, min_seconds, min_reps=3):
    """Mean ms per call, repeating until ``min_seconds`` have passed."""
    reps, start = 0, time.perf_counter()
    while True:
        fn(reps)
        reps += 1
        elapsed = time.perf_counter() - start
        if reps >= min_reps and elapsed >= min_seconds:
            return elapsed * 1000 / reps


def register_accounts(n, ra_secret):
    """Gao et al.'s registration: n fresh key pairs, each public key signed by the RA."""
    accounts = []
    for _ in range(n):
        acc = Account(signing.public_key(signing.new_secret()), 0, b"")
        acc.ra_sig = signing.sign(ra_secret, acc)
        accounts.append(acc)
    return accounts


def host_figures(name, min_seconds):
    signing.use(name)
    secret = signing.new_secret()
    pub = signing.public_key(secret)
    digests = [signing.message_digest(b"plugpay/bench/v1", i.to_bytes(4, "big")) for i in range(64)]
    sigs = [signing.sign_digest(secret, d) for d in digests]
    row = {
        "runtime": "CPython",
        "keygen_ms": per_op_ms(lambda i: signing.public_key(signing.new_secret()), min_seconds),
        "sign_ms": per_op_ms(lambda i: signing.sign_digest(secret, digests[i % 64]), min_seconds),
        "verify_ms": per_op_ms(lambda i: signing.verify_digest(pub, digests[i % 64], sigs[i % 64]), min_seconds),
    }
    ra = signing.new_secret()
    runs = 5 if name in ("coincurve", "native") else 1
    best = None
    for _ in range(runs):
        start = time.perf_counter()
        accounts = register_accounts(ACCOUNTS, ra)
        took = (time.perf_counter() - start) * 1000
        best = took if best is None else min(best, took)
    ra_pub = signing.public_key(ra)
    assert all(signing.verify(ra_pub, a, a.ra_sig) for a in accounts)
    row["accounts_300_ms"] = best
    return row


def micropython_figures(reps):
    from plugpay.tools import micropython

    source = (Path(__file__).parent / "crypto_bench_mpy.py").read_text()
    prelude = "REPS = %d\nACCOUNTS = %d\n" % (reps, ACCOUNTS)
    result = micropython.run(prelude + source, timeout=900).check()
    rec = result.records[-1]
    return {
        "runtime": "MicroPython 1.27 (wasm)",
        "keygen_ms": rec["keygen_ms"],
        "sign_ms": rec["sign_ms"],
        "verify_ms": rec["verify_ms"],
        "accounts_300_ms": rec["accounts_ms"] * ACCOUNTS / rec["accounts"],
        "heap_crypto_bytes": rec["heap_crypto_bytes"],
        "heap_table_bytes": rec["heap_table_bytes"],
        "mulmod_us": rec["mulmod_us"],
        "heap_idle_bytes": rec["heap_idle_bytes"],
        "backend": rec["backend"],
    }


def mpy_sizes():
    from plugpay.tools import mpycross

    rows = mpycross.compile_tree(folders=("protocol",))
    errors = [(path, err) for path, _, err in rows if err]
    if errors:
        raise RuntimeError("mpy-cross refused: " + "; ".join("%s: %s" % e for e in errors))
    return {path: size for path, size, _ in rows}


def run(quick=False, with_micropython=True, progress=print):
    """Measure everything; return the JSON-ready report."""
    min_seconds = 0.05 if quick else 0.3
    before = signing.BACKEND
    backends = {}
    try:
        for name in signing.available():
            progress("  timing %s on CPython ..." % name)
            backends[name] = host_figures(name, min_seconds)
    finally:
        signing.use(before)
    if with_micropython:
        progress("  timing the pure backend under MicroPython (WebAssembly) ...")
        device = micropython_figures(10 if quick else 40)
        backends["micropython-" + device["backend"]] = device
    fast = signing.available()[0]
    sizes = mpy_sizes()
    return {
        "accounts_300_ms": backends[fast]["accounts_300_ms"],
        "fast_backend": fast,
        "backends": backends,
        "paper": PAPER,
        "protocol_mpy_bytes": sum(sizes.values()),
        "protocol_mpy_files": sizes,
    }


def table(report):
    ref = report["backends"].get("ecdsa")
    lines = [
        "%-20s %-24s %10s %10s %10s %14s %12s %12s"
        % ("backend", "runtime", "keygen ms", "sign ms", "verify ms", "300 accts ms", "vs ecdsa", "vs paper"),
    ]
    for name, row in report["backends"].items():
        vs_ref = ref["accounts_300_ms"] / row["accounts_300_ms"] if ref else float("nan")
        vs_paper = PAPER["accounts_300_ms"] / row["accounts_300_ms"]
        lines.append(
            "%-20s %-24s %10.3f %10.3f %10.3f %14.1f %11.2fx %11.2fx"
            % (name, row["runtime"], row["keygen_ms"], row["sign_ms"], row["verify_ms"], row["accounts_300_ms"], vs_ref, vs_paper)
        )
    lines.append(
        "%-20s %-24s %10.2f %10.2f %10s %14.1f" % ("Gao et al. (paper)", "2.5 GHz CPU", PAPER["keygen_ms"], PAPER["sign_ms"], "-", PAPER["accounts_300_ms"])
    )
    for name, mp in report["backends"].items():
        if not name.startswith("micropython-"):
            continue
        lines.append(
            "MicroPython heap: %d bytes for the protocol modules and tables once imported, of which %d for the"
            " precomputed tables (a bytes constant: 0 bytes of heap when frozen into a board's flash); %d bytes in use after the run"
            % (mp["heap_crypto_bytes"], mp["heap_table_bytes"], mp["heap_idle_bytes"])
        )
        lo, hi = ESP32_SLOWDOWN
        lines.append(
            "ESP32 estimate (240 MHz, no native module; %d-%dx the WebAssembly figures, see README): sign %.0f-%.0f ms,"
            " verify %.0f-%.0f ms; a 256-bit a*b%%p costs %.1f us here"
            % (lo, hi, mp["sign_ms"] * lo, mp["sign_ms"] * hi, mp["verify_ms"] * lo, mp["verify_ms"] * hi, mp["mulmod_us"])
        )
    lines.append(
        "300 accounts on %s: %.1f ms (target < 50 ms; paper 1,935 ms, %.0fx faster)"
        % (report["fast_backend"], report["accounts_300_ms"], PAPER["accounts_300_ms"] / report["accounts_300_ms"])
    )
    lines.append("protocol/ compiled with mpy-cross: %d bytes of .mpy in %d files" % (report["protocol_mpy_bytes"], len(report["protocol_mpy_files"])))
    return "\n".join(lines)


def main(args):
    progress = (lambda s: None) if args.json else print
    report = run(quick=args.quick, with_micropython=not args.no_micropython, progress=progress)
    print(json.dumps(report, indent=None if args.json else 2) if args.json else table(report))
    return 0
