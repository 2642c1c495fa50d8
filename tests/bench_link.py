"""Link step benchmark: one link message through the state machines, on CPython and under
the real MicroPython (the WebAssembly port), signatures timed apart.

    .venv/bin/python tests/bench_link.py [--json] [--installments 20] [--rounds 5]

A step is one message of the installment loop: the sender's machine encoding it and the
receiver's decoding, checking and state change (tests/device/linkdrive.py ``step_times``).
The baseline, measured in the same run, is a bare decode and re-encode of one
ChargingStatus message with the project's codec. Targets (issue 5): under 0.1 ms on
CPython and under 2 ms under MicroPython, signatures excluded. The WebAssembly port's
``ticks_us`` counts whole milliseconds, so its figures are sums over a round of ~80
messages divided by their number (about +-0.02 ms of rounding).
"""
import argparse
import json
import sys
from pathlib import Path

DEVICE = Path(__file__).resolve().parent / "device"
sys.path.insert(0, str(DEVICE))

import linkdrive  # noqa: E402

from plugpay.protocol import codec, signing  # noqa: E402
from plugpay.tools import micropython as mpy  # noqa: E402

TARGET_MS = {"cpython": 0.1, "micropython": 2.0}
MPY_SCRIPT = """
import linkdrive
step, verify, messages = linkdrive.step_times(n=%d, rounds=%d)
base = linkdrive.codec_baseline_us(50)
print('@@ {"step_us": %%.1f, "verify_us": %%.1f, "messages": %%d, "baseline_us": %%.1f}' %% (step, verify, messages, base))
"""


def figures(step_us, verify_us, messages, baseline_us, runtime, backends):
    return {
        "runtime": runtime,
        "backends": backends,
        "link_step_ms": round(step_us / 1000, 4),
        "signature_verify_ms": round(verify_us / 1000, 4),
        "baseline_codec_ms": round(baseline_us / 1000, 4),
        "step_over_baseline": round(step_us / baseline_us, 2),
        "messages_per_round": messages,
        "target_ms": TARGET_MS[runtime],
    }


def cpython(n, rounds):
    step, verify, messages = linkdrive.step_times(n=n, rounds=rounds)
    base = linkdrive.codec_baseline_us(2000)
    return figures(step, verify, messages, base, "cpython", {"ecdsa": signing.BACKEND, "cbor": codec.BACKEND})


def micropython(n, rounds):
    reason = mpy.unavailable_reason()
    if reason:
        return {"runtime": "micropython", "unavailable": reason}
    result = mpy.run(MPY_SCRIPT % (n, rounds), files={"linkdrive.py": (DEVICE / "linkdrive.py").read_bytes()}, timeout=600).check()
    r = result.records[-1]
    return figures(r["step_us"], r["verify_us"], r["messages"], r["baseline_us"], "micropython", {"ecdsa": "pure", "cbor": "plugpay"})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installments", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [cpython(args.installments, args.rounds), micropython(args.installments, max(1, args.rounds // 2))]
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        if "unavailable" in row:
            print("%-11s %s" % (row["runtime"], row["unavailable"]))
            continue
        print(
            "%-11s link step %.4f ms (target < %.1f ms, %.1fx the bare codec round trip of %.4f ms); "
            "signature verification %.3f ms each, apart [%s]"
            % (row["runtime"], row["link_step_ms"], row["target_ms"], row["step_over_baseline"],
               row["baseline_codec_ms"], row["signature_verify_ms"], ", ".join("%s=%s" % kv for kv in sorted(row["backends"].items())))
        )


if __name__ == "__main__":
    main()
