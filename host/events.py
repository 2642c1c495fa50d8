"""The ledger's event log: what each committed block did, as one structured event per request.

Why a module of its own: ``plugpay ledger up`` prints these events, ``plugpay ledger
watch`` follows them (``--json``: one object per line) and the dashboard draws them, so the
three must agree, and they agree because all of them call ``block_events``, a pure function
of a block's requests and the results the block kept.

What an event holds is what a reader of the public, pseudonymous ledger sees: one-time
accounts by address and RA epoch, amounts, channel, HTLC and market ids, heights, the
region and site a market request or bid publishes, and the time a request came, to the
second (the client timestamps blocks keep are whole seconds plus a count). Nothing else
exists here to show: identities, licences and VINs never reach the ledger (RA registration
travels sealed to the RA), so no event can name them. An RA registration shows on the
ledger only as new RA-signed accounts, listed with their epoch where a request creates them.

Every event carries ``id``, the request's one ledger id (``ledger_ops.request_id``): the
id ``plugpay ledger tx`` takes, ``ledger block`` lists and session records keep.
"""
import time

from plugpay.host.ledger.fastpath import decode_transaction
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256

SECOND = 10 ** 9  # a request timestamp is in nanoseconds: whole seconds plus a count


def iso_time(ts):
    """A request timestamp (ns) as ISO 8601 UTC to the second: all a timestamp holds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts // SECOND))


def _account(account):
    return {"address": account.address().hex(), "ra_epoch": account.epoch}


def _outputs(outputs):
    return [dict(_account(o.account), amount=o.amount) for o in outputs]


def _state(state):
    return {"channel": state.channel_id.hex(), "seq": state.seq, "paid_to_producer": state.paid_to_producer,
            "energy_wh": state.energy_wh}


def _transaction(op):
    return {"inputs": len(op.inputs), "outputs": _outputs(op.outputs)}


def _faucet(op):
    return {"outputs": _outputs(op.outputs)}


def _redeem(op):
    return {"inputs": len(op.inputs), "amount": op.amount}


def _channel_open(op):
    return {"channel": op.channel_id().hex(), "inputs": len(op.inputs), "collateral": op.collateral,
            "installments": op.installments, "first_installment": op.first_installment(), "window": op.window,
            "consumer": _account(op.consumer), "producer": _account(op.producer), "change": _outputs(op.change)}


def _channel_close(op):
    return _state(op.state)


def _channel_dispute(op):
    return dict(_state(op.state), by="producer" if op.by_producer else "consumer")


def _channel_settle(op):
    return {"channel": op.channel_id.hex()}


def _htlc_create(op):
    h = op.htlc
    return {"htlc": h.digest().hex(), "inputs": len(op.inputs), "amount": h.amount, "timeout": h.timeout,
            "hashlock": h.hashlock.hex(), "payer": _account(h.payer), "payee": _account(h.payee),
            "change": _outputs(op.change)}


def _htlc_settle(op):
    return {"htlc": op.htlc_id.hex()}


def _market_request(op):
    return {"request": op.request_key.hex(), "region": op.region, "energy_wh": op.energy_wh,
            "window": [op.window_start, op.window_end, "minutes" if op.window_unit == L.WINDOW_UNIX_MINUTES
                       else "heights"], "bid_deadline": op.bid_deadline}


def _market_bid(op):
    return {"request": op.request_key.hex(), "bidder": op.bidder_key.hex(), "bid": op.digest().hex(),
            "unit_price": op.unit_price, "seq": op.seq, "site": [op.lat_e6 / 1e6, op.lon_e6 / 1e6]}


def _market_commit(op):
    return {"request": op.request_key.hex(), "bid": op.bid_digest.hex()}


def _market_withdraw(op):
    return {"request": op.request_key.hex()}


FIELDS = {
    S.TAG_TRANSACTION: _transaction, L.TAG_FAUCET: _faucet, L.TAG_REDEEM: _redeem,
    L.TAG_CHANNEL_OPEN: _channel_open, L.TAG_CHANNEL_CLOSE: _channel_close,
    L.TAG_CHANNEL_DISPUTE: _channel_dispute, L.TAG_CHANNEL_SETTLE: _channel_settle,
    L.TAG_HTLC_CREATE: _htlc_create, L.TAG_HTLC_CLAIM: _htlc_settle, L.TAG_HTLC_REFUND: _htlc_settle,
    L.TAG_MARKET_REQUEST: _market_request, L.TAG_MARKET_BID: _market_bid,
    L.TAG_MARKET_COMMIT: _market_commit, L.TAG_MARKET_WITHDRAW: _market_withdraw,
}


def _decode(raw):
    """(op, None), or (None, the reason every replica refuses these bytes for)."""
    if len(raw) > L.MAX_REQUEST_BYTES:
        return None, L.TOO_LARGE
    try:
        return decode_transaction(raw) or L.decode_request(raw), None
    except L.UnknownOp:
        return None, L.UNKNOWN_OP
    except DecodeError:
        return None, L.MALFORMED


def _outcome(result):
    """(result name, detail, data) of a result the block kept; (None, "", None) if it kept
    none (a replica of an earlier version) or the bytes do not decode."""
    if result is None:
        return None, "", None
    try:
        r = L.Result.decode(result)
    except DecodeError:
        return None, "", None
    return L.reason_name(r.reason), r.detail, r.data


def request_event(height, index, ts, raw, result, time=None):
    """The event of one request (``raw``) at ``index`` in block ``height``: ``result`` is
    the ``Result`` bytes the block kept for it, or None when it kept none (a replay the
    reply cache answered, or a block of an earlier version). ``time``: the block's own
    time where its engine keeps one (CometBFT), instead of the request's timestamp."""
    op, refusal = _decode(raw)
    name, detail, data = _outcome(result)
    if op is None:
        name = name or L.reason_name(refusal)
    event = {"height": height, "index": index, "time": time or iso_time(ts),
             "kind": "unknown" if op is None else op.NAME,
             "id": (sha256(raw) if op is None else L.request_id(op, raw)).hex(),
             "result": name, "ok": name == L.reason_name(L.OK)}
    if name is not None and not event["ok"] and detail:
        event["detail"] = detail
    if op is not None:
        event.update(FIELDS[op.TAG](op))
        if op.TAG == L.TAG_CHANNEL_DISPUTE and event["ok"] and type(data) is int:
            event["deadline"] = data  # the height the dispute window ends at
    return event


def block_events(height, requests, results, time=None):
    """The events of block ``height``, in block order. ``requests``: its batch as
    ``(client, ts, raw)``; ``results``: ``{(client, ts): Result bytes}`` of the requests
    it ran, or None for a block that kept none; ``time``: the block's time, if it has one."""
    kept = results or {}
    return [request_event(height, i, ts, raw, kept.get((client, ts)), time)
            for i, (client, ts, raw) in enumerate(requests)]


def _short(hex_id):
    return hex_id[:16]


def _amounts(outputs):
    return " + ".join(str(o["amount"]) for o in outputs)


def _summary(e):
    """What happened, in words, for the kinds a reader follows."""
    kind = e["kind"]
    if kind in ("transaction", "faucet"):
        text = "%s to %d new account%s" % (_amounts(e["outputs"]), len(e["outputs"]),
                                           "" if len(e["outputs"]) == 1 else "s")
        return ("mint " if kind == "faucet" else "%d input%s -> " % (e["inputs"], "" if e["inputs"] == 1 else "s")) \
            + text
    if kind == "redeem":
        return "%d coin%s handed back to the issuer for %d" % (e["inputs"], "" if e["inputs"] == 1 else "s",
                                                                e["amount"])
    if kind == "channel_open":
        return "channel %s: collateral %d in %d installments, dispute window %d blocks" % (
            _short(e["channel"]), e["collateral"], e["installments"], e["window"])
    if kind in ("channel_close", "channel_dispute"):
        text = "channel %s %s at seq %d: %d to the producer, %d Wh" % (
            _short(e["channel"]), "closed" if kind == "channel_close" else "disputed by the " + e["by"],
            e["seq"], e["paid_to_producer"], e["energy_wh"])
        return text + (", window ends at height %d" % e["deadline"] if "deadline" in e else "")
    if kind == "channel_settle":
        return "channel %s settled after its dispute window" % _short(e["channel"])
    if kind == "htlc_create":
        return "htlc %s: %d locked until height %d" % (_short(e["htlc"]), e["amount"], e["timeout"])
    if kind in ("htlc_claim", "htlc_refund"):
        return "htlc %s %s" % (_short(e["htlc"]), "claimed by the payee" if kind == "htlc_claim"
                               else "refunded to the payer")
    if kind == "market_request":
        return "request %s in %s: %d Wh, bids until height %d" % (_short(e["request"]), e["region"], e["energy_wh"],
                                                                 e["bid_deadline"])
    if kind == "market_bid":
        return "bid on %s: %d per kWh (seq %d) from %.2f,%.2f" % (_short(e["request"]), e["unit_price"], e["seq"],
                                                                 e["site"][0], e["site"][1])
    if kind == "market_commit":
        return "request %s took bid %s" % (_short(e["request"]), _short(e["bid"]))
    if kind == "market_withdraw":
        return "request %s withdrawn" % _short(e["request"])
    return "bytes that are no ledger request"


def event_line(e):
    """One readable line: height, time, kind, the full id (``ledger tx`` takes it), what
    happened, and for a refused request why."""
    if e["ok"]:
        outcome = ""
    elif e["result"] is None:
        outcome = "  (not run in this block: a replay, or a block that kept no results)"
    else:
        outcome = "  REFUSED %s%s" % (e["result"], ": " + e["detail"] if e.get("detail") else "")
    return "#%d %s %-15s %s  %s%s" % (e["height"], e["time"], e["kind"], e["id"], _summary(e), outcome)
