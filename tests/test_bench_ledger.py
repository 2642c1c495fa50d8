"""The ledger bench's ceilings: one executor alone, and several at once in real processes."""
import pytest

from plugpay.tools import bench_ledger


def test_one_executor_times_real_transactions():
    wall, cpu = bench_ledger.timed_execution(20, "NORMAL", block=8)
    assert wall >= 0 and cpu >= 0


def test_executors_at_once_each_report_their_cost():
    out = bench_ledger.contended_execution(2, 20, "NORMAL")
    assert len(out) == 2
    for wall, cpu in out:
        assert wall >= 0 and cpu >= 0


def test_a_failing_executor_is_reported_not_waited_for():
    with pytest.raises(RuntimeError, match="sqlite_synchronous"):
        bench_ledger.contended_execution(2, 5, "SOMETIMES")


def test_the_verification_floor_counts_four_signatures():
    four = bench_ledger.verify_cost_ms(count=50)
    assert four > 0
