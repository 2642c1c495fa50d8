"""A whole charging session on CometBFT: ``plugpay demo --engine cometbft`` with the RA, four
validators each with its ABCI application, the broker, the gateway and two devices over
MQTT, paying through a state channel and through a series of HTLCs."""
import re

import pytest

from ledger_engines import skip_without_cometbft
from plugpay.tools import cli


@pytest.mark.parametrize("options, onchain, exposure", [
    (["-n", "10"], "2 (1 channel_close, 1 channel_open)", "60"),
    (["--mode", "htlc", "-n", "4"], "8 (4 htlc_claim, 4 htlc_create)", "150"),
])
def test_a_whole_session_pays_everything_through_cometbft(capsys, options, onchain, exposure):
    skip_without_cometbft()
    code = cli.main(["demo", "--engine", "cometbft", "--energy-wh", "2000", "--scale", "20000"] + options)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ledger: cometbft" in out and "4 CometBFT validators" in out
    assert "on-chain transactions of the session: %s" % onchain in out
    assert re.search(r"payout to the producer: 600 of 600", out), out
    assert re.search(r"max consumer exposure: %s \(bound b/N = %s" % (exposure, exposure), out), out
    audit = out.split("RA audit of the session's accounts:")[1]
    assert "-> Demo vehicle" in audit and "-> Demo charger" in audit and "unknown" not in audit
