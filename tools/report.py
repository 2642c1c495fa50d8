"""A session record (``plugpay-session/2``) as a self-contained HTML report and PNG plots.

Why: a hardware-in-the-loop run is judged by what happened and what each side risked and
got, moment by moment. The page opens with the story (``tools/story.py``: who misbehaved,
what was disputed, who was paid what and why), then plots energy and money over time (the
two sides' lines drawn so neither hides the other), each side's exposure as an envelope
against its bound (b/N for the consumer, 0 for the producer, Unterweger et al.; a producer
that does not meter, the metering tolerance's worth: ``story.bounds``), with the
session's events numbered on both, how long installments took, the events, and the ledger
transactions with their heights and times. The HTML file carries its plots as SVG data URIs
so it can be mailed or archived alone; the PNGs are for papers. Plots are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot, so no
display and no global figure state are involved.

A record is a file from outside: ``tools.session_record.read`` checks its format and
types, ``check_plottable`` the ranges of what is drawn, each naming the file and the bad
field, before anything here draws or writes.
"""
import base64
import datetime
import html
import io
import os

from plugpay.tools import story

SIDES = ("consumer", "producer")
PNG_DPI = 200
COLOURS = {"consumer": "tab:blue", "producer": "tab:orange"}
# The consumer's line wide and pale, the producer's thin and dashed on top: where both
# sides measured the same, both stay visible.
LINES = {"consumer": dict(linewidth=5, alpha=0.35, linestyle="-"), "producer": dict(linewidth=1.4, linestyle="--")}
# Exposure is drawn as its least and most in each span of time, a span holding about two
# installments (an installment raises it, the energy it pays for brings it down), at most:
ENVELOPE_SPANS = 200
_LEGEND = dict(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside the axes: steps fill them


# ---- checking -------------------------------------------------------------------------------

MAX_PLOTTED = 2 ** 53  # integers beyond this are not exact as floats (and overflow them far beyond)
MAX_STARTED = 253402300800  # 10000-01-01 UTC: the first Unix second ``datetime`` cannot show
MAX_AT_MS = 2 ** 40  # a time in a session (ms since a side's start) shown as a date: ~35 years either way


def check_plottable(record, path):
    """Raise ``session_record.RecordError`` naming the field if a number the report draws
    or shows as a date is out of range. Why here: the record format allows any JSON
    integer, and the plots turn them into floats."""
    from plugpay.tools.session_record import RecordError

    if not 0 <= record["started"] < MAX_STARTED - MAX_AT_MS // 1000:
        raise RecordError("%s: started: not a Unix time before the year 9965" % path)
    times = [("onchain[%d].at" % i, entry["at"]) for i, entry in enumerate(record["onchain"])]
    for name in SIDES:
        times.extend(("sides.%s.log[%d][0]" % (name, i), row[0]) for i, row in enumerate(record["sides"][name]["log"]))
    for field, value in times:
        if value is not None and not -MAX_AT_MS <= value <= MAX_AT_MS:
            raise RecordError("%s: %s: out of range (at most 2**40 ms either side of 0)" % (path, field))
    drawn = [("budget", record["budget"]), ("per_installment", record["per_installment"]),
             ("parameters.energy_wh", record["parameters"]["energy_wh"])]
    for name in SIDES:
        for column in ("timeline", "installments"):
            for i, row in enumerate(record["sides"][name][column]):
                drawn.extend(("sides.%s.%s[%d][%d]" % (name, column, i, j), v) for j, v in enumerate(row))
    for field, value in drawn:
        if value is not None and not -MAX_PLOTTED <= value <= MAX_PLOTTED:
            raise RecordError("%s: %s: out of range (at most 2**53 either side of 0)" % (path, field))


# ---- figures --------------------------------------------------------------------------------

def latencies(record):
    """Installment latencies in ms, ``[(k, accepted - sent)]`` from the consumer's log (an
    installment with no send time, e.g. one accepted after a reboot, has none)."""
    return [(k, accepted - sent) for k, sent, accepted in record["sides"]["consumer"]["installments"]
            if sent is not None]


def percentiles(values, points=(50, 90, 99)):
    """Nearest-rank percentiles of ``values`` (``{p: value}``; empty when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return dict((p, ordered[max(0, -(-p * len(ordered) // 100) - 1)]) for p in points)


def _series(side, column):
    timeline = side["timeline"]
    return [row[0] / 1000.0 for row in timeline], [row[column] for row in timeline]


def _new_figure(height, rows=1, cols=1, sharex=False):
    """A figure on its own Agg canvas (no pyplot) and its axes as a flat list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(rows, cols, sharex=sharex, squeeze=False).flat)


def envelope(times, values, spans):
    """``(edges, low, high)``: the least and the most a step series (``values`` from each of
    ``times`` on) is in each of ``spans`` equal spans of its time, the value carried into a
    span included; ``low`` and ``high`` repeat their last value so they draw with ``edges``.
    Why: the exposure jumps up at each installment and down as energy flows, hundreds of
    times; drawn as steps it is a solid comb, as an envelope it shows its range and where it
    touched the bound."""
    if not times:
        return [], [], []
    start, end = times[0], max(times[-1], times[0] + 1e-9)
    width = (end - start) / spans
    low, high = [], []
    current, j = values[0], 0
    for i in range(spans):
        stop = start + (i + 1) * width
        lo = hi = current
        while j < len(times) and (times[j] < stop or i == spans - 1):
            current = values[j]
            lo, hi = min(lo, current), max(hi, current)
            j += 1
        low.append(lo)
        high.append(hi)
    return [start + i * width for i in range(spans + 1)], low + low[-1:], high + high[-1:]


def _marks(record):
    """The session's events, numbered, as ``[(t_s, label, colour)]`` clusters: events closer
    than 3 % of the session's span share one mark."""
    found = story.events(record)
    if not found:
        return []
    span = max(1, found[-1][0] - found[0][0])
    clusters = []
    for number, (t, side, _) in enumerate(found, 1):
        if clusters and t - clusters[-1][0] <= span * 3 / 100:
            clusters[-1][1].append(number)
            clusters[-1][2].add(side)
        else:
            clusters.append((t, [number], {side}))
    return [(t / 1000.0, "%d" % numbers[0] if len(numbers) == 1 else "%d-%d" % (numbers[0], numbers[-1]),
             COLOURS[list(sides)[0]] if len(sides) == 1 else "dimgrey") for t, numbers, sides in clusters]


def _mark(axes, marks):
    """Each event as a dotted line across ``axes``, its number above the first (every
    other one higher, so neighbours' numbers do not overlap)."""
    for i, (t, label, colour) in enumerate(marks):
        for ax in axes:
            ax.axvline(t, color=colour, linestyle=":", linewidth=0.8)
        axes[0].annotate(label, (t, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2 + 8 * (i % 2)),
                         textcoords="offset points", ha="center", va="bottom", fontsize="x-small", color=colour)


def _energy_money(record):
    fig, (energy, money) = _new_figure(5.8, rows=2, sharex=True)
    for name in SIDES:
        side = record["sides"][name]
        t, wh = _series(side, 2)
        board = side["board"].replace("$", r"\$")  # a "$" from the file would start mathtext
        energy.step(t, wh, where="post", color=COLOURS[name], label="%s (%s)" % (name, board), **LINES[name])
        t, paid = _series(side, 3)
        money.step(t, paid, where="post", color=COLOURS[name], label=name, **LINES[name])
    energy.axhline(record["parameters"]["energy_wh"], color="grey", linestyle=":", label="agreed energy")
    money.axhline(record["budget"], color="grey", linestyle=":", label="budget b")
    _mark([energy, money], _marks(record))
    energy.set_ylabel("energy (Wh)")
    money.set_ylabel("paid (smallest units)")
    money.set_xlabel("time since the side's start (s); numbers: the events listed below")
    energy.set_title("Energy and money over time", pad=22)
    energy.legend(**_LEGEND)
    money.legend(**_LEGEND)
    return fig


def _exposure(record):
    fig, axes = _new_figure(5.8, rows=2, sharex=True)
    bounds = story.bounds(record)
    for ax, name in zip(axes, SIDES):
        side = record["sides"][name]
        spans = max(1, min(ENVELOPE_SPANS, record["parameters"]["installments"] // 2))
        edges, low, high = envelope(*_series(side, 1), spans=spans)
        if edges:
            ax.fill_between(edges, low, high, step="post", color=COLOURS[name], alpha=0.35, linewidth=0,
                            label="%s exposure: its range" % name)
            ax.step(edges, high, where="post", color=COLOURS[name], linewidth=1, label="its most")
        bound, label = bounds[name]
        ax.axhline(bound, color="tab:red", linestyle="--", label="bound %s" % label)
        ax.set_ylabel("%s (smallest units)" % name)
        ax.legend(**_LEGEND)
    _mark(axes, _marks(record))
    axes[0].set_title("Exposure against the bound (max: consumer %d, producer %d)"
                      % (record["sides"]["consumer"]["max_exposure"], record["sides"]["producer"]["max_exposure"]),
                      pad=22)
    axes[-1].set_xlabel("time since the side's start (s); numbers: the events listed below")
    return fig


def _latency(record):
    fig, (per_k, histogram) = _new_figure(3.5, cols=2)
    pairs = latencies(record)
    ks = [k for k, _ in pairs]
    ms = [v for _, v in pairs]
    per_k.plot(ks, ms, marker=".", linestyle="-", color=COLOURS["consumer"])
    per_k.set_xlabel("installment k")
    per_k.set_ylabel("sent to accepted (ms)")
    per_k.set_title("Installment latency per k")
    histogram.hist(ms, bins=min(30, max(1, len(set(ms)))), color=COLOURS["consumer"])
    marks = {}  # value -> the percentiles at it, so equal ones share one line and label
    for p, value in sorted(percentiles(ms).items()):
        marks.setdefault(value, []).append("p%d" % p)
    for value, names in sorted(marks.items()):
        histogram.axvline(value, color="grey", linestyle=":")
        histogram.annotate(" " + "/".join(names), (value, 0.98), xycoords=("data", "axes fraction"), va="top",
                           fontsize="small")
    histogram.set_xlabel("latency (ms)")
    histogram.set_ylabel("installments")
    histogram.set_title("Histogram (%d installments)" % len(ms))
    return fig


PLOTS = (  # (file-name part, caption, figure builder)
    ("energy-money", "Energy delivered or measured, and money paid or held, over each side's time: the "
     "consumer's line wide and pale, the producer's dashed on top (where both measured the same, one runs inside "
     "the other). Numbered lines: the events below.", _energy_money),
    ("exposure", "Each side's exposure (what it stands to lose) against its bound, b/N for the consumer and 0 for "
     "the producer (the metering tolerance's worth for a producer that does not meter): the band is the least and the most it was in each stretch of about two installments' time "
     "(an installment raises it, the energy it pays for brings it down), the line its most.", _exposure),
    ("latency", "Installment latency: from the consumer sending installment k to the producer's acceptance.",
     _latency),
)


def figures(record):
    """``[(name, caption, Figure)]`` for every plot of the report."""
    return [(name, caption, build(record)) for name, caption, build in PLOTS]


def _encoded(fig, fmt, **kwargs):
    """The figure's bytes; an SVG keeps its text as text (smaller, searchable, selectable)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None, **kwargs)
    return buf.getvalue()


# ---- HTML -----------------------------------------------------------------------------------

_STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}code{font-size:.9em}.bad{color:#b00;font-weight:bold}figure{margin:1.5em 0}
img{max-width:100%}pre{background:#f7f7f7;padding:.5em;overflow-x:auto}"""


def _table(headers, rows, table_id):
    out = ['<table id="%s"><thead><tr>' % table_id]
    out.extend("<th>%s</th>" % html.escape(h) for h in headers)
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join("<td>%s</td>" % cell for cell in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _text(value):
    return "&ndash;" if value is None else html.escape(str(value))


def _clock(record, at_ms):
    """``+4.88 s (19:53:55 UTC)``: a time of a side's clock, from the record's start."""
    if at_ms is None:
        return None
    wall = datetime.datetime.fromtimestamp(record["started"] + at_ms // 1000, datetime.timezone.utc)
    return "+%.2f s (%s UTC)" % (at_ms / 1000, wall.strftime("%H:%M:%S"))


def render_html(record, images):
    """The report page; ``images`` is ``[(name, caption, svg bytes)]``."""
    e = _text
    sides = record["sides"]
    params = record["parameters"]
    started = datetime.datetime.fromtimestamp(record["started"], datetime.timezone.utc)
    bounds = dict((name, bound) for name, (bound, _) in story.bounds(record).items())
    side_rows = []
    for name in SIDES:
        s = sides[name]
        over = s["max_exposure"] > bounds[name]
        side_rows.append([e(name), e(s["board"]), e(s["kind"]), e("yes" if s["initiator"] else "no"),
                          e(s["stop_code"]), e("yes" if s["finished"] else "no"), e(s["payout"]),
                          e(s["installments_paid"]), e(s["energy_wh"]),
                          ('<span class="bad">%d (over)</span>' % s["max_exposure"]) if over else e(s["max_exposure"]),
                          e(bounds[name])])
    ms = [v for _, v in latencies(record)]
    stats = percentiles(ms)
    latency_row = [e(len(ms))] + [e(stats.get(p)) for p in (50, 90, 99)] + [e(max(ms) if ms else None)]
    tx_rows = [[e(i + 1), e(tx["height"]), e(_clock(record, tx["at"])), e(tx["side"]), e(tx["op"]), e(tx["detail"]),
                "<code>%s</code>" % e(tx["id"]) if tx["id"] else e(None)]
               for i, tx in enumerate(record["onchain"])]
    event_rows = [[e(i + 1), e(_clock(record, t)), e(story.who(record, side)), e(text)]
                  for i, (t, side, text) in enumerate(story.events(record))]
    cheat = record["misbehaviour"]
    title = "plugpay session %s" % record["session_id"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>%s</title><style>%s</style></head><body>" % (e(title), _STYLE),
           "<h1>%s</h1>" % e(title),
           "<p>%s, %s, started %s UTC; misbehaviour: %s.</p>" % (
               e(record["scenario"].upper()), e(record["mode"]), e(started.strftime("%Y-%m-%d %H:%M:%S")),
               e("none") if cheat is None else '<span class="bad">%s by the %s</span>' % (e(cheat["name"]),
                                                                                          e(cheat["side"]))),
           "<h2>What happened</h2>",
           '<ul id="story">%s</ul>' % "".join("<li>%s</li>" % e(line) for line in story.sentences(record)),
           "<h2>Terms</h2>",
           _table(["energy (Wh)", "unit price (per kWh)", "installments N", "tolerance (Wh)", "max power (W)",
                   "budget b", "per installment b/N"],
                  [[e(params["energy_wh"]), e(params["unit_price"]), e(params["installments"]),
                    e(params["tolerance_wh"]), e(params["max_power_w"]), e(record["budget"]),
                    e(record["per_installment"])]], "terms"),
           "<h2>Outcome</h2>",
           _table(["side", "board", "kind", "initiator", "stop code", "finished", "payout", "installments",
                   "energy (Wh)", "max exposure", "bound"], side_rows, "sides"),
           "<h2>Plots</h2>"]
    for name, caption, svg in images:
        out.append('<figure id="plot-%s"><img alt="%s" src="data:image/svg+xml;base64,%s"><figcaption>%s'
                   "</figcaption></figure>" % (e(name), e(name), base64.b64encode(svg).decode("ascii"), e(caption)))
    out.append("<h2>Events (%d)</h2>" % len(event_rows))
    out.append(_table(["#", "time", "side", "what"], event_rows, "events"))
    out.append("<h2>Ledger transactions (%d)</h2>" % len(tx_rows))
    out.append(_table(["#", "height", "applied", "side", "operation", "what it did", "id (plugpay ledger tx ID)"],
                      tx_rows, "transactions"))
    out.append("<h2>Installment latency (ms)</h2>")
    out.append(_table(["installments", "p50", "p90", "p99", "max"], [latency_row], "latency"))
    for name in SIDES:
        lines = "\n".join("%8d ms  %s" % (t, text) for t, text in sides[name]["log"])
        out.append("<details><summary>%s log (%d lines)</summary><pre>%s</pre></details>"
                   % (e(name), len(sides[name]["log"]), e(lines)))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write(record, out_dir, stem, png=False, progress=print):
    """Write ``stem.html`` (and with ``png`` the ``stem-NAME.png`` plots) into ``out_dir``;
    returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    images = []
    for name, caption, fig in figures(record):
        progress("  plotting %s ..." % name)
        images.append((name, caption, _encoded(fig, "svg")))
        if png:
            path = os.path.join(out_dir, "%s-%s.png" % (stem, name))
            _atomic_write(path, _encoded(fig, "png", dpi=PNG_DPI))
            written.append(path)
    path = os.path.join(out_dir, stem + ".html")
    _atomic_write(path, render_html(record, images).encode("utf-8"))
    written.insert(0, path)
    return written
