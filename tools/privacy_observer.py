"""The observer an attacker would write: which charging sessions can be tied together from
what the broker carried and what the ledger holds (DESIGN.md, "Privacy: who may learn what").

Given, per session label, the messages of that session's connections and the device it
belongs to, and every request in every ledger block, ``observe`` builds a graph whose nodes
are sessions, with an edge for each of three reasons:

- ``shared_value``: the two sessions' traffic has a byte string of 8+ bytes in common
  (``Traffic`` says which values a message has), other than a value every device has (the
  topic prefix, the region key) or one the caller excludes;
- ``ancestry``: the ledger requests the two sessions submitted or were shown descend from
  a common request (a coin created in one session and spent in another, change chains, one
  transaction paying coins two sessions spend);
- ``query``: a ledger query in one session names an object another session created.

It returns the figures of ``plugpay bench privacy`` with the evidence of every link, as a
JSON-serialisable dict; ``report_lines`` makes it readable.

Integers are fields, not bytes: a small integer is never a value and never part of a
window, because adjacent small integers (a charging window's minutes, an energy, a price)
would otherwise make every two sessions in the same minute look linked, and times and
prices are public market data, coarse on purpose. An integer that fills 8 bytes (a 64-bit
random nonce, a time in nanoseconds) is a value, as its big-endian bytes.
"""
import collections
import functools
import io
import re

import cbor2
import numpy as np

from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256
from plugpay.tools.ledger_inspect import request_id

MIN_BYTES = 8
BIG_INT_BITS = 8 * MIN_BYTES - 8  # an integer above this many bits fills 8 bytes
EVIDENCE = 3  # evidence items kept per edge, and messages remembered per value
SHARED_VALUE, ANCESTRY, QUERY = "shared_value", "ancestry", "query"
REASONS = (SHARED_VALUE, ANCESTRY, QUERY)
QUERY_KINDS = {getattr(L, n): n[len("QUERY_"):].lower() for n in dir(L) if n.startswith("QUERY_")}
_HEX_RUN = re.compile(rb"[0-9a-fA-F]{%d,}" % (2 * MIN_BYTES))
_HEX_TEXT = re.compile(rb"[0-9a-fA-F]{%d,}" % MIN_BYTES)


def structure(data):
    """The array or map ``data`` encodes as CBOR, or None. It must be the whole of ``data``
    and re-encode canonically to the same bytes: random bytes (a signature, a sealed box)
    practically never do, so they stay opaque and keep their windows."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
        if stream.tell() != len(data) or not isinstance(value, (list, dict)):
            return None
        return value if cbor2.dumps(value, canonical=True) == data else None
    except Exception:  # cbor2 raises more than CBORError on hostile bytes (recursion, values)
        return None


class Traffic:
    """What one session's messages give the observer.

    ``values``: every value of 8+ bytes, with the first messages (indices) it was in. A
    topic gives its levels; a payload that is CBOR gives its byte and text leaves,
    recursively, a byte leaf that is itself CBOR (a proof inside a link message) being
    walked instead of taken whole, as its windows would compare the integers inside it as
    bytes; any other payload or leaf is one opaque value. Topic levels and text give the
    bytes of every hex run of 8+ bytes in them (a link topic spells the session id in hex,
    a result's detail an id) and, as text, what is left around hex runs: a hex run is
    compared as the bytes it spells. ``observe`` compares the 8-byte windows of every value.
    ``own``: request number -> message index, for the ledger requests whose exact bytes are
    a payload or a byte leaf here. ``queries``: (message index, ``ledger_ops.Query``) for
    every query found, on whatever topic: its tag says what it is.
    """

    def __init__(self, label, device, messages, requests):
        self.label, self.device = label, device
        self.topics, self.values, self.own, self.queries = [], {}, {}, []
        for i, message in enumerate(messages):
            topic, payload = message[-2], bytes(message[-1])
            topic = topic if isinstance(topic, str) else bytes(topic).decode("utf-8", "replace")
            self.topics.append(topic)
            for level in topic.split("/"):
                self._text(i, level.encode("utf-8", "surrogatepass"))
            self._walk(i, payload, requests)

    def _add(self, i, value):
        seen = self.values.setdefault(value, [])
        if len(seen) < EVIDENCE and i not in seen:
            seen.append(i)

    def _text(self, i, data):
        # Hex in text is compared as the bytes it spells (16+ digits: 8+ bytes); as text, 8
        # hex digits are only 32 bits, and two random ids share such a run by chance.
        for part in _HEX_TEXT.split(data):
            if len(part) >= MIN_BYTES:
                self._add(i, part)
        for run in _HEX_RUN.findall(data):
            for start in (0, 1):
                digits = run[start:len(run) - (len(run) - start) % 2]
                if len(digits) >= 2 * MIN_BYTES:
                    self._add(i, bytes.fromhex(digits.decode("ascii")))

    def _walk(self, i, payload, requests):
        todo = [payload]
        while todo:
            v = todo.pop()
            if isinstance(v, bytes):
                n = requests.get(v)
                if n is not None:
                    self.own.setdefault(n, i)
                inner = structure(v)
                if inner is None:
                    if len(v) >= MIN_BYTES:
                        self._add(i, v)
                    continue
                if type(inner) is list and inner and inner[0] == L.TAG_QUERY:
                    self._query(i, v)
                todo.append(inner)
            elif isinstance(v, str):
                self._text(i, v.encode("utf-8", "surrogatepass"))
            elif isinstance(v, int) and not isinstance(v, bool):
                if abs(v).bit_length() > BIG_INT_BITS:
                    self._add(i, abs(v).to_bytes((abs(v).bit_length() + 7) // 8, "big"))
            elif isinstance(v, (list, tuple)):
                todo.extend(v)
            elif isinstance(v, dict):
                todo.extend(v.keys())
                todo.extend(v.values())
            elif isinstance(v, cbor2.CBORTag):
                todo.append(v.value)

    def _query(self, i, data):
        try:
            self.queries.append((i, L.Query.decode(data)))
        except DecodeError:
            pass


# ---- shared values ------------------------------------------------------------------------

def windows(values):
    """(windows, owner): every 8-byte substring of ``values`` (each 8+ bytes) as a uint64,
    and the index of the value it came from. Eight bytes are exactly one uint64, so millions
    of windows sort and intersect as numpy arrays."""
    if not values:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    counts = lengths - (MIN_BYTES - 1)
    owner = np.repeat(np.arange(len(values)), counts)
    first = np.cumsum(counts) - counts
    pos = (np.cumsum(lengths) - lengths)[owner] + np.arange(int(counts.sum())) - first[owner]
    grams = np.lib.stride_tricks.sliding_window_view(np.frombuffer(b"".join(values), np.uint8), MIN_BYTES)[pos]
    return grams.view(">u8")[:, 0].astype(np.uint64), owner


def _union(arrays):
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.uint64)


def _shared_runs(traffic, exclude):
    """{run bytes: (sessions bitmask, {session: message indices})}: the maximal stretches of
    values whose every window is in 2+ sessions with the same sessions, other than windows
    every device has (with 2+ devices) and windows of excluded values."""
    lists = [list(t.values) for t in traffic]
    grams = [windows(v) for v in lists]
    per = [np.unique(w) for w, _ in grams]
    if not per:
        return {}
    found, count = np.unique(np.concatenate(per), return_counts=True)
    by_device = collections.defaultdict(list)
    for t, w in zip(traffic, per):
        by_device[t.device].append(w)
    dropped = [_union([windows([bytes(v) for v in exclude if len(v) >= MIN_BYTES])[0]])]
    if len(by_device) >= 2:
        dropped.append(functools.reduce(np.intersect1d, [_union(ws) for ws in by_device.values()]))
    shared = np.setdiff1d(found[count >= 2], _union(dropped), assume_unique=True)
    masks = collections.defaultdict(int)
    for k, w in enumerate(per):
        for g in np.intersect1d(w, shared, assume_unique=True).tolist():
            masks[g] |= 1 << k
    runs = {}
    for k, (values, (w, owner)) in enumerate(zip(lists, grams)):
        hits = np.flatnonzero(np.isin(w, shared))
        for start, end, mask in _runs(hits.tolist(), w[hits].tolist(), owner[hits].tolist(), masks):
            leaf = int(owner[start])
            offset = start - int(np.searchsorted(owner, leaf))
            value = values[leaf][offset:offset + end - start + MIN_BYTES]
            runs.setdefault(value, (mask, {}))[1].setdefault(k, traffic[k].values[values[leaf]])
    return runs


def _runs(positions, grams, owners, masks):
    """(first, last, mask) of each stretch of consecutive window positions in one value
    whose windows are shared by the same sessions."""
    out = []
    last_owner = None
    for p, g, o in zip(positions, grams, owners):
        mask = masks[g]
        if out and out[-1][1] == p - 1 and out[-1][2] == mask and o == last_owner:
            out[-1][1] = p
        else:
            out.append([p, p, mask])
        last_owner = o
    return out


# ---- the ledger's object graph ------------------------------------------------------------

def _channel_of(op):
    return op.channel_id if op.TAG == L.TAG_CHANNEL_SETTLE else op.state.channel_id


def creates(op, raw):
    """What ``op`` brings into being: outputs as (txhash, sn); channels, HTLCs, market
    requests and bids as (kind, id). Outputs and change lie at the request's id (the
    txhash of a transaction or mint, a channel's or an HTLC's id); payouts of a channel or
    an HTLC at the txhash derived from its id."""
    ident = request_id(op, raw)
    keys = [(ident, sn) for field in ("outputs", "change") for sn in range(len(getattr(op, field, ())))]
    tag = op.TAG
    if tag == L.TAG_CHANNEL_OPEN:
        keys.append(("channel", ident))
    elif tag == L.TAG_HTLC_CREATE:
        keys.append(("htlc", ident))
    elif tag == L.TAG_MARKET_REQUEST:
        keys.append(("market", op.request_key))
    elif tag == L.TAG_MARKET_BID:
        keys.append(("bid", op.digest()))
    elif tag in (L.TAG_CHANNEL_CLOSE, L.TAG_CHANNEL_SETTLE):
        payout = L.channel_payout_txhash(_channel_of(op))
        keys += [(payout, 0), (payout, 1)]
    elif tag in (L.TAG_HTLC_CLAIM, L.TAG_HTLC_REFUND):
        keys.append((L.htlc_payout_txhash(op.htlc_id), 0))
    return keys


def refers(op):
    """What ``op`` spends or acts on: every input (of any op with ``inputs``, so a new
    kind of operation is followed too), the channel, HTLC, market request or bid it names."""
    keys = [(i.pre_txhash, i.pre_sn) for i in getattr(op, "inputs", ())]
    tag = op.TAG
    if tag in (L.TAG_CHANNEL_CLOSE, L.TAG_CHANNEL_DISPUTE, L.TAG_CHANNEL_SETTLE):
        keys.append(("channel", _channel_of(op)))
    elif tag in (L.TAG_HTLC_CLAIM, L.TAG_HTLC_REFUND):
        keys.append(("htlc", op.htlc_id))
    elif tag in (L.TAG_MARKET_BID, L.TAG_MARKET_COMMIT, L.TAG_MARKET_WITHDRAW):
        keys.append(("market", op.request_key))
    if tag == L.TAG_MARKET_COMMIT:
        keys.append(("bid", op.bid_digest))
    return keys


def names(op, raw):
    """The keys a query can name ``op``'s objects by: its id and its bytes' hash, the
    txhash of every output it creates (or will: a channel's or HTLC's payouts), and the id
    of every channel, HTLC, market request or bid it creates."""
    ident = request_id(op, raw)
    out = {ident, sha256(raw)}
    for key in creates(op, raw):
        out.add(key[0] if isinstance(key[1], int) else key[1])
    if op.TAG == L.TAG_CHANNEL_OPEN:
        out.add(L.channel_payout_txhash(ident))
    elif op.TAG == L.TAG_HTLC_CREATE:
        out.add(L.htlc_payout_txhash(ident))
    return out


class Chain:
    """Every distinct request of the ledger that decodes, with who creates each object and
    what each request refers to; ``undecodable`` counts the distinct ones that do not."""

    def __init__(self, requests):
        self.index, self.ops, bad = {}, [], set()
        for raw in requests:
            raw = bytes(raw)
            if raw in self.index or raw in bad:
                continue
            try:
                op = L.decode_request(raw)
            except DecodeError:
                bad.add(raw)
                continue
            self.index[raw] = len(self.ops)
            self.ops.append((raw, op))
        self.undecodable = len(bad)
        self.creators = collections.defaultdict(list)
        for n, (raw, op) in enumerate(self.ops):
            for key in creates(op, raw):
                self.creators[key].append(n)
        self.parents = [[m for key in refers(op) for m in self.creators.get(key, ())] for _, op in self.ops]

    def closure(self, own):
        """``own`` and every request reachable backwards through inputs and references."""
        seen, todo = set(own), list(own)
        while todo:
            for m in self.parents[todo.pop()]:
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    def describe(self, n):
        raw, op = self.ops[n]
        return op.NAME, request_id(op, raw).hex()


# ---- the graph and its report -------------------------------------------------------------

class _Edges:
    """Edges by (session a, session b, reason), a < b: a count and the first evidence
    (given as a function, it is called only if kept: most pairs of a widely shared value
    need none)."""

    def __init__(self):
        self.found = {}

    def add(self, a, b, reason, evidence):
        if a == b:
            return
        entry = self.found.setdefault((min(a, b), max(a, b), reason), [0, []])
        entry[0] += 1
        if len(entry[1]) < EVIDENCE:
            entry[1].append(evidence() if callable(evidence) else evidence)


def _topics(t, messages):
    return list(dict.fromkeys(t.topics[i] for i in messages))


def _value_edges(edges, traffic, runs):
    for value, (mask, where) in runs.items():
        ks = [k for k in range(len(traffic)) if mask >> k & 1]
        topics = {k: _topics(traffic[k], where.get(k, ())) for k in ks}

        def make(a, b, value=value, topics=topics, count=len(ks)):
            return {"value": value.hex(), "bytes": len(value), "sessions": count,
                    "topics": {traffic[a].label: topics[a], traffic[b].label: topics[b]}}

        for x, a in enumerate(ks):
            for b in ks[x + 1:]:
                edges.add(a, b, SHARED_VALUE, functools.partial(make, a, b))


def _ancestry_edges(edges, traffic, chain):
    holders = collections.defaultdict(list)
    for k, t in enumerate(traffic):
        for n in chain.closure(t.own):
            holders[n].append(k)
    for n in sorted(holders, reverse=True):  # the nearest common ancestor first
        ks = holders[n]
        if len(ks) < 2:
            continue
        name, ident = chain.describe(n)
        evidence = {"request": name, "id": ident,
                    "own": [traffic[k].label for k in ks if n in traffic[k].own],
                    "ancestor": [traffic[k].label for k in ks if n not in traffic[k].own]}
        for x, a in enumerate(ks):
            for b in ks[x + 1:]:
                edges.add(a, b, ANCESTRY, evidence)


def _query_edges(edges, traffic, chain):
    named = collections.defaultdict(list)
    for k, t in enumerate(traffic):
        for n in t.own:
            raw, op = chain.ops[n]
            for key in names(op, raw):
                named[key].append((k, n))
    for b, t in enumerate(traffic):
        for i, q in t.queries:
            for a, n in named.get(q.key, ()):
                name, ident = chain.describe(n)
                evidence = {"by": t.label, "topic": t.topics[i], "kind": QUERY_KINDS.get(q.kind, q.kind),
                            "key": q.key.hex(), "names": "%s %s of %s" % (name, ident, traffic[a].label)}
                edges.add(a, b, QUERY, evidence)


def _components(nodes, links):
    parent = {k: k for k in nodes}

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in links:
        parent[root(a)] = root(b)
    groups = collections.defaultdict(list)
    for k in nodes:
        groups[root(k)].append(k)
    return sorted(groups.values())


def observe(sessions, devices, requests=(), exclude=(), target=None, limit=100):
    """The observer's report on ``sessions``: {label: messages}, each message a tuple
    ending in (topic, payload), e.g. a ``Capture`` record (time, topic, payload).

    ``devices``: {label: device} for every session. A value present in the sessions of
    every device (given two or more) is common and links nothing: with two devices that is
    any value they share, so give it three or more (the vehicle and two chargers).
    ``requests``: the raw bytes of every request in every block. ``exclude``: more values
    (bytes, or text as UTF-8) that link nothing, with their windows. ``target``: a device;
    the figures then count only its sessions and the edges between two of them, links
    through another device's session (a charger's, which only says the same charger served
    both) not joining them.
    ``limit`` caps the lists of edges and values; the counts are complete.

    Figures: ``sessions``, ``components``, ``linked_pairs`` (pairs of sessions in one
    component), ``shared_values`` (values seen in 2+ of the sessions counted),
    ``undecodable_requests``; detail: ``devices`` (how many the common-value rule saw),
    ``requests`` (distinct ones that decode), ``groups`` (components of 2+), ``pairs``,
    ``reasons`` (linked pairs per reason), ``edges`` ({sessions, reason, count, evidence},
    ``edges_total`` of them), ``values`` ({value, bytes, sessions, topics}).
    """
    missing = [label for label in sessions if label not in devices]
    if missing:
        raise ValueError("no device given for sessions %s" % ", ".join(map(str, missing)))
    if target is not None and target not in devices.values():
        raise ValueError("target device %r has no sessions" % (target,))
    chain = Chain(requests)
    traffic = [Traffic(label, devices[label], messages, chain.index) for label, messages in sessions.items()]
    runs = _shared_runs(traffic, [v.encode("utf-8") if isinstance(v, str) else v for v in exclude])
    edges = _Edges()
    _value_edges(edges, traffic, runs)
    _ancestry_edges(edges, traffic, chain)
    _query_edges(edges, traffic, chain)

    nodes = [k for k, t in enumerate(traffic) if target is None or t.device == target]
    counted = set(nodes)
    found = sorted((key, entry) for key, entry in edges.found.items() if key[0] in counted and key[1] in counted)
    components = _components(nodes, [key[:2] for key, _ in found])
    label = [t.label for t in traffic]
    pairs = [[label[a], label[b]] for group in components for x, a in enumerate(group) for b in group[x + 1:]]
    values = []
    for value, (mask, where) in runs.items():
        ks = [k for k in nodes if mask >> k & 1]
        if len(ks) >= 2:
            values.append({"value": value.hex(), "bytes": len(value), "sessions": [label[k] for k in ks],
                           "topics": {label[k]: _topics(traffic[k], where.get(k, ())) for k in ks}})
    values.sort(key=lambda v: (-len(v["sessions"]), -v["bytes"], v["value"]))
    return {
        "sessions": len(nodes),
        "components": len(components),
        "linked_pairs": len(pairs),
        "shared_values": len(values),
        "undecodable_requests": chain.undecodable,
        "requests": len(chain.ops),
        "devices": len(set(devices[label] for label in sessions)),
        "target": target,
        "session_labels": [label[k] for k in nodes],
        "groups": [[label[k] for k in group] for group in components if len(group) > 1],
        "pairs": pairs[:limit],
        "reasons": {r: sum(1 for key, _ in found if key[2] == r) for r in REASONS},
        "edges_total": len(found),
        "edges": [{"sessions": [label[a], label[b]], "reason": r, "count": count, "evidence": evidence}
                  for (a, b, r), (count, evidence) in found[:limit]],
        "values": values[:limit],
    }


def _short(hex_text, keep=16):
    return hex_text if len(hex_text) <= keep + 3 else hex_text[:keep] + "..."


def _evidence_line(reason, e):
    if reason == ANCESTRY:
        return "%s %s: own request of %s, ancestor in %s" % (
            e["request"], _short(e["id"]), ", ".join(e["own"]) or "none", ", ".join(e["ancestor"]) or "none")
    return "%s asks for %s %s (on %s): the %s" % (e["by"], e["kind"], _short(e["key"]), e["topic"], e["names"])


def report_lines(report, shown=20):
    """The report as text: the figures, then what linked, if anything: the shared values
    (with the topics they were on) and the ancestry and query edges, ``shown`` of each."""
    lines = ["%d sessions%s: %d components, %d linked pairs, %d shared values; %d ledger requests, %d undecodable"
             % (report["sessions"], " of %s" % report["target"] if report["target"] is not None else "",
                report["components"], report["linked_pairs"], report["shared_values"], report["requests"],
                report["undecodable_requests"])]
    if not report["edges_total"]:
        lines.append("nothing linked: every session is a component of its own")
        return lines
    lines.append("linked by: " + ", ".join("%s %d pairs" % (r, n) for r, n in report["reasons"].items() if n))
    lines.extend("component: " + ", ".join(map(str, group)) for group in report["groups"])
    values = report["values"][:shown]
    if values:
        lines.append("shared values (%d of %d):" % (len(values), report["shared_values"]))
    for v in values:
        where = ["%s (%s)" % (s, ", ".join(topics)) for s, topics in list(v["topics"].items())[:4]]
        more = len(v["sessions"]) - len(where)
        lines.append("  %s (%d bytes) in %s%s" % (_short(v["value"]), v["bytes"], "; ".join(where),
                                                  "; and %d more sessions" % more if more else ""))
    edges = [e for e in report["edges"] if e["reason"] != SHARED_VALUE][:shown]
    if edges:
        lines.append("ancestry and query edges (%d of %d):" % (
            len(edges), report["reasons"][ANCESTRY] + report["reasons"][QUERY]))
    for e in edges:
        lines.append("  %s ~ %s  %s x%d" % (e["sessions"][0], e["sessions"][1], e["reason"], e["count"]))
        lines.extend("      " + _evidence_line(e["reason"], item) for item in e["evidence"])
    return lines
