"""``plugpay bench memory``: the heap one side of a channel session takes on a board
without PSRAM (issue 15, item 7).

An ESP32-WROOM gives MicroPython about 110 KB of heap, and code loaded from .mpy files
lives on it (frozen code does not). So the figures are taken on the 32-bit WebAssembly
port with the code compiled by ``mpy-cross`` and nothing else mounted, for one side (the
vehicle) of a channel session as a device runs it (``tools/memory_bench_mpy.py``: the
imports of ``boards/sim/main.py`` and the role, the wallet opened from files, the session
under the runner, its MQTT traffic replayed from a session recorded on CPython by
``tools/memory_record.py``):

* ``code_heap_bytes_32bit``: what the modules the side loads take (lazy ones included),
  and per module (``imports_32bit``, each measured after its own imports).
* ``heap_peak_bytes_32bit``: the most heap in use, after a collection, at any step of the
  runner, imports and the open wallet included.

What this port cannot give is a run under a real heap limit: its heap grows on demand
(the size given at load is where it starts) and it collects garbage only when control
returns to JavaScript, never inside a call, so a step's garbage (one pure-Python ECDSA
verify allocates ~570 KB) would count against any cap. The peak here is therefore the live
heap a board's collector would have to keep, measured between steps; ``plugpay bench
device`` runs a whole device under a real cap on the unix port.

Beside them, in the same run, the same figures for a baseline: the code imported from
source (.py files), or with ``--baseline DIR`` a tree holding an earlier ``protocol/``,
``firmware/`` and ``boards/`` (e.g. ``git archive main protocol firmware boards | tar -x -C
DIR``), compiled the same way. The target (110,000 bytes) is printed beside, never asserted.
"""
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

INSTALLMENTS = 100
ENERGY_WH = 20000
UNIT_PRICE = 50  # 1000 units over the session: the vehicle's one clean coin
TARGET = 110000
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).parent / "memory_bench_mpy.py"
DEVICE_FOLDERS = ("protocol", "firmware", "boards")
SESSION_ID = bytes(range(16))
START = 1790000000


def _stderr(text):
    print(text, file=sys.stderr, flush=True)


def _profile(installments, energy):
    """The vehicle's board config as ``plugpay provision`` and a user write it, with the
    paths it has on the MicroPython file system."""
    return {"board": "sim", "name": "bench-vehicle", "role": "vehicle", "broker": "mqtt://127.0.0.1:1883",
            "power_w": 11000, "scale": 20000, "wallet": "/board/wallet", "device_key": "/board/device.key",
            "session": {"region": "AT-5020", "position": "47.81,13.05", "scenario": "g2v", "mode": "channel",
                        "installments": installments, "price": UNIT_PRICE, "energy_wh": energy,
                        "window_min": 120}}


def build(base, installments, progress=_stderr):
    """Wallets (real RA, in-process ledger), the vehicle's files as they were before the
    session, and the session recorded on CPython; the config of ``memory_bench_mpy.run``."""
    from plugpay.firmware.role import DISPUTE_WINDOW_BLOCKS, HTLC_TIMEOUT_BLOCKS
    from plugpay.firmware.session import CHANNEL, Terms
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet
    from plugpay.protocol import link_messages as M
    from plugpay.protocol import signing
    from plugpay.tools import bench_wallet as bw
    from plugpay.tools import memory_record

    energy = ENERGY_WH * installments // INSTALLMENTS
    profile = _profile(installments, energy)
    config = {"energy_wh": energy, "start": START, "end": START + 7200, "power_w": profile["power_w"],
              "unit_price": UNIT_PRICE, "installments": installments, "tolerance": max(1, energy // installments // 100),
              "window": DISPUTE_WINDOW_BLOCKS, "htlc_timeout": HTLC_TIMEOUT_BLOCKS, "timestamp": START,
              "scale": profile["scale"], "session_id": SESSION_ID.hex(), "client_id": "dmemorybench"}
    params = M.ChargeParameters(energy, config["start"], config["end"], config["power_w"], UNIT_PRICE, installments,
                                config["tolerance"])
    bench = bw.Bench(base, progress)
    try:
        vehicle = bench.create("vehicle")
        bench.register("vehicle", vehicle, 16)
        charger = bench.create("charger")
        bench.register("charger", charger, bw.PRODUCER_KEYS)
        vehicle_terms = Terms(SESSION_ID, params, CHANNEL, False, True, window=config["window"],
                              htlc_timeout=config["htlc_timeout"])
        charger_terms = Terms(SESSION_ID, params, CHANNEL, True, False, window=config["window"],
                              htlc_timeout=config["htlc_timeout"])
        bench.mint(vehicle, vehicle_terms.budget())
        board = os.path.join(base, "board")
        shutil.copytree(bench.path("vehicle"), os.path.join(board, "wallet"))
        with open(os.path.join(board, "device.key"), "wb") as f:
            f.write(bench.device_keys["vehicle"])
        with open(os.path.join(board, "config.json"), "w") as f:
            json.dump(profile, f)
        progress("recording the %d-installment session on CPython (%s) ..." % (installments, signing.BACKEND))
        transcript = os.path.join(base, "transcript.bin")
        ended = memory_record.record(
            Wallet.open(Storage(bench.path("vehicle")), bench.device_keys["vehicle"]),
            Wallet.open(Storage(bench.path("charger")), bench.device_keys["charger"]),
            vehicle_terms, charger_terms, config, bench, transcript)
    finally:
        bench.close()
    if ended.installments_paid != installments or ended.payout is None:
        raise RuntimeError("the recorded session paid %d of %d installments" % (ended.installments_paid, installments))
    config["board"], config["transcript"] = board, transcript
    return config


def mpy_files(root):
    """``{/lib/plugpay/<folder>/<name>.mpy: bytes}`` of a tree's device code (mpy-cross)."""
    from plugpay.tools import mpycross

    files = {}
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-memory-mpy-") as tmp:
        for source in mpycross.device_sources(root, DEVICE_FOLDERS):
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
    """The board's folder and the transcript for the wasm file system; the config there."""
    files, wasm = {}, dict(config)
    for folder, _, names in os.walk(config["board"]):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files["/board/" + os.path.relpath(path, config["board"])] = f.read()
    with open(config["transcript"], "rb") as f:
        files["/transcript.bin"] = f.read()
    wasm["profile"], wasm["transcript"] = "/board/config.json", "/transcript.bin"
    del wasm["board"]
    return files, wasm


def micropython_run(config, code, run_pass, modules=None, heap=1 << 20, timeout=900):
    """One pass (``order`` or ``measure``) under MicroPython with ``code`` = ``"source"``
    (the .py files of this tree) or a tree whose code is loaded from .mpy files; its record."""
    from plugpay.tools import micropython

    files, wasm = wasm_files(config)
    wasm["pass"], wasm["modules"] = run_pass, modules
    root = ROOT
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-memory-root-") as empty:
        if code != "source":
            files.update(mpy_files(code))
            root = empty  # nothing mounted from source: every import is a .mpy
        # This port has no sockets; trees from before the client imported ``socket`` only
        # to connect import it at the top, and get an empty one.
        files["/lib/socket.py"] = b""
        files["memory_bench_mpy.mpy"] = compiled(SCRIPT)
        source = "import json\nfrom memory_bench_mpy import harness\n__harness_next__ = harness(json.loads(%r))\n" % (
            json.dumps(wasm),)
        return micropython.run(source, files=files, heap=heap, root=root, timeout=timeout).check().records[-1]


def measure(config, code):
    """The figures of one code variant: the modules it loads, then their heap and the peak."""
    modules = micropython_run(config, code, "order")["modules"]
    figures = micropython_run(config, code, "measure", modules)
    if figures["loaded_during_run"]:
        raise RuntimeError("modules loaded only in the measured run: %s" % ", ".join(figures["loaded_during_run"]))
    return figures


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
    return {
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


def _ratio(a, b):
    return "%.2fx" % (float(a) / b) if b else "-"


def table(report):
    base = "from source (.py)" if report["baseline"] == "source" else "baseline tree (.mpy)"
    lines = ["memory benchmark: one side (the vehicle) of a %d-installment channel session as a device runs it,"
             " MicroPython 1.27 WebAssembly (32-bit), %s backend, code from .mpy" % (report["installments"],
                                                                                   report["backend"]), ""]
    lines.append("%-44s %12s %14s %8s" % ("heap after gc.collect(), bytes", ".mpy", base[:14], "ratio"))
    for label, name in (("code: the modules the side loads", "code_heap_bytes_32bit"),
                        ("peak over the session, modules included", "heap_peak_bytes_32bit")):
        mine, theirs = report[name], report["baseline_" + name]
        lines.append("%-44s %12d %14d %8s" % (label, mine, theirs, _ratio(mine, theirs)))
    peak = report["heap_peak_bytes_32bit"]
    lines.append("%-44s %12d  (%s the %d-byte target)" % ("  of it the wallet and the session", report[
        "heap_session_bytes_32bit"], "meets" if peak < TARGET else "MISSES", TARGET))
    lines.append("%-44s %12.0f %14.0f %8s" % ("session time, ms", report["session_ms_32bit"],
                                              report["baseline_session_ms_32bit"],
                                              _ratio(report["session_ms_32bit"], report["baseline_session_ms_32bit"])))
    lines.append("")
    lines.append("%-44s %12s %14s" % ("heap per module, bytes (largest first)", ".mpy", base[:14]))
    mine, theirs = report["imports_32bit"], report["baseline_imports_32bit"]
    for name in sorted(set(mine) | set(theirs), key=lambda n: -max(mine.get(n, 0), theirs.get(n, 0))):
        lines.append("%-44s %12s %14s" % (name.replace("plugpay.", ""), mine.get(name, "-"), theirs.get(name, "-")))
    return "\n".join(lines)


def main(args):
    installments = args.installments if args.installments is not None else (10 if args.quick else INSTALLMENTS)
    report = run(installments, baseline=args.baseline)
    print(json.dumps(report) if args.json else table(report))
    return 0
