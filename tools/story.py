"""What happened in a session, told from its record (``tools/session_record.py``): who
misbehaved, what was disputed, who was paid what and why, and the moments worth marking.

Why apart from the report: a report that opens with tables of stop codes reads the same
for a clean session and for one a cheat ended in a dispute; the reader has to dig the
misbehaviour and the dispute out of two logs. These sentences put them first, each built
from the record's facts (the misbehaviour that ran, stop codes, payouts, energy, the
ledger transactions and what each did, the sides' logs), so they hold for records from
simulated and from real boards alike.
"""
import re

SIDES = ("consumer", "producer")
# The lines a side's session logs in its own words when it cheats (``firmware.session``).
CHEAT_PREFIX = "misbehaving: "
_TIMEOUT = re.compile(r"Timeout\((\w+), waiting_for=(.+)\)$")
MARKED_REPEATS = 2  # an operation done more often than this (an HTLC per installment) is not marked


def bounds(record):
    """``{side: (bound, how it is set)}``: the most each side may have at risk, as
    ``Session.exposure_bound`` sets it: the largest installment (b/N rounded up) for the
    consumer; for the producer 0 when it meters (the responder), else what the metering
    tolerance is worth."""
    p = record["parameters"]
    largest = -(-record["budget"] // p["installments"])
    if not record["sides"]["producer"]["initiator"]:
        producer = (0, "0")
    else:
        producer = (-(-p["tolerance_wh"] * p["unit_price"] // 1000), "the %d Wh tolerance" % p["tolerance_wh"])
    return {"consumer": (largest, "b/N = %d" % largest), "producer": producer}


def who(record, side):
    """``vehicle (consumer)``: a side by its board's name and its role."""
    return "%s (%s)" % (record["sides"][side]["board"], side)


def sentences(record):
    """What happened, in order: the deal, how it ended, the misbehaviour, the disputes,
    the money and the risk."""
    return [_deal(record), _end(record), _cheat(record), _disputes(record)] + _money(record) + [_risk(record)]


def _deal(record):
    p = record["parameters"]
    mode = "one state channel" if record["mode"] == "channel" else "a series of %d HTLCs" % p["installments"]
    return "%s: the %s sold %d Wh to the %s at %d per kWh, paid through %s: a budget b of %d in %d installments " \
        "of %d." % (
        record["scenario"].upper(), who(record, "producer"), p["energy_wh"], who(record, "consumer"),
        p["unit_price"], mode, record["budget"], p["installments"], record["per_installment"])


def _end(record):
    sides = record["sides"]
    codes = [sides[s]["stop_code"] for s in SIDES]
    settled = [s for s in SIDES if sides[s]["finished"]]
    money = "both settled their money" if len(settled) == 2 else (
        "only the %s settled its money" % who(record, settled[0]) if settled else "neither settled its money")
    if codes == ["OK", "OK"]:
        return "The link ended normally (OK) on both sides, and %s." % money
    why = []
    for side in SIDES:
        for _, text in sides[side]["log"]:
            found = _TIMEOUT.match(text)
            if found:
                why.append("the %s gave up waiting for %s (%s)" % (who(record, side), found.group(2).replace("_", " "),
                                                                found.group(1)))
    ended = "The link ended %s" % " / ".join(sorted(set(str(c) for c in codes)))
    return "%s%s, and %s." % (ended, ": " + "; ".join(why) if why else "", money)


def _cheat(record):
    cheat = record["misbehaviour"]
    if cheat is None:
        return "No misbehaviour was set for this run."
    told = [text[len(CHEAT_PREFIX):] for _, text in record["sides"][cheat["side"]]["log"] if text.startswith(CHEAT_PREFIX)]
    return "The %s misbehaved (%s)%s." % (who(record, cheat["side"]), cheat["name"],
                                      ": " + "; ".join(told[:3]) if told else "")


def _disputes(record):
    disputes = [e for e in record["onchain"] if e["op"] == "channel_dispute"]
    if not disputes:
        closes = [e for e in record["onchain"] if e["op"] == "channel_close"]
        if closes:
            return "Nothing was disputed: the channel closed cooperatively (%s)." % _where(closes[0])
        return "Nothing was disputed on the ledger."
    told = ["%sthe %s %s" % (_at(e), who(record, e["side"]), e["detail"] or "closes the channel alone")
            for e in disputes + [e for e in record["onchain"] if e["op"] == "channel_settle"]]
    return "Disputed: %s." % "; ".join(told)


def _at(entry):
    return "" if entry["height"] is None else "at height %d " % entry["height"]


def _where(entry):
    return entry["op"] if entry["height"] is None else "%s at height %d" % (entry["op"], entry["height"])


def _money(record):
    sides, p = record["sides"], record["parameters"]
    producer, consumer = sides["producer"], sides["consumer"]
    worth = producer["energy_wh"] * p["unit_price"] // 1000
    paid = producer["payout"]
    count = producer["installments_paid"]
    out = []
    if paid is None:
        out.append("The %s was paid nothing it could show: its session did not settle." % who(record, "producer"))
    else:
        out.append("The %s was paid %d of %d%s for %d Wh, worth %d at the agreed price: %s." % (
            who(record, "producer"), paid, record["budget"],
            "" if count is None else " (%d of %d installments, the deposit's included)" % (count, p["installments"]),
            producer["energy_wh"], worth, _why_paid(paid, worth, record)))
    back = consumer["payout"]
    if back is None:
        out.append("The %s got nothing back in the session: %s." % (who(record, "consumer"), "its unclaimed HTLCs "
                   "refund to it after their timeout" if record["mode"] == "htlc" else "its session did not settle"))
    elif back:
        out.append("The %s got %d back: the part of its deposit that paid for no energy." % (
            who(record, "consumer"), back))
    else:
        out.append("The %s got nothing back: its whole deposit was paid out." % who(record, "consumer"))
    return out


def _why_paid(paid, worth, record):
    if paid == record["budget"]:
        return "everything, as every installment was paid"
    ahead = paid - worth
    if ahead > 0:
        largest = bounds(record)["consumer"][0]
        return "%d paid ahead of the energy, within one installment (%d)" % (ahead, largest) \
            if ahead <= largest else "%d paid ahead of the energy, OVER one installment" % ahead
    return "the installments it accepted, %s" % ("for the energy it delivered" if ahead == 0 else
                                                 "%d short of the energy it delivered" % -ahead)


def _risk(record):
    sides = record["sides"]
    bound = bounds(record)
    over = [s for s in SIDES if sides[s]["max_exposure"] > bound[s][0]]
    figures = "the consumer at most %d (bound %s), the producer at most %d (bound %s)" % (
        sides["consumer"]["max_exposure"], bound["consumer"][1], sides["producer"]["max_exposure"],
        bound["producer"][1] if bound["producer"][0] == 0 else "%d: %s" % bound["producer"])
    if over:
        return "OVER THE BOUND: the %s risked more than it may: %s." % (" and the ".join(who(record, s) for s in over),
                                                                         figures)
    return "Neither side risked more than its bound: %s." % figures


def events(record):
    """``[(t_ms, side, text)]`` worth marking on the plots, in time order: every line of
    both logs and each ledger transaction the side saw applied (an operation repeated more
    than ``MARKED_REPEATS`` times, an HTLC per installment, is left to the table)."""
    counts = {}
    for entry in record["onchain"]:
        counts[entry["op"]] = counts.get(entry["op"], 0) + 1
    out = []
    for side in SIDES:
        out.extend((t, side, text) for t, text in record["sides"][side]["log"])
    for entry in record["onchain"]:
        if entry["at"] is not None and counts[entry["op"]] <= MARKED_REPEATS:
            out.append((entry["at"], entry["side"], "%s applied%s" % (
                entry["op"], "" if entry["height"] is None else " at height %d" % entry["height"])))
    return sorted(out, key=lambda e: (e[0], SIDES.index(e[1])))
