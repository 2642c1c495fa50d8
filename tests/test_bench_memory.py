"""``plugpay bench memory`` at a small size, through the real RA, ledger and MicroPython:
one side of a channel session replayed byte for byte from the recording, with its code
from .mpy files, and figures that agree with each other."""
import json

import pytest
from test_cli import run

from plugpay.tools.memory_bench_mpy import MODULES

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


def test_the_side_ran_the_whole_session(report):
    mp = report["micropython"]
    assert mp["seq"] == INSTALLMENTS - 1 and report["messages"] > 4 * INSTALLMENTS
    assert mp["close_bytes"] > 0 and mp["sealed_bytes"] % 256 > 0  # a close, a sealed refill request


def test_figures_agree(report):
    assert set(report["imports_32bit"]) == set(MODULES)
    # the code heap is the sum of the imports plus the bench's own table of them
    assert 0 <= report["code_heap_bytes_32bit"] - sum(report["imports_32bit"].values()) < 1024
    assert report["heap_peak_bytes_32bit"] == report["code_heap_bytes_32bit"] + report["heap_session_bytes_32bit"]
    assert report["heap_session_bytes_32bit"] >= report["micropython"]["heap_open_bytes"] > 0
