"""The portable role's rules, which both peers of a market deal must compute alike, and its
checks of a plan: every adapter (``plugpay session``, the Pi's service, an ESP32, a
MicroPython process) gets the same answers and the same refusals. The role's whole life
runs on real processes in tests/test_session_cli.py and tests/test_privacy.py."""
import json
import os

import pytest

from plugpay.boards.common.profile import parse
from plugpay.firmware import market
from plugpay.firmware.role import Plan, PlanError, RoleFailure, charge_parameters, parse_position, sides
from plugpay.protocol import ledger_ops as L

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.parametrize("text, site", [
    ("47.80,13.04", (47800000, 13040000)),
    ("-33.868820, 151.209296", (-33868820, 151209296)),
    ("0,-0.5", (0, -500000)),
    ("+90,180", (90000000, 180000000)),
    (".5,7.", (500000, 7000000)),
])
def test_positions_are_exact_micro_degrees(text, site):
    assert parse_position(text) == site


@pytest.mark.parametrize("text, match", [
    ("47.8", "expected LAT,LON"),
    ("47.8,13,1", "LAT,LON"),
    ("47.1234567,13", "6 decimals"),
    ("91,13", "beyond \\+-90 degrees"),
    ("47,-181", "beyond \\+-180 degrees"),
    ("north,east", "degrees"),
    ("4 7,13", "degrees"),
    (",", "degrees"),
    (None, "LAT,LON"),
])
def test_bad_positions_are_named(text, match):
    with pytest.raises(PlanError, match=match):
        parse_position(text)


def test_who_produces_and_who_initiates():
    assert sides("vehicle", "g2v", False) == (False, True)
    assert sides("vehicle", "v2g", False) == (True, True)
    assert sides("vehicle", "v2v", True) == (True, False)
    assert sides("vehicle", "v2v", False) == (False, True)
    assert sides("charger", "g2v", False) == (True, False)
    assert sides("charger", "v2g", False) == (False, False)
    for role, scenario, produce in (("charger", "v2v", False), ("charger", "g2v", True), ("vehicle", "g2v", True)):
        with pytest.raises(PlanError):
            sides(role, scenario, produce)


def _request(energy_wh=20000, start=29000000, minutes=120, unit=L.WINDOW_UNIX_MINUTES):
    return market.OpenRequest(b"\x02" * 33, start, start + minutes, unit, energy_wh, 10, 1)


def test_both_sides_derive_the_same_terms_from_the_market():
    params = charge_parameters(_request(), 300, 100)
    assert (params.energy_wh, params.window_start, params.window_end) == (20000, 29000000 * 60, 29000120 * 60)
    assert params.max_power_w == 10000 and params.tolerance_wh == 2 and params.unit_price == 300
    assert charge_parameters(_request(energy_wh=7, minutes=7), 1, 1).max_power_w == 60  # rounded up
    assert charge_parameters(_request(energy_wh=150), 300, 100).tolerance_wh == 1  # at least 1 Wh
    with pytest.raises(RoleFailure, match="no valid terms"):  # fewer Wh than installments
        charge_parameters(_request(energy_wh=50), 300, 100)
    with pytest.raises(RoleFailure, match="block heights"):
        charge_parameters(_request(unit=L.WINDOW_HEIGHTS), 300, 100)


@pytest.mark.parametrize("change, match", [
    ({"role": "bus"}, "role must be one of vehicle, charger"),
    ({"scenario": "x2y"}, "scenario must be one of"),
    ({"mode": "cash"}, "mode must be one of channel, htlc"),
    ({"mode": "htlc", "installments": 65}, "at most 64 HTLCs"),
    ({"installments": 0}, "installments must be an integer of at least 1"),
    ({"energy_wh": -5}, "energy_wh must be"),
    ({"price": 1.5}, "price must be an integer"),
    ({"fund": 0}, "fund must be an integer of at least 1"),
    ({"region": ""}, "region must be 1 to 32 bytes"),
    ({"region": "x" * 33}, "region must be 1 to 32 bytes"),
    ({"position": "here"}, "position expected LAT,LON"),
    ({"role": "charger", "produce": True}, "charger takes no part in v2v"),
])
def test_a_plan_that_cannot_work_is_refused_naming_the_value(change, match):
    options = {"role": "vehicle", "region": "AT-5020", "position": "47.8,13.0"}
    options.update(change)
    with pytest.raises(PlanError, match=match):
        Plan(**options)


def test_defaults_and_a_board_profile():
    plan = Plan("vehicle", "AT-5020", "47.8,13.0", mode="htlc")
    assert (plan.installments, plan.producer, plan.initiator) == (10, False, True)
    assert Plan("vehicle", "AT-5020", "47.8,13.0").installments == 100
    with open(os.path.join(ROOT, "boards/esp32/config.json")) as f:
        text = f.read()
    plan = Plan.from_profile(parse(text, "esp32"), fund=500, timeout_ms=5000)
    assert (plan.role, plan.region, plan.position, plan.power_w) == ("charger", "AT-5020", (47800000, 13040000), 11000)
    assert (plan.fund, plan.timeout_ms, plan.producer) == (500, 5000, True)
    data = json.loads(text)
    data["session"]["scenario"] = "v2v"
    with pytest.raises(PlanError, match="v2v"):
        Plan.from_profile(parse(json.dumps(data), "esp32"))
