"""The story a report tells, from real runs: ``plugpay demo --record`` (4 replica processes,
the broker, the gateway, two devices) clean and with a consumer that closes its channel
with a stale state, then ``plugpay report``. The record keeps the misbehaviour that ran and
each transaction's id, block height and time; the page opens with who misbehaved, what
was disputed and who was paid what, marks the events on the plots and lists the ledger
transactions with their heights.
"""
import json
import re

import pytest

from plugpay.tools import cli, report, session_record
from test_report import Page, svg_of

SMALL = ["-n", "10", "--energy-wh", "2000", "--scale", "20000"]


@pytest.fixture(scope="module", params=["none", "stale-close"])
def run(request, tmp_path_factory):
    """One demo run with its record and report: (misbehaviour, record, page, demo output)."""
    folder = tmp_path_factory.mktemp(request.param)
    path = folder / "session.json"
    assert cli.main(["demo", "--misbehave", request.param, "--record", str(path)] + SMALL) == 0
    assert cli.main(["report", str(path)]) == 0
    return request.param, session_record.read(str(path)), Page((folder / "session.html").read_text())


def _heights(record):
    return dict((e["op"] if e["op"] != "channel_dispute" else "dispute by the " + e["side"], e["height"])
                for e in record["onchain"])


def test_the_record_keeps_the_misbehaviour_and_where_each_transaction_went(run):
    cheat, record, _ = run
    assert record["format"] == "plugpay-session/2"
    if cheat == "none":
        assert record["misbehaviour"] is None
        assert [e["op"] for e in record["onchain"]] == ["channel_open", "channel_close"]
    else:
        assert record["misbehaviour"] == {"side": "consumer", "name": "stale-close"}
        heights = _heights(record)
        assert heights["channel_open"] < heights["dispute by the consumer"] < heights["dispute by the producer"] \
            < heights["channel_settle"]
    opened = [text for _, text in record["sides"]["consumer"]["log"] if text.startswith("opening channel ")][0]
    open_entry = record["onchain"][0]
    assert open_entry["op"] == "channel_open" and open_entry["side"] == "consumer"
    assert open_entry["id"].startswith(opened.split()[2].rstrip(":"))  # the channel id: what ledger tx takes
    for entry in record["onchain"]:
        assert type(entry["height"]) is int and entry["height"] > 0 and type(entry["at"]) is int and entry["detail"]
    for side in ("consumer", "producer"):
        assert record["sides"][side]["installments_paid"] == 10


def test_the_page_opens_with_what_happened(run):
    cheat, record, page = run
    story = page.story
    assert story[0] == ("G2V: the charger (producer) sold 2000 Wh to the vehicle (consumer) at 300 per kWh, paid "
                        "through one state channel: a budget b of 600 in 10 installments of 60.")
    assert "The link ended normally (OK) on both sides, and both settled their money." in story
    assert ("The charger (producer) was paid 600 of 600 (10 of 10 installments, the deposit's included) for 2000 Wh, "
            "worth 600 at the agreed price: everything, as every installment was paid.") in story
    assert "The vehicle (consumer) got nothing back: its whole deposit was paid out." in story
    assert story[-1].startswith("Neither side risked more than its bound: the consumer at most 60 (bound b/N = 60)")
    heights = _heights(record)
    if cheat == "none":
        assert "misbehaviour: none." in page.paragraphs[0]
        assert "No misbehaviour was set for this run." in story
        assert ("Nothing was disputed: the channel closed cooperatively (channel_close at height %d)."
                % heights["channel_close"]) in story
    else:
        assert "misbehaviour: stale-close by the consumer." in page.paragraphs[0]
        assert "The vehicle (consumer) misbehaved (stale-close): closing alone with stale seq 1 (latest 9)." in story
        disputed = [line for line in story if line.startswith("Disputed: ")]
        # either side may settle first (the other's settle is a duplicate)
        settler = {"consumer": "vehicle (consumer)", "producer": "charger (producer)"}[
            [e["side"] for e in record["onchain"] if e["op"] == "channel_settle"][0]]
        assert disputed == [
            "Disputed: at height %d the vehicle (consumer) closes the channel alone with seq 1: 120 to the producer, "
            "unless a higher seq comes within the dispute window; at height %d the charger (producer) closes the "
            "channel alone with seq 9: 600 to the producer, unless a higher seq comes within the dispute window; at "
            "height %d the %s has the channel paid out on its highest seq once the dispute window was over." % (
                heights["dispute by the consumer"], heights["dispute by the producer"], heights["channel_settle"],
                settler)]


def test_events_are_numbered_on_the_plots_and_listed(run):
    cheat, record, page = run
    events = page.tables["events"]
    assert [row[0] for row in events] == [str(i) for i in range(1, len(events) + 1)]
    texts = [row[3] for row in events]
    assert "channel_open applied at height %d" % _heights(record)["channel_open"] in texts
    if cheat == "stale-close":
        assert "misbehaving: closing alone with stale seq 1 (latest 9)" in texts
        assert "the consumer closed alone with seq 1: answering with seq 9" in texts
    for name in ("energy-money", "exposure"):
        svg = svg_of(page.images["plot-" + name]).decode()
        numbered = set()
        for first, last in re.findall(r">(\d+)-(\d+)</text>", svg):
            numbered.update(range(int(first), int(last) + 1))
        numbered.update(int(n) for n in re.findall(r'fill: #[0-9a-f]{6}"[^>]*>(\d+)</text>', svg))
        assert numbered == set(range(1, len(events) + 1)), (name, numbered)


def test_both_sides_lines_show_and_exposure_is_an_envelope(run):
    _, record, page = run
    svg = svg_of(page.images["plot-energy-money"]).decode()
    assert re.search(r"stroke: #1f77b4; stroke-opacity: 0\.35; stroke-width: 5", svg)  # the consumer, wide
    assert re.search(r"stroke-dasharray: [\d.,]+; stroke-dashoffset: 0; stroke: #ff7f0e; stroke-width: 1\.4", svg)
    exposure = svg_of(page.images["plot-exposure"]).decode()
    assert "consumer exposure: its range" in exposure and "bound b/N = 60" in exposure
    t = [row[0] / 1000 for row in record["sides"]["consumer"]["timeline"]]
    v = [row[1] for row in record["sides"]["consumer"]["timeline"]]
    edges, low, high = report.envelope(t, v, spans=5)
    assert len(edges) == len(low) == len(high) == 6
    assert max(high) == record["sides"]["consumer"]["max_exposure"] == 60 and min(low) == min(v)


def test_the_ledger_table_has_heights_and_times(run):
    _, record, page = run
    rows = page.tables["transactions"]
    assert [row[1] for row in rows] == [str(e["height"]) for e in record["onchain"]]
    assert [row[6] for row in rows] == [e["id"] for e in record["onchain"]]
    for row, entry in zip(rows, record["onchain"]):
        assert re.fullmatch(r"\+\d+\.\d\d s \(\d\d:\d\d:\d\d UTC\)", row[2]) and row[5] == entry["detail"]


def test_an_envelope_shows_a_comb_as_one_band():
    """A hundred payments, each raising the exposure to 60 and the energy bringing it to 0."""
    times, values = [], []
    for k in range(100):
        times += [k * 10, k * 10 + 6]
        values += [60, 0]
    edges, low, high = report.envelope(times, values, spans=50)
    assert high == [60] * 51 and low == [0] * 51 and edges[0] == 0 and edges[-1] == pytest.approx(996)


def test_a_version_1_record_is_read_with_what_it_lacks_unknown(tmp_path, run):
    _, record, _ = run
    old = json.loads(json.dumps(record))
    old["format"] = "plugpay-session/1"
    del old["misbehaviour"]
    for side in old["sides"].values():
        del side["installments_paid"]
    for entry in old["onchain"]:
        for key in ("id", "at", "height", "detail"):
            del entry[key]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert cli.main(["report", str(path)]) == 0
    page = Page((tmp_path / "old.html").read_text())
    assert "No misbehaviour was set for this run." in page.story
    assert [row[1] for row in page.tables["transactions"]] == ["\u2013"] * len(record["onchain"])
