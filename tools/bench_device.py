"""``plugpay bench device``: devices as devices (issue 15's figures).

Real parts: Mosquitto, a 4-replica ledger with its gateway and RA (``host.stack``), and the
devices as processes running ``boards/sim/main.py`` (the portable role: upkeep, the market,
the session, on a simulated board): on the MicroPython unix port, and on CPython beside it
in the same run for scale.

* ``sessions``, ``sessions_ok``: MicroPython-to-MicroPython sessions run through the
  market, and of those the ones that completed and settled with the producer paid in full.
* ``installment_ms_unix``: one installment round trip between two MicroPython processes
  over Mosquitto (the consumer's median, sent to accepted), beside ``installment_ms_cpython``.
* ``min_heapsize_unix_bytes``: the smallest ``-X heapsize`` (to 8 KiB) with which the
  MicroPython vehicle completes a session (the charger has room), its code from .mpy files
  as ``plugpay flash`` puts it on a board; beside it ``baseline_min_heapsize_unix_bytes``,
  the same for the baseline of ``plugpay bench memory`` (this code from source, or the
  ``--baseline DIR`` tree compiled the same way). The unix port is 64-bit, so its objects
  take ~1.7x what they take on the ESP32.
* ``code_heap_bytes_32bit``, ``heap_peak_bytes_32bit``: from ``plugpay bench memory``: what
  one side imports, and its peak over a channel session, on the 32-bit WebAssembly port
  with the code from .mpy files; the ESP32 target (110,000 bytes) beside them.

Figures are printed, never asserted: a slow machine gives slower figures.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol.port import urandom
from plugpay.tools import micropython as mpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "boards", "sim", "main.py")
REGION = "AT-5020"
TARGET_32BIT = 110000
GENEROUS_HEAP = 4 * 1024 * 1024


def _say(text):
    print(text, file=sys.stderr, flush=True)


class Bench:
    """The host and the boards of one run, in ``base``."""

    def __init__(self, host, base, installments):
        self.host = host
        self.base = base
        self.installments = installments
        self.count = 0

    def board(self, role, fund=0):
        """A provisioned board (wallet, device key, identity and keys registered in person)
        and its config; the config's path."""
        self.count += 1
        folder = os.path.join(self.base, "%s-%d" % (role, self.count))
        os.makedirs(os.path.join(folder, "wallet"))
        key = urandom(32)
        with open(os.path.join(folder, "device.key"), "wb") as f:
            f.write(key)
        wallet = Wallet.create(Storage(os.path.join(folder, "wallet")), key, self.host.ra_pubkeys)
        fields = {"name": "Bench %s %d" % (role, self.count), "licence": "BENCH-%d" % self.count,
                  "vehicle_id": "1PLUGPAY8%08d" % self.count}
        wallet.set_identity(self.host.authority.register_identity(fields, wallet.device_pubkey()))
        wallet.refill_reply(self.host.authority.handle(wallet.refill_request(48)))
        config = {"board": "sim", "name": "bench-%s-%d" % (role, self.count), "role": role,
                  "broker": self.host.devices.url, "power_w": 11000, "scale": 20000,
                  "wallet": os.path.join(folder, "wallet"), "device_key": os.path.join(folder, "device.key"),
                  "session": {"region": REGION, "position": "47.81,13.05" if role == "vehicle" else "47.81,13.06",
                              "scenario": "g2v", "mode": "channel", "installments": self.installments,
                              "price": 300, "energy_wh": 100 * self.installments, "window_min": 120,
                              "bid_window_ms": 1000, "timeout_ms": 60000, "fund": fund}}
        path = os.path.join(folder, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def start(self, config, runtime, heap=None, code=None):
        """A device process; ``code``: ``(lib, main)``, the MicroPython device's code from a
        compiled tree (``compiled``) instead of this checkout's source."""
        if runtime == "micropython":
            lib, main = code or (None, MAIN)
            command = mpy.unix_command(heap or GENEROUS_HEAP) + [main, config, "1"]
            env = mpy.unix_env(self.base)
            if lib is not None:
                env["MICROPYPATH"] = lib + os.pathsep + ".frozen"
        else:
            command = [sys.executable, "-m", "plugpay.boards.sim.main", config, "1"]
            env = dict(os.environ)
        return subprocess.Popen(command, cwd=self.base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def session(self, runtime, vehicle_heap=None, vehicle_code=None):
        """One market session between a vehicle and a charger on ``runtime``: the two
        records (None where a side produced none) and the vehicle's output."""
        charger = self.start(self.board("charger"), runtime)
        vehicle = self.start(self.board("vehicle", fund=self.installments * 100), runtime, vehicle_heap, vehicle_code)
        outputs = []
        for proc in (vehicle, charger):
            try:
                out, _ = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            outputs.append(out)
        records = [_record(out) for out in outputs]
        return records, outputs[0]


def _record(output):
    for line in output.splitlines():
        if line.startswith("@@ "):
            return json.loads(line[3:])
    return None


def _ok(records):
    v, c = records
    return v is not None and c is not None and v["finished"] and c["finished"] and v["stop_code"] == "OK" \
        and c["stop_code"] == "OK" and c["payout"] == c["budget"]


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else None


def compiled(tree, dest):
    """``(lib, main)`` of ``tree`` (a folder holding ``protocol/``, ``firmware/`` and
    ``boards/``) compiled by mpy-cross into ``dest``, as ``Bench.start`` takes it."""
    from plugpay.tools import mpycross

    return mpycross.compile_package(tree, dest), os.path.join(tree, "boards", "sim", "main.py")


def _min_heap(bench, low, high, say, code=None):
    """The smallest heap (to 8 KiB) in which the MicroPython vehicle completes a session,
    by bisection between ``low`` (fails, or assumed to) and ``high``, where it must
    complete: a vehicle that fails there fails for another reason than memory (a baseline
    tree that cannot read today's wallet files), and bisecting would measure nothing."""
    records, output = bench.session("micropython", vehicle_heap=high, vehicle_code=code)
    if not _ok(records):
        raise RuntimeError("the MicroPython vehicle does not complete a session even with %d bytes of heap: %s"
                           % (high, _last_line(output)))
    trials = [{"heap": high, "ok": True, "error": None}]
    while high - low > 8192:
        mid = (low + high) // 2 // 1024 * 1024
        records, output = bench.session("micropython", vehicle_heap=mid, vehicle_code=code)
        ok = _ok(records)
        trials.append({"heap": mid, "ok": ok, "error": None if ok else _last_line(output)})
        say("  vehicle heap %d bytes: %s" % (mid, "completed" if ok else "failed (%s)" % trials[-1]["error"]))
        if ok:
            high = mid
        else:
            low = mid
    return high, trials


def _last_line(output):
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def run(sessions=4, installments=20, quick=False, memory=True, baseline=None, say=_say):
    """The whole measurement; the JSON-ready report."""
    from plugpay.host import broker
    from plugpay.host.stack import HostStack

    reason = mpy.unix_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    started = time.monotonic()
    report = {"installments": installments, "target_heap_bytes_32bit": TARGET_32BIT}
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-device-") as base:
        with broker.MosquittoProcess(base) as mosquitto, \
                HostStack(os.path.join(base, "host"), broker_url=mosquitto.url) as host:
            bench = Bench(host, base, installments)
            for runtime in ("micropython", "cpython"):
                count = sessions if runtime == "micropython" else max(1, sessions // 2)
                say("%d %s-to-%s sessions through the market (%d installments) ..." % (count, runtime, runtime,
                                                                                       installments))
                oks, rounds = 0, []
                for _ in range(count):
                    records, _ = bench.session(runtime)
                    oks += _ok(records)
                    if records[0] is not None:
                        rounds.extend(records[0]["installment_ms"])
                key = "unix" if runtime == "micropython" else "cpython"
                if runtime == "micropython":
                    report["sessions"], report["sessions_ok"] = count, oks
                else:
                    report["sessions_cpython"], report["sessions_ok_cpython"] = count, oks
                report["installment_ms_" + key] = _median(rounds)
            if not quick:
                report["baseline"] = "source" if baseline is None else str(baseline)
                variants = [("", ".mpy of this tree", compiled(ROOT, os.path.join(base, "lib-mpy")))]
                if baseline is None:
                    variants.append(("baseline_", "source", None))
                else:
                    tree = os.path.abspath(baseline)
                    variants.append(("baseline_", ".mpy of " + tree, compiled(tree, os.path.join(base, "lib-base"))))
                for prefix, what, code in variants:
                    say("the smallest heap a MicroPython vehicle completes a session in (unix port, 64-bit), code "
                        "from %s ..." % what)
                    report[prefix + "min_heapsize_unix_bytes"], report[prefix + "heap_trials"] = _min_heap(
                        bench, 64 * 1024, GENEROUS_HEAP, say, code)
    if memory:
        from plugpay.tools import bench_memory

        say("one side's heap on the 32-bit WebAssembly port (plugpay bench memory) ...")
        memory_report = bench_memory.run(installments=10 if quick else 100, baseline=baseline, progress=say)
        for key in ("code_heap_bytes_32bit", "heap_peak_bytes_32bit"):
            report[key] = memory_report[key]
            report["baseline_" + key] = memory_report["baseline_" + key]
        report["baseline"] = memory_report["baseline"]
        report["heap_installments_32bit"] = memory_report["installments"]
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def table(r):
    rows = [
        "MicroPython (unix port) devices through the market, %d installments each:" % r["installments"],
        "  sessions completed and settled   %d of %d   (CPython devices: %d of %d)" % (
            r["sessions_ok"], r["sessions"], r["sessions_ok_cpython"], r["sessions_cpython"]),
        "  installment round trip (median)  %s ms      (CPython devices: %s ms)" % (
            r["installment_ms_unix"], r["installment_ms_cpython"]),
    ]
    base = "baseline (%s)" % ("source" if r.get("baseline") == "source" else ".mpy of " + str(r.get("baseline")))
    if "min_heapsize_unix_bytes" in r:
        rows.append("  smallest -X heapsize that completes a session (64-bit), code from .mpy  %d bytes  (%s: %d; "
                    "ratio %.2fx)" % (r["min_heapsize_unix_bytes"], base, r["baseline_min_heapsize_unix_bytes"],
                                      r["min_heapsize_unix_bytes"] / r["baseline_min_heapsize_unix_bytes"]))
    if "code_heap_bytes_32bit" in r:
        rows.append("32-bit WebAssembly port, code from .mpy (one side, %d installments):" % r["heap_installments_32bit"])
        for key in ("code_heap_bytes_32bit", "heap_peak_bytes_32bit"):
            rows.append("  %-24s %7d bytes  (%s: %d; ESP32 without PSRAM: %d; ratio to it %.2fx)" % (
                key, r[key], base, r["baseline_" + key], r["target_heap_bytes_32bit"],
                r[key] / r["target_heap_bytes_32bit"]))
    return rows


def main(args):
    """``plugpay bench device``."""
    try:
        report = run(sessions=args.sessions or 4, installments=args.installments or 20, quick=args.quick,
                     memory=not args.no_micropython, baseline=args.baseline)
    except RuntimeError as e:
        print("plugpay bench device: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("\n".join(table(report)))
    return 0
