"""``plugpay bench session`` at a small size, through real Mosquitto, amqtt, replicas and
MicroPython: the JSON holds issue 5's figures and they agree with each other."""
import json

import pytest
from test_cli import run

SESSIONS, INSTALLMENTS = 6, 40


@pytest.fixture(scope="module")
def report():
    out = run("bench", "session", "--json", "--quick", "--sessions", str(SESSIONS), "--installments", str(INSTALLMENTS))
    assert out.returncode == 0, out.stderr
    assert "concurrent:" in out.stderr  # progress goes to stderr, the JSON alone to stdout
    return json.loads(out.stdout)


def test_the_issue_figures_are_there(report):
    for key in ("onchain_tx_channel", "onchain_tx_htlc", "installments_per_s", "p99_ms", "max_consumer_exposure_ratio",
                "max_producer_exposure", "link_step_ms", "concurrent_sessions_ok", "sessions_per_minute",
                "installments_per_s_amqtt", "p99_ms_amqtt"):
        assert key in report, key


def test_onchain_counts(report):
    assert 2 <= report["onchain_tx_channel_honest"] <= report["onchain_tx_channel"] <= 4
    assert report["onchain_by_op_channel_honest"] == {"channel_open": 1, "channel_close": 1}
    n = report["htlc_installments"]
    assert report["onchain_by_op_htlc"] == {"htlc_create": n, "htlc_claim": n}
    assert report["onchain_tx_htlc"] == 2 * n
    assert report["offchain_updates_channel"] == n - 1
    for broker in ("mosquitto", "amqtt"):  # N = INSTALLMENTS, still two transactions
        assert report[broker]["onchain_by_op"] == {"channel_open": 1, "channel_close": 1}


def test_exposure_bounds_hold_in_every_scenario(report):
    rows = report["scenarios"]
    assert len(rows) == 21  # 3 scenarios x 4 behaviours x 2 modes, no stale close of HTLCs
    assert report["scenarios_settled"] == report["scenarios_paid_as_signed"] == 21
    assert 0 < report["max_consumer_exposure_ratio"] <= 1
    assert report["max_producer_exposure"] <= 0
    for row in rows:
        assert row["consumer_max_exposure"] <= row["bound"] and row["producer_max_exposure"] <= 0, row
        expected = "OK" if row["session"].endswith(("none", "stale-close")) else None
        if expected:
            assert row["stop_codes"] == [expected, expected], row
    stale = [r for r in rows if r["session"].endswith("stale-close")]
    assert all(r["onchain_by_op"]["channel_dispute"] == 2 and r["payout"] == r["producer_holds"] for r in stale)


def test_installment_loop_figures_are_consistent(report):
    for broker in ("mosquitto", "amqtt"):
        loop = report[broker]
        assert loop["installments"] == INSTALLMENTS and loop["payout_ok"]
        # Order statistics of one sample, never a bound on time.
        assert 0 <= loop["p50_ms"] <= loop["p99_ms"] <= loop["max_ms"]
        assert loop["cycle_p50_ms"] <= loop["cycle_p99_ms"]
        assert loop["installments_per_s"] >= 0 and loop["bound_installments_per_s"] >= 0
        # Each state is stored before it is signed and sent: the consumer's proposal (with its
        # acceptance of the previous answer when both came in one poll, else apart), the
        # producer's countersignature.
        assert 0.9 <= loop["consumer_writes_per_installment"] <= 2.1  # one at either end may fall outside
        assert loop["producer_writes_per_installment"] == pytest.approx(1, abs=0.1)
        assert 0 <= loop["durable_write_ms"] <= loop["durable_write_p99_ms"]
        assert 0 <= loop["mqtt_round_trip_ms"] <= loop["mqtt_round_trip_p99_ms"]
    assert report["installments_per_s"] == report["mosquitto"]["installments_per_s"]
    assert report["p99_ms_amqtt"] == report["amqtt"]["p99_ms"]
    v2g = report["v2g"]  # the charger meters and pays: the same loop, one hop longer
    assert (v2g["scenario"], v2g["installments"], v2g["payout_ok"]) == ("v2g", INSTALLMENTS, True)
    assert 0 <= v2g["p50_ms"] <= v2g["p99_ms"] and report["installments_per_s_v2g"] == v2g["installments_per_s"] >= 0
    assert v2g["producer_writes_per_installment"] == pytest.approx(1, abs=0.1)


def test_link_step_and_concurrent_sessions(report):
    assert report["link_step_ms"] >= 0 and report["link_verify_ms"] >= 0
    assert report["link_messages_per_round"] == 10  # --quick: 3 installments, 4N - 2 messages
    if report.get("micropython_unavailable") is None:
        assert report["link_step_ms_micropython"] >= 0
    assert report["concurrent_sessions"] == SESSIONS
    assert report["concurrent_sessions_ok"] == SESSIONS
    assert report["sessions_per_minute"] > 0 and report["onchain_tx_max"] == 2


def test_too_few_installments_is_a_clear_error():
    out = run("bench", "session", "--installments", "2")
    assert out.returncode == 1
    assert "at least 1 session and 3 installments" in out.stderr
