"""The wallet benchmark's device half: run under MicroPython by ``plugpay bench wallet``, and
on CPython (imported) for the baseline of the same run.

It opens wallets that ``tools/bench_wallet.py`` built on CPython with the real RA and the real
ledger, and measures:

* ``keys``: in a fresh copy of the 10,000-key wallet, a key reserved at index 0, in the
  middle and at the end, and its record read back: the bytes each allocates, and apart the
  public-key derivation inside ``reserve`` (its cost depends on the key, not the index).
  The counter is moved *forward* to the index first (never back: a key is never reused;
  the skipped keys are simply never handed out, as after an abandoned registration).
* ``session``: the 100-installment channel session between the big wallet (consumer) and a
  small one (producer): per installment the time of ``propose`` (sign + store), of
  ``countersign`` and of ``accept``, and the heap in use after a collection.

The work runs in phases: the WebAssembly port frees memory only when control returns to
JavaScript, so the harness calls ``__harness_next__`` once per phase and every heap figure is
taken at the start of a phase, after a real collection. Inside one phase nothing is freed, so
a ``gc.mem_alloc()`` difference there is everything the code between allocated. On CPython
(no ``gc.mem_alloc``) the heap figures are None.

Prints one ``@@ {json}`` record at the end. ``CONFIG`` (a dict, see ``phases``) is set by the
harness before this source runs.
"""
import gc
import json

from plugpay.protocol.port import ticks_diff, ticks_us


def heap():
    """Bytes in use after a collection (real on the WebAssembly port only at a phase start)."""
    gc.collect()
    mem_alloc = getattr(gc, "mem_alloc", None)
    return mem_alloc() if mem_alloc is not None else None


def _allocated():
    mem_alloc = getattr(gc, "mem_alloc", None)
    return mem_alloc() if mem_alloc is not None else None


def _diff(after, before):
    return None if after is None or before is None else after - before


def _ms(start):
    return ticks_diff(ticks_us(), start) / 1000.0


def phases(config, out):
    """Yield once per phase; fill ``out`` with the figures.

    ``config``: ``keystore``, ``consumer``, ``producer`` (wallet folders), the hex device
    key of each (``keystore_key``, ``consumer_key``, ``producer_key``), ``channel`` (hex id),
    ``indices`` (key indices to reserve, increasing), ``installments``, ``per`` (money per
    installment) and ``wh`` (energy per installment)."""
    yield True
    out["heap_start_bytes"] = heap()
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet
    from plugpay.protocol import signing
    from plugpay.protocol.port import sha256

    yield True
    imports = heap()
    out["heap_imports_bytes"] = imports
    out["backend"] = signing.BACKEND
    wallet = Wallet.open(Storage(config["keystore"]), bytes.fromhex(config["keystore_key"]))
    yield True
    out["heap_keystore_open_bytes"] = _diff(heap(), imports)
    keystore = wallet.keystore
    reads = []
    for index in config["indices"]:
        if index < keystore.reserved:
            raise ValueError("key %d is spent already: indices must increase" % index)
        keystore.reserved = index  # forward only: see the module docstring
        start, a0 = ticks_us(), _allocated()
        got, account = wallet.new_account()
        a1, reserve_ms = _allocated(), _ms(start)
        record = keystore.record(got)
        a2 = _allocated()
        derive = signing.public_key(keystore.secret(got))
        a3 = _allocated()
        if got != index or record[1] != account.ra_sig or derive != account.pubkey:
            raise AssertionError("key %d: reserved %d, or its record disagrees" % (index, got))
        record = account = derive = None
        yield True
        reads.append({
            "index": index,
            "reserve_ms": reserve_ms,
            "reserve_alloc_bytes": _diff(a1, a0),
            "record_alloc_bytes": _diff(a2, a1),
            "derive_alloc_bytes": _diff(a3, a2),
            "reserve_without_derive_bytes": _diff(_diff(a1, a0), _diff(a3, a2)),
            "heap_after_bytes": _diff(heap(), imports),
        })
    out["reads"] = reads
    wallet = keystore = None
    yield True
    idle = heap()  # modules imported, no wallet open: the baseline of the working set
    out["heap_idle_bytes"] = idle
    consumer = Wallet.open(Storage(config["consumer"]), bytes.fromhex(config["consumer_key"]))
    producer = Wallet.open(Storage(config["producer"]), bytes.fromhex(config["producer_key"]))
    channel_id = bytes.fromhex(config["channel"])
    yield True
    out["heap_wallets_open_bytes"] = _diff(heap(), idle)
    c, p = consumer.channel(channel_id), producer.channel(channel_id)
    per, wh = config["per"], config["wh"]
    # Running sums and maxima, not per-installment lists: the figures must not grow the heap.
    spent = [0, 0, 0]
    peak = alloc = first = last = None
    for k in range(1, config["installments"] + 1):
        t0, a0 = ticks_us(), _allocated()
        state = c.propose(per * k, wh * k, sha256(("meter receipt %d" % k).encode()))
        t1 = ticks_us()
        full = p.countersign(state)
        t2 = ticks_us()
        c.accept(full)
        t3, a1 = ticks_us(), _allocated()
        state = full = None
        spent[0] += ticks_diff(t1, t0)
        spent[1] += ticks_diff(t2, t1)
        spent[2] += ticks_diff(t3, t2)
        yield True
        live = _diff(heap(), idle)
        if live is not None:
            peak = live if peak is None else max(peak, live)
            first = live if first is None else first
            last = live
            alloc = max(alloc or 0, a1 - a0)
    latest = c.latest()
    if latest.seq != config["installments"] or latest.encode() != p.latest().encode():
        raise AssertionError("the session ended at seq %d, not %d" % (latest.seq, config["installments"]))
    n = config["installments"]
    out["installments"] = n
    out["propose_ms"] = spent[0] / 1000.0 / n
    out["countersign_ms"] = spent[1] / 1000.0 / n
    out["accept_ms"] = spent[2] / 1000.0 / n
    out["heap_peak_bytes"] = peak
    out["heap_first_installment_bytes"] = first
    out["heap_last_installment_bytes"] = last
    out["alloc_per_installment_bytes"] = alloc


try:
    CONFIG
except NameError:  # imported on CPython: bench_wallet calls phases()
    CONFIG = None

if CONFIG is not None:
    _out = {}
    _run = phases(CONFIG, _out)

    def __harness_next__():
        if next(_run, False):
            gc.collect()  # flags the collection the port runs once control is back in JS
            return True
        print("@@ " + json.dumps(_out))
        return False
