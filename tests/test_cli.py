"""The ``plugpay`` command line as a user runs it."""
import json
import subprocess
import sys

PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]


def run(*args, timeout=600):
    return subprocess.run(PLUGPAY + list(args), capture_output=True, text=True, timeout=timeout)


def test_help_names_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("demo", "selfcheck", "bench", "ledger", "ra", "broker"):
        assert command in out.stdout


def test_unknown_command_is_a_clear_error():
    out = run("fly")
    assert out.returncode == 2
    assert "invalid choice: 'fly'" in out.stderr


def test_bench_crypto_json_has_the_figures_to_plot():
    out = run("bench", "crypto", "--json", "--quick")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["fast_backend"] == "coincurve"
    assert report["accounts_300_ms"] >= 0
    for name in ("coincurve", "ecdsa", "pure", "micropython-pure"):
        row = report["backends"][name]
        for key in ("sign_ms", "verify_ms", "keygen_ms", "accounts_300_ms"):
            assert row[key] >= 0, (name, key)
    assert report["backends"]["micropython-pure"]["heap_table_bytes"] > 0
    assert report["protocol_mpy_bytes"] == sum(report["protocol_mpy_files"].values()) > 0


def test_bench_ledger_json_confirms_real_transactions():
    out = run("bench", "ledger", "--json", "--seconds", "1", "--rate", "100", "--lanes", "16")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in ("tps", "p50_ms", "p99_ms", "tx_bytes", "ceiling_tps", "replicas"):
        assert key in report
    assert report["replicas"] == 4 and report["tx_bytes"] < 450
    assert report["offered_confirmed"] == 100 and report["rejected"] == 0
    assert report["tps"] > 0 and report["ceiling_tps"] > 0
    assert report["contended_ceiling_tps"] > 0 and report["contended_ratio"] > 0
    assert report["execute_cpu_ms_per_tx"] >= 0 and report["contended_cpu_ms_per_tx"] >= 0
