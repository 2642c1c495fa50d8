"""``plugpay bench memory`` at a small size, through the real RA, ledger and MicroPython:
one side of a channel session as a device runs it (the role's imports, the session under
the runner), its transport replayed byte for byte from the recording, its code from .mpy
files, and figures that agree with each other."""
import json

import pytest
from test_cli import run

INSTALLMENTS = 4


@pytest.fixture(scope="module")
def report():
    out = run("bench", "memory", "--json", "--installments", str(INSTALLMENTS))
    assert out.returncode == 0, out.stderr
    assert "recording the 4-installment session" in out.stderr  # progress on stderr, JSON alone on stdout
    return json.loads(out.stdout)


def test_the_issue_figures_are_there(report):
    assert report["installments"] == INSTALLMENTS and report["backend"] == "pure"
    assert report["baseline"] == "source"
    for name in ("code_heap_bytes_32bit", "heap_peak_bytes_32bit", "baseline_code_heap_bytes_32bit",
                 "baseline_heap_peak_bytes_32bit"):
        assert report[name] > 0, name


def test_the_side_ran_the_whole_session_as_a_device(report):
    record = report["micropython"]["record"]
    assert record["finished"] and record["stop_code"] == "OK" and record["installments_paid"] == INSTALLMENTS
    assert record["payout"] == 0 and record["max_exposure"] <= record["exposure_bound"]
    assert report["messages"] > 4 * INSTALLMENTS
    loaded = report["imports_32bit"]
    for module in ("firmware.role", "firmware.session", "firmware.session_channel", "firmware.runner",
                   "firmware.mqtt_socket", "firmware.gateway_client", "boards.sim.main", "firmware.wallet"):
        assert "plugpay." + module in loaded, module
    assert "plugpay.firmware.session_htlc" not in loaded  # a channel session loads no HTLC code


def test_figures_agree(report):
    assert 0 <= report["code_heap_bytes_32bit"] - sum(report["imports_32bit"].values()) < 1024
    assert report["heap_peak_bytes_32bit"] == report["code_heap_bytes_32bit"] + report["heap_session_bytes_32bit"]
    assert report["heap_session_bytes_32bit"] >= report["micropython"]["heap_open_bytes"] > 0
    assert set(report["imports_32bit"]) == set(report["baseline_imports_32bit"])  # the same code, twice
