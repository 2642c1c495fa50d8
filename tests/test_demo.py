"""``plugpay demo`` end to end: real replica processes, the embedded broker, the gateway and
two devices over MQTT. Small sessions, so the whole file takes seconds."""
import re

import pytest

from plugpay.tools import cli


def _demo(capsys, *options):
    code = cli.main(["demo", "--energy-wh", "2000", "--scale", "20000"] + list(options))
    out = capsys.readouterr().out
    return code, out


def _figure(out, pattern):
    found = re.search(pattern, out)
    assert found, out
    return found.groups()


def test_the_default_session_settles_with_two_ledger_transactions(capsys):
    code, out = _demo(capsys, "-n", "10")
    assert code == 0, out
    assert "on-chain transactions of the session: 2 (1 channel_close, 1 channel_open)" in out
    assert _figure(out, r"payout to the producer: (\d+) of (\d+)") == ("600", "600")
    assert _figure(out, r"max consumer exposure: (\d+) \(bound b/N = (\d+)") == ("60", "60")
    assert _figure(out, r"max producer exposure: (-?\d+)") == ("0",)
    audit = out.split("RA audit of the session's accounts:")[1]
    assert "-> Demo vehicle" in audit and "-> Demo charger" in audit and "unknown" not in audit


@pytest.mark.parametrize("options, code_name", [
    (["--mode", "htlc", "-n", "4"], "OK"),
    (["-n", "10", "--misbehave", "consumer-stops"], "FAILED_PaymentOverdue"),
    (["-n", "10", "--scenario", "v2g", "--misbehave", "stale-close"], "OK"),
])
def test_other_modes_scenarios_and_cheats_keep_the_bounds(capsys, options, code_name):
    code, out = _demo(capsys, *options)
    assert code == 0, out
    assert "link %s, settled" % code_name in out
    exposure, bound = _figure(out, r"max consumer exposure: (\d+) \(bound b/N = (\d+)")
    assert int(exposure) <= int(bound)
    assert int(_figure(out, r"max producer exposure: (-?\d+)")[0]) <= 0


@pytest.mark.parametrize("side", ["charger", "vehicle"])
def test_either_owner_pauses_half_way_and_the_session_still_pays_everything(capsys, side):
    code, out = _demo(capsys, "-n", "10", "--pause", side)
    assert code == 0, out
    assert "%s: the owner pauses the session" % side in out and "%s: the owner resumes" % side in out
    assert _figure(out, r"payout to the producer: (\d+) of (\d+)") == ("600", "600")
    assert _figure(out, r"max consumer exposure: (\d+) \(bound b/N = (\d+)") == ("60", "60")


def test_bad_options_are_refused_before_anything_starts(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--mode", "cheque"])
    capsys.readouterr()
    assert cli.main(["demo", "--mode", "htlc", "-n", "65"]) == 2  # bad input: exit 2, as every command gives it
    assert "at most 64 HTLCs" in capsys.readouterr().err
    assert cli.main(["demo", "--scenario", "v2v", "--pause", "charger"]) == 2
    assert "the v2v scenario has a vehicle and a vehicle-2" in capsys.readouterr().err
