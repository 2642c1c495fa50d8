"""The book's integrity check (``wallet check``): invariants of the coins and, for every
pending request, that its bytes are what the book says they are. Loaded only when asked.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.port import collect

from .books import spend_ident
from .coins import CLEAN


def check(books):
    """``Books.check``."""
    problems = []
    seen = []
    reserved = books.keystore.reserved
    held = list(books.coins)
    for s in books.spends:
        held.extend(s.inputs)
    for c in held:
        if c.key() in seen:
            problems.append("coin %s:%d is in the book twice" % (c.txhash.hex(), c.sn))
        seen.append(c.key())
        if c.amount == 0:
            problems.append("coin %s:%d has amount 0" % (c.txhash.hex(), c.sn))
        if c.index >= reserved:
            problems.append("coin %s:%d belongs to key %d, never handed out" % (c.txhash.hex(), c.sn, c.index))
    for s in books.spends:
        problems.extend(_check_spend(books, s))
        collect()
    return problems


def _check_spend(books, s):
    where = "pending request %s" % s.ident.hex()
    try:
        op = L.decode_request(s.request)
    except ValueError as e:
        return [where + ": does not decode (%s)" % e]
    if op.TAG != s.kind or spend_ident(op) != s.ident:
        return [where + ": its bytes are another request"]
    if [(i.pre_txhash, i.pre_sn) for i in op.inputs] != [c.key() for c in s.inputs]:
        return [where + ": its inputs are not the coins the book took for it"]
    groups = [c.group for c in s.inputs if c.group != CLEAN]
    mine = s.group() if s.kind == L.TAG_HTLC_CREATE else None
    if len(set(groups)) > 1 or (s.kind != L.TAG_REDEEM and groups and groups[0] != mine):
        return [where + ": it spends coins of another session, which ties them together"]
    if s.kind == L.TAG_REDEEM:
        from .books_redeem import outputs

        if op.order != L.redeem_order(s.meta, outputs(books, s.change)):
            return [where + ": its order is not the fresh coins the book expects"]
    digest = op.signing_digest()
    for c, w in zip(s.inputs, op.witnesses):
        if not signing.verify_digest(signing.public_key(books.keystore.secret(c.index)), digest, w):
            return [where + ": witness for %s:%d does not verify" % (c.txhash.hex(), c.sn)]
    return []
