"""``plugpay bench wallet`` at a small size, through the real RA, ledger and MicroPython: the
JSON holds issue 4's figures and they agree with each other and with the files measured."""
import json

import pytest
from test_cli import run

from plugpay.firmware.keystore import KEYS_HEADER, RECORD

KEYS, INSTALLMENTS = 200, 4


@pytest.fixture(scope="module")
def report():
    out = run("bench", "wallet", "--json", "--keys", str(KEYS), "--installments", str(INSTALLMENTS))
    assert out.returncode == 0, out.stderr
    assert "keys registered" in out.stderr  # progress goes to stderr, the JSON alone to stdout
    return json.loads(out.stdout)


def test_the_issue_figures_are_there(report):
    for key in ("keys", "flash_bytes_per_key", "heap_peak_bytes_micropython", "sign_ms_micropython",
                "firmware_mpy_bytes"):
        assert key in report, key
    assert report["keys"] == KEYS and report["installments"] == INSTALLMENTS
    assert report["micropython"]["backend"] == "pure" and report["cpython"]["installments"] == INSTALLMENTS


def test_flash_is_the_files_of_the_wallet(report):
    files = report["flash_files"]
    assert files["keys"] == KEYS_HEADER + RECORD * KEYS
    assert report["flash_total_bytes"] == sum(files.values())
    per_key, fixed = report["flash_bytes_per_key"], report["flash_fixed_bytes"]
    assert per_key * KEYS + fixed == pytest.approx(report["flash_total_bytes"])
    assert 0 < fixed < 1024 and RECORD <= per_key < 100


def test_reading_a_key_costs_the_same_at_every_index(report):
    reads = report["key_reads_micropython"]
    assert [r["index"] for r in reads] == [0, KEYS // 2, KEYS - 1]
    first, last = reads[0], reads[-1]
    assert 0 < last["record_alloc_bytes"] <= first["record_alloc_bytes"] + 16
    # The counter stored by reserve is CBOR: from 1 to at most 5 bytes as it grows, a few dozen
    # bytes of temporaries more; nothing may grow with the number of keys.
    assert 0 < last["reserve_without_derive_bytes"] <= first["reserve_without_derive_bytes"] + 96
    for r in reads:
        assert r["reserve_alloc_bytes"] == r["derive_alloc_bytes"] + r["reserve_without_derive_bytes"]


def test_session_heap_and_times(report):
    mp = report["micropython"]
    peak = report["heap_peak_bytes_micropython"]
    assert 0 < mp["heap_wallets_open_bytes"] <= peak
    assert mp["heap_first_installment_bytes"] <= peak and mp["heap_last_installment_bytes"] <= peak
    assert report["heap_peak_absolute_bytes_micropython"] == mp["heap_idle_bytes"] + peak
    assert report["heap_imports_bytes_micropython"] > 0
    for name in ("sign_ms", "countersign_ms", "accept_ms"):
        assert report[name + "_micropython"] > 0 and report[name + "_cpython"] > 0


def test_mpy_sizes(report):
    assert report["firmware_mpy_bytes"] == sum(report["firmware_mpy_files"].values()) > 0
    assert report["protocol_mpy_bytes"] > 0
    assert all(path.startswith("firmware/") for path in report["firmware_mpy_files"])


def test_too_few_keys_is_a_clear_error():
    out = run("bench", "wallet", "--keys", "2")
    assert out.returncode == 1
    assert "at least 3 keys" in out.stderr
