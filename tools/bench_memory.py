"""``plugpay bench memory``: the heap one side of a channel session takes on a board
without PSRAM (issue 15, item 7).

An ESP32-WROOM gives MicroPython about 110 KB of heap, and code loaded from .mpy files
lives on it (frozen code does not). So the figures are taken on the 32-bit WebAssembly
port with the code compiled by ``mpy-cross`` and nothing else mounted:

* ``code_heap_bytes_32bit``: what one side's imports take (``tools/memory_bench_mpy.py``
  lists them: wallet, link, pure ECDSA, sealed requests), and per module.
* ``heap_peak_bytes_32bit``: the most heap in use, after a collection, at any message of
  one side (the vehicle) of a 100-installment channel session, imports included; the
  charger's messages are replayed from the same session recorded on CPython.

What this port cannot give is a run under a real heap limit: its heap grows on demand
(the size given at load is where it starts) and it collects garbage only when control
returns to JavaScript, never inside a call, so a step's garbage (one pure-Python ECDSA
verify allocates ~570 KB) would count against any cap. The peak here is therefore the live
heap a board's collector would have to keep, measured at every message.

Beside them, in the same run, the same figures for a baseline: the code imported from
source (.py files), or with ``--baseline DIR`` a tree holding an earlier ``protocol/`` and
``firmware/`` (e.g. ``git archive main protocol firmware | tar -x -C DIR``), compiled the
same way. The target (110,000 bytes) is printed beside, never asserted.
"""
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from plugpay.protocol import signing

INSTALLMENTS = 100
ENERGY_WH = 20000
UNIT_PRICE = 50  # 1000 units over the session: the bench wallet's collateral for 100 installments
TARGET = 110000
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).parent / "memory_bench_mpy.py"


def _stderr(text):
    print(text, file=sys.stderr, flush=True)


def build(base, installments, progress=_stderr):
    """Wallets with a confirmed channel (real RA and ledger), the vehicle's transcript
    recorded on CPython; returns the config of ``memory_bench_mpy.phases``."""
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet
    from plugpay.tools import bench_wallet as bw
    from plugpay.tools import memory_bench_mpy as side

    bench = bw.Bench(base, progress)
    try:
        vehicle = bench.create("vehicle")
        bench.register("vehicle", vehicle, 16)
        charger = bench.create("charger")
        bench.register("charger", charger, bw.PRODUCER_KEYS)
        channel_id = bench.open_channel(vehicle, charger, installments)
        epoch, ra_key = max(bench.ra_keys.items())
    finally:
        bench.close()
    pristine = os.path.join(base, "vehicle-before")
    shutil.copytree(bench.path("vehicle"), pristine)
    energy = ENERGY_WH * installments // INSTALLMENTS
    params = side.parameters(installments, energy, UNIT_PRICE)
    transcript = os.path.join(base, "transcript.bin")
    progress("recording the %d-installment session on CPython (%s) ..." % (installments, signing.BACKEND))
    vehicle = Wallet.open(Storage(bench.path("vehicle")), bench.device_keys["vehicle"])
    charger = Wallet.open(Storage(bench.path("charger")), bench.device_keys["charger"])
    ended = side.record(vehicle, charger, channel_id, params, transcript)
    if ended.channel.latest().seq != installments - 1:
        raise RuntimeError("the recorded session ended at seq %d" % ended.channel.latest().seq)
    return {
        "wallet": pristine, "key": bench.device_keys["vehicle"].hex(), "channel": channel_id.hex(),
        "transcript": transcript, "installments": installments, "energy_wh": energy, "unit_price": UNIT_PRICE,
        "ra_epoch": epoch, "ra_pubkey": ra_key.hex(),
    }


def mpy_files(root):
    """``{/lib/plugpay/<folder>/<name>.mpy: bytes}`` of a tree's device code (mpy-cross)."""
    from plugpay.tools import mpycross

    files = {}
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-memory-mpy-") as tmp:
        for source in mpycross.device_sources(root):
            size, error = mpycross.compile_file(source, tmp)
            if error:
                raise RuntimeError("mpy-cross refused %s: %s" % (source, error))
            rel = source.relative_to(root)
            files["/lib/plugpay/%s/%s.mpy" % (rel.parent.as_posix(), source.stem)] = \
                (Path(tmp) / (source.stem + ".mpy")).read_bytes()
    return files


def compiled(source):
    """One file compiled by mpy-cross (bytes)."""
    from plugpay.tools import mpycross

    with tempfile.TemporaryDirectory(prefix="plugpay-bench-memory-script-") as tmp:
        size, error = mpycross.compile_file(Path(source), tmp)
        if error:
            raise RuntimeError("mpy-cross refused %s: %s" % (source, error))
        return (Path(tmp) / (Path(source).stem + ".mpy")).read_bytes()


def wasm_files(config):
    """The vehicle's folder and the transcript for the wasm file system; the config there."""
    files, wasm = {}, dict(config)
    for name in sorted(os.listdir(config["wallet"])):
        with open(os.path.join(config["wallet"], name), "rb") as f:
            files["/wallet/" + name] = f.read()
    with open(config["transcript"], "rb") as f:
        files["/transcript.bin"] = f.read()
    wasm["wallet"], wasm["transcript"] = "/wallet", "/transcript.bin"
    return files, wasm


def micropython_run(config, code, heap=1 << 20, timeout=900):
    """One run of the side under MicroPython with ``code`` = ``"source"`` (the .py files
    of this tree) or a tree whose code is loaded from .mpy files; the Result."""
    from plugpay.tools import micropython

    files, wasm = wasm_files(config)
    root = ROOT
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-memory-root-") as empty:
        if code != "source":
            files.update(mpy_files(code))
            root = empty  # nothing mounted from source: every import is a .mpy
        files["memory_bench_mpy.mpy"] = compiled(SCRIPT)
        source = "from memory_bench_mpy import harness\n__harness_next__ = harness(%s)\n" % json.dumps(wasm)
        return micropython.run(source, files=files, heap=heap, root=root, timeout=timeout)


def measure(config, code):
    """The figures of one code variant."""
    return micropython_run(config, code).check().records[-1]


def run(installments=INSTALLMENTS, baseline=None, progress=_stderr):
    """Measure; return the JSON-ready report."""
    if not 1 <= installments <= INSTALLMENTS:
        raise ValueError("installments must be 1..%d" % INSTALLMENTS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-memory-") as tmp:
        config = build(tmp, installments, progress)
        variants = [("mpy", ROOT), ("baseline", Path(baseline).resolve() if baseline else "source")]
        results = {}
        for label, code in variants:
            what = "source" if code == "source" else ".mpy of %s" % code
            progress("one side under MicroPython (WebAssembly, 32-bit), code from %s ..." % what)
            results[label] = measure(config, code)
    mine, base = results["mpy"], results["baseline"]
    report = {
        "installments": installments,
        "backend": mine["backend"],
        "code_heap_bytes_32bit": mine["code_heap_bytes"],
        "heap_peak_bytes_32bit": mine["heap_peak_bytes"],
        "heap_session_bytes_32bit": mine["heap_peak_session_bytes"],
        "session_ms_32bit": mine["session_ms"],
        "imports_32bit": mine["imports"],
        "baseline": "source" if baseline is None else str(baseline),
        "baseline_code_heap_bytes_32bit": base["code_heap_bytes"],
        "baseline_heap_peak_bytes_32bit": base["heap_peak_bytes"],
        "baseline_session_ms_32bit": base["session_ms"],
        "baseline_imports_32bit": base["imports"],
        "messages": mine["messages"],
        "target_bytes": TARGET,
        "micropython": mine,
        "micropython_baseline": base,
        "setup_and_runs_s": time.monotonic() - started,
    }
    return report


def _ratio(a, b):
    return "%.2fx" % (float(a) / b) if b else "-"


def table(report):
    base = "from source (.py)" if report["baseline"] == "source" else "baseline tree (.mpy)"
    lines = ["memory benchmark: one side (the vehicle) of a %d-installment channel session, MicroPython 1.27"
             " WebAssembly (32-bit), %s backend, code from .mpy" % (report["installments"], report["backend"]), ""]
    lines.append("%-44s %12s %14s %8s" % ("heap after gc.collect(), bytes", ".mpy", base[:14], "ratio"))
    for label, name in (("code: what one side imports", "code_heap_bytes_32bit"),
                        ("peak over the session, imports included", "heap_peak_bytes_32bit")):
        mine, theirs = report[name], report["baseline_" + name]
        lines.append("%-44s %12d %14d %8s" % (label, mine, theirs, _ratio(mine, theirs)))
    peak = report["heap_peak_bytes_32bit"]
    lines.append("%-44s %12d  (%s the %d-byte target)" % ("  of it the session's data", report["heap_session_bytes_32bit"],
                                                           "meets" if peak < TARGET else "MISSES", TARGET))
    lines.append("%-44s %12.0f %14.0f %8s" % ("session time, ms", report["session_ms_32bit"],
                                              report["baseline_session_ms_32bit"],
                                              _ratio(report["session_ms_32bit"], report["baseline_session_ms_32bit"])))
    lines.append("")
    lines.append("%-44s %12s %14s" % ("heap per import, bytes", ".mpy", base[:14]))
    from plugpay.tools.memory_bench_mpy import MODULES

    mine, theirs = report["imports_32bit"], report["baseline_imports_32bit"]
    for name in MODULES:
        lines.append("%-44s %12s %14s" % (name.replace("plugpay.", ""), mine.get(name, "-"), theirs.get(name, "-")))
    return "\n".join(lines)


def main(args):
    installments = args.installments if args.installments is not None else (10 if args.quick else INSTALLMENTS)
    report = run(installments, baseline=args.baseline)
    print(json.dumps(report) if args.json else table(report))
    return 0
