"""``plugpay report``: records of real in-process sessions become a self-contained HTML
report with its plots and the session's ledger transactions, and PNGs for papers; a bad
record is refused with a message naming the file and the field, and nothing is written.
"""
import base64
import json
from html.parser import HTMLParser

import pytest

from plugpay.firmware.session import CHANNEL, HTLC, Misbehaviour
from plugpay.tools import cli, report, session_record
from test_session import World

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("energy-money", "exposure", "latency")


class Page(HTMLParser):
    """What a test checks in a report: the figures' images, every table's cells, the story's
    sentences and the paragraphs."""

    def __init__(self, text):
        super().__init__()
        self.images = {}  # figure id -> (src of its img)
        self.starttags = set()
        self.tables = {}  # table id -> [[cell text, ...], ...] (body rows)
        self.story = []  # the sentences of "What happened"
        self.paragraphs = []
        self._figure = self._table = self._row = self._cell = self._item = self._paragraph = None
        self._in_story = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.starttags.add(tag)
        if tag == "figure":
            self._figure = attrs.get("id")
        elif tag == "img" and self._figure:
            self.images[self._figure] = attrs["src"]
        elif tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "ul":
            self._in_story = attrs.get("id") == "story"
        elif tag == "li" and self._in_story:
            self._item = ""
        elif tag == "p":
            self._paragraph = ""

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "td" and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:  # the header row has no td
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "li" and self._item is not None:
            self.story.append(self._item)
            self._item = None
        elif tag == "ul":
            self._in_story = False
        elif tag == "p" and self._paragraph is not None:
            self.paragraphs.append(self._paragraph)
            self._paragraph = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._item is not None:
            self._item += data
        if self._paragraph is not None:
            self._paragraph += data


def record_file(world, tmp_path, name="session.json", producer_board="charger-sim", misbehaviour=None):
    """Run the world's session and write its record as ``plugpay hil`` does."""
    world.run()
    meta = {"scenario": "g2v", "started": 1790000000, "misbehaviour": misbehaviour,
            "consumer": {"board": "vehicle-sim", "kind": "sim"}, "producer": {"board": producer_board, "kind": "sim"}}
    path = tmp_path / name
    session_record.write(str(path), session_record.from_sessions(world.consumer, world.producer, meta))
    return path


def run_report(path, out, *options):
    """Run ``plugpay report`` and parse the page it wrote."""
    assert cli.main(["report", str(path), "--out", str(out)] + list(options)) == 0
    return Page((out / (path.stem + ".html")).read_text())


def svg_of(src):
    prefix = "data:image/svg+xml;base64,"
    assert src.startswith(prefix)
    return base64.b64decode(src[len(prefix):])


def applied(world):
    """(side, op name, ledger id) of every applied request, consumer's first, once each."""
    out, seen = [], set()
    for side, session in (("consumer", world.consumer), ("producer", world.producer)):
        for raw in session.onchain:
            entry = session_record.onchain_entry(raw, side)
            if entry["id"] not in seen:
                seen.add(entry["id"])
                out.append([side, entry["op"], entry["id"]])
    return out


def ledger_rows(page):
    """(side, op, id) of each row of the report's ledger table."""
    return [[row[3], row[4], row[6]] for row in page.tables["transactions"]]


@pytest.fixture(scope="module")
def channel(tmp_path_factory, authority):
    """One channel session, its record and its report with PNGs, for the tests that read them."""
    tmp_path = tmp_path_factory.mktemp("channel")
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10)
    path = record_file(w, tmp_path)
    out = tmp_path / "report"
    return w, path, out, run_report(path, out, "--png")


def test_a_channel_session_report_has_the_plots_and_the_transactions(channel):
    w, _, _, page = channel
    assert sorted(page.images) == sorted("plot-" + name for name in PLOTS)
    for src in page.images.values():
        svg = svg_of(src)
        assert b"<svg" in svg and b"</svg>" in svg
    assert ledger_rows(page) == applied(w)
    assert [row[4] for row in page.tables["transactions"]] == ["channel_open", "channel_close"]
    sides = dict((row[0], row) for row in page.tables["sides"])
    assert sides["consumer"][4] == "OK" and sides["producer"][4] == "OK"
    assert sides["producer"][6] == str(w.consumer.terms.budget())  # payout: everything
    assert sides["producer"][7] == sides["consumer"][7] == "10"  # installments
    assert sides["consumer"][9] == str(w.per_installment())  # max exposure reached b/N, not over
    assert page.tables["latency"][0][0] == "10"


def test_png_plots_are_written_beside_the_report(channel):
    _, _, out, _ = channel
    for name in PLOTS:
        data = (out / ("session-%s.png" % name)).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10000
    assert sorted(p.name for p in out.iterdir()) == sorted(["session.html"] + ["session-%s.png" % n for n in PLOTS])


def test_an_htlc_session_report_lists_every_create_and_claim(tmp_path, authority):
    n = 5
    w = World(tmp_path, authority, "g2v", HTLC, n=n)
    page = run_report(record_file(w, tmp_path), tmp_path)
    ops = [row[4] for row in page.tables["transactions"]]
    assert ops.count("htlc_create") == n and ops.count("htlc_claim") == n
    assert ledger_rows(page) == applied(w)
    assert page.tables["latency"][0][0] == str(n)
    assert len(page.images) == len(PLOTS)
    assert not list(tmp_path.glob("*.png"))  # no --png, no PNGs


def test_a_misbehaving_producer_shows_in_stop_codes_and_payouts(tmp_path, authority):
    w = World(tmp_path, authority, "g2v", CHANNEL, n=10, cheat=("producer", Misbehaviour(stop_delivering_after=4)))
    board = r"charger $\oops{$"  # plotted as text, not as a broken matplotlib formula
    cheat = {"side": "producer", "name": "producer-stops"}
    page = run_report(record_file(w, tmp_path, producer_board=board, misbehaviour=cheat), tmp_path)
    sides = dict((row[0], row) for row in page.tables["sides"])
    assert sides["producer"][1] == board
    assert "The %s (producer) misbehaved (producer-stops): not delivering chunk 5." % board in page.story
    assert "the %s (producer) gave up waiting for energy (FAILED_Timeout)" % board in page.story[1]
    assert "producer-stops by the producer" in page.paragraphs[0]
    assert sides["consumer"][4] == "FAILED_Timeout"
    assert sides["producer"][6] == str(w.consumer.terms.paid_after(4))
    assert int(sides["consumer"][9]) <= w.per_installment()
    assert [row[4] for row in page.tables["transactions"]][0] == "channel_open"
    assert len(page.images) == len(PLOTS)


@pytest.fixture
def good_record(channel):
    return json.loads(channel[1].read_text())


def _refused(tmp_path, capsys, path):
    out = tmp_path / "out"
    assert cli.main(["report", str(path), "--out", str(out)]) == 2
    assert not out.exists()  # nothing written
    return capsys.readouterr().err


@pytest.mark.parametrize("change, field", [
    (lambda r: r["sides"]["consumer"].pop("timeline"), "sides.consumer.timeline: missing"),
    (lambda r: r["sides"]["producer"]["timeline"].insert(0, [1, 2, "x", 4]), "sides.producer.timeline[0][2]"),
    (lambda r: r["onchain"][0].update(id="not hex"), "onchain[0].id"),
    (lambda r: r.update(format="plugpay-session/0"), "format"),
    (lambda r: r["parameters"].update(installments=0), "parameters.installments"),
    (lambda r: r.update(started=10 ** 30), "started"),  # no date
    (lambda r: r["sides"]["consumer"]["timeline"][0].__setitem__(1, 10 ** 30), "sides.consumer.timeline[0][1]"),
])
def test_a_malformed_record_is_refused_naming_the_file_and_field(tmp_path, capsys, good_record, change, field):
    change(good_record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(good_record))
    err = _refused(tmp_path, capsys, path)
    assert str(path) in err and field in err


def test_a_missing_or_non_json_record_is_refused(tmp_path, capsys):
    missing = tmp_path / "nothing.json"
    assert "cannot read" in _refused(tmp_path, capsys, missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\x00{not json")
    err = _refused(tmp_path, capsys, garbage)
    assert str(garbage) in err and "not JSON" in err


def test_text_from_the_record_is_shown_as_text_never_as_markup(good_record):
    good_record["sides"]["consumer"]["board"] = "<script>alert(1)</script>"
    good_record["sides"]["producer"]["log"].append([1, "</pre><img src=x onerror=alert(1)>"])
    page = Page(report.render_html(good_record, []))
    assert not {"script", "img"} & page.starttags
    assert dict((row[0], row) for row in page.tables["sides"])["consumer"][1] == "<script>alert(1)</script>"
