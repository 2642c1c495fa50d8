"""The session record: one JSON file per charging session, written by ``plugpay hil`` (and
``plugpay demo --record``) and read by ``plugpay report``.

Why a file of its own: a session on real boards is over once the boards are unplugged,
so what the report tells (what happened and who misbehaved, energy, money and each side's
exposure over time, installment latency, the ledger transactions with their heights) is
captured once, here, in a format both commands check. ``"format": "plugpay-session/2"``;
the fields are listed in ``SIDE_FIELDS``, ``ENTRY_FIELDS`` and ``_check``. Version 2 adds
the misbehaviour that ran, each side's installment count, and per ledger transaction the
id ``plugpay ledger tx`` takes, its block height, when the side saw it applied and what it
did; a version 1 file is read with those unknown (None). Written atomically (a temp file, then rename), so a crash leaves the old
file or the new one, never half of one. ``read`` treats the file as untrusted: a wrong
type or a missing field is a ``RecordError`` naming the field.
"""
import json
import os

from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError

FORMAT = "plugpay-session/2"
FORMAT_1 = "plugpay-session/1"  # read too: what version 2 added is unknown there
SCENARIOS = ("g2v", "v2g", "v2v")
MODES = ("channel", "htlc")
KINDS = ("sim", "esp32", "rpi")
PARAMETERS = ("energy_wh", "unit_price", "installments", "tolerance_wh", "max_power_w")
MAX_BYTES = 64 * 1024 * 1024  # a record of 10^5 installments is a few MB; refuse anything absurd


class RecordError(ValueError):
    """A session record that cannot be used; the text names the field."""


def side_of(session, board, kind, initiator):
    """The SIDE of the record for one ``firmware.session.Session``."""
    energy = session.board.measured_wh
    return {
        "board": board, "kind": kind, "initiator": bool(initiator),
        "stop_code": None if session.stop_code is None else M.code_name(session.stop_code),
        "finished": bool(session.finished), "payout": session.payout, "max_exposure": session.max_exposure,
        "energy_wh": energy, "installments_paid": session.installments_paid,
        "timeline": [list(row) for row in session.exposure_log],  # ms since the side's start
        "installments": [[k, None if sent is None else sent - session.started, accepted - session.started]
                         for k, sent, accepted in session.installment_log],
        "log": [[t, text] for t, text in session.log],
    }


def onchain_entry(raw, side, at=None):
    """The entry of one applied ledger request (its bytes) that ``side`` sent and saw
    applied ``at`` ms after its start: the op, the id ``plugpay ledger tx`` takes
    (``ledger_ops.request_id``), what it did; its ``height`` comes from the ledger
    (``locate``)."""
    op = L.decode_request(raw)
    return {"op": op.NAME, "id": L.request_id(op, raw).hex(), "side": side, "at": at, "height": None,
            "detail": detail(op)}


def detail(op):
    """What an applied request of a session did, in a few words that follow its sender."""
    if op.TAG == L.TAG_CHANNEL_OPEN:
        return "opens the channel: locks %d for %d installments, the first (%d) the producer's at once" % (
            op.collateral, op.installments, op.first_installment())
    if op.TAG == L.TAG_CHANNEL_CLOSE:
        return "closes the channel with seq %d, signed by both: %d to the producer, the rest back" % (
            op.state.seq, op.state.paid_to_producer)
    if op.TAG == L.TAG_CHANNEL_DISPUTE:
        return "closes the channel alone with seq %d: %d to the producer, unless a higher seq comes within the " \
            "dispute window" % (op.state.seq, op.state.paid_to_producer)
    if op.TAG == L.TAG_CHANNEL_SETTLE:
        return "has the channel paid out on its highest seq once the dispute window was over"
    if op.TAG == L.TAG_HTLC_CREATE:
        return "locks %d for the producer until block %d" % (op.htlc.amount, op.htlc.timeout)
    if op.TAG == L.TAG_HTLC_CLAIM:
        return "the producer claims an HTLC with its preimage"
    if op.TAG == L.TAG_HTLC_REFUND:
        return "the consumer takes an unclaimed HTLC back"
    return ""


def locate(record, query):
    """Fill in each on-chain entry's block height from the ledger, asked by its id with
    ``query(bytes)`` (a ``GatewayClient.query``: a ``ledger_ops.Result``); an entry the
    ledger does not show, or shows as another request, keeps None."""
    for entry in record["onchain"]:
        if entry["id"] is None:
            continue
        ident = bytes.fromhex(entry["id"])
        result = query(L.Query(L.QUERY_TX, ident, 0).encode())
        data = result.data if result.ok else None
        if type(data) is list and len(data) == 3 and type(data[0]) is int and type(data[2]) is bytes \
                and _request_id(data[2]) == ident:
            entry["height"] = data[0]
    _check(record)


def _request_id(raw):
    """The id of a request's bytes from the ledger, or None if they are no request."""
    try:
        return L.request_id(L.decode_request(raw), raw)
    except DecodeError:
        return None


def from_sessions(consumer, producer, meta):
    """The record of a session from both sides' ``Session`` objects. ``meta``: ``scenario``,
    ``started`` (Unix seconds), ``misbehaviour`` (None, or ``{"side", "name"}``: the side
    that cheated and how, e.g. ``plugpay demo --misbehave stale-close``) and per side
    (``"consumer"``, ``"producer"``) a dict with ``board`` (its name) and ``kind`` (sim,
    esp32, rpi)."""
    onchain, seen = [], set()
    for side, session in (("consumer", consumer), ("producer", producer)):
        for raw, at in zip(session.onchain, session.onchain_at):  # a close both sides sent is one transaction
            entry = onchain_entry(raw, side, at)
            if entry["id"] not in seen:
                seen.add(entry["id"])
                onchain.append(entry)
    sides = {}
    for name, session in (("consumer", consumer), ("producer", producer)):
        sides[name] = side_of(session, meta[name]["board"], meta[name]["kind"], session.terms.initiator)
    return build(consumer.terms, meta["scenario"], meta["started"], sides, onchain, meta.get("misbehaviour"))


def build(terms, scenario, started, sides, onchain, misbehaviour=None):
    """A record from the agreed ``Terms``, both SIDEs, the on-chain entries and the
    misbehaviour that ran (see ``from_sessions``)."""
    p = terms.parameters
    budget = terms.budget()
    record = {
        "format": FORMAT, "session_id": terms.session_id.hex(), "scenario": scenario, "misbehaviour": misbehaviour,
        "mode": "channel" if terms.mode == M.MODE_STATE_CHANNEL else "htlc", "started": int(started),
        "parameters": {name: getattr(p, name) for name in PARAMETERS},
        "budget": budget, "per_installment": budget // p.installments,
        "sides": sides, "onchain": onchain,
    }
    _check(record)
    return record


def write(path, record):
    """Write ``record`` (checked first) to ``path`` atomically."""
    _check(record)
    data = json.dumps(record, indent=1, sort_keys=True).encode() + b"\n"
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path):
    """The checked record in ``path``; ``RecordError`` names what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise RecordError("%s: cannot read: %s" % (path, e.strerror or e))
    if len(data) > MAX_BYTES:
        raise RecordError("%s: larger than %d bytes: not a session record" % (path, MAX_BYTES))
    try:
        record = json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise RecordError("%s: not JSON: %s" % (path, e))
    try:
        _check(_upgrade(record))
    except RecordError as e:
        raise RecordError("%s: %s" % (path, e))
    return record


def _upgrade(record):
    """A version 1 record as version 2, with what version 2 added unknown."""
    if not isinstance(record, dict) or record.get("format") != FORMAT_1:
        return record
    record["format"] = FORMAT
    record.setdefault("misbehaviour", None)
    for side in (record.get("sides") or {}).values():
        if isinstance(side, dict):
            side.setdefault("installments_paid", None)
    for entry in record.get("onchain") or []:
        if isinstance(entry, dict):
            for key in ("id", "at", "height", "detail"):
                entry.setdefault(key, None)
    return record


# -- checking ------------------------------------------------------------------------------

def _int(value, field, nullable=False):
    if value is None and nullable:
        return
    if type(value) is not int:
        raise RecordError("%s: expected an integer%s, got %s" % (field, " or null" if nullable else "",
                                                                  json.dumps(value)[:40]))


def _get(obj, key, field, kind):
    if not isinstance(obj, dict):
        raise RecordError("%s: expected an object" % field)
    if key not in obj:
        raise RecordError("%s.%s: missing" % (field, key))
    value = obj[key]
    if kind is int:
        _int(value, "%s.%s" % (field, key))
    elif kind is not None and not isinstance(value, kind):
        raise RecordError("%s.%s: expected %s, got %s" % (field, key, _KIND_NAMES[kind], json.dumps(value)[:40]))
    return value


_KIND_NAMES = {str: "a string", bool: "true or false", list: "a list", dict: "an object"}


def _one_of(value, choices, field):
    if value not in choices:
        raise RecordError("%s: expected one of %s, got %s" % (field, "|".join(choices), json.dumps(value)[:40]))


def _hex(value, field):
    try:
        bytes.fromhex(value)
    except ValueError:
        raise RecordError("%s: expected hex, got %r" % (field, value[:40]))


def _rows(rows, width, field, last_is_text=False, nullable_column=None):
    for i, row in enumerate(rows):
        where = "%s[%d]" % (field, i)
        if not isinstance(row, list) or len(row) != width:
            raise RecordError("%s: expected a list of %d values" % (where, width))
        numbers = row[:-1] if last_is_text else row
        for j, value in enumerate(numbers):
            _int(value, "%s[%d]" % (where, j), nullable=nullable_column == j)
        if last_is_text and not isinstance(row[-1], str):
            raise RecordError("%s[%d]: expected a string" % (where, width - 1))


SIDE_FIELDS = (("board", str), ("kind", str), ("initiator", bool), ("finished", bool), ("max_exposure", int),
               ("energy_wh", int), ("timeline", list), ("installments", list), ("log", list))


def _check_side(side, field):
    for key, kind in SIDE_FIELDS:
        _get(side, key, field, kind)
    _one_of(side["kind"], KINDS, field + ".kind")
    stop = _get(side, "stop_code", field, None)
    if stop is not None and not isinstance(stop, str):
        raise RecordError("%s.stop_code: expected a string or null" % field)
    _int(_get(side, "payout", field, None), field + ".payout", nullable=True)
    _int(_get(side, "installments_paid", field, None), field + ".installments_paid", nullable=True)
    _rows(side["timeline"], 4, field + ".timeline")
    _rows(side["installments"], 3, field + ".installments", nullable_column=1)
    _rows(side["log"], 2, field + ".log", last_is_text=True)


def _check(record):
    if not isinstance(record, dict):
        raise RecordError("expected a JSON object")
    if record.get("format") != FORMAT:
        raise RecordError("format: expected %r, got %s" % (FORMAT, json.dumps(record.get("format"))[:40]))
    _hex(_get(record, "session_id", "record", str), "session_id")
    _one_of(_get(record, "scenario", "record", str), SCENARIOS, "scenario")
    _one_of(_get(record, "mode", "record", str), MODES, "mode")
    _get(record, "started", "record", int)
    params = _get(record, "parameters", "record", dict)
    for name in PARAMETERS:
        _get(params, name, "parameters", int)
    if params["installments"] < 1:
        raise RecordError("parameters.installments: must be at least 1")
    _get(record, "budget", "record", int)
    _get(record, "per_installment", "record", int)
    sides = _get(record, "sides", "record", dict)
    for name in ("consumer", "producer"):
        _check_side(_get(sides, name, "sides", dict), "sides." + name)
    cheat = _get(record, "misbehaviour", "record", None)
    if cheat is not None:
        _one_of(_get(cheat, "side", "misbehaviour", str), ("consumer", "producer"), "misbehaviour.side")
        _get(cheat, "name", "misbehaviour", str)
    for i, entry in enumerate(_get(record, "onchain", "record", list)):
        where = "onchain[%d]" % i
        _get(entry, "op", where, str)
        _one_of(_get(entry, "side", where, str), ("consumer", "producer"), where + ".side")
        ident = _get(entry, "id", where, None)
        if ident is not None:
            _hex(ident if isinstance(ident, str) else "?", where + ".id")
        text = _get(entry, "detail", where, None)
        if text is not None and not isinstance(text, str):
            raise RecordError("%s.detail: expected a string or null" % where)
        for key in ("at", "height"):
            _int(_get(entry, key, where, None), "%s.%s" % (where, key), nullable=True)
