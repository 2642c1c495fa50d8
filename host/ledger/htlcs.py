"""HTLCs: ``(payer, payee, amount, H(r), timeout)`` funded like a transaction, claimed by the
payee with ``r`` before the timeout height, refunded to the payer from it on."""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256

from .fastpath import pubkey
from .payments import check_funding, create_outputs, spend
from .state import HtlcRow, Reject


def htlc_create(st, op, raw, height):
    htlc = op.htlc
    htlc_id = htlc.digest()
    st.require_new(htlc_id)
    if htlc.amount == 0:
        raise Reject(L.ZERO_AMOUNT, "htlc.amount is 0")
    if htlc.timeout <= height:
        raise Reject(L.HTLC_EXPIRED, "timeout %d is not after height %d" % (htlc.timeout, height))
    accounts = ((htlc.payer, "htlc.payer"), (htlc.payee, "htlc.payee"))
    found, fee = check_funding(st, op, op.signing_digest(), op.change, htlc.amount, accounts)
    if not st.verify(htlc.payer.pubkey, htlc, htlc.payer_sig):
        raise Reject(L.HTLC_BAD_SIGNATURE, "the terms are not signed by the payer")
    spend(st, found, htlc_id, height)
    create_outputs(st, htlc_id, op.change, height)
    st.add_total("burnt", fee)
    st.htlcs.insert((htlc_id,), HtlcRow(
        htlc.payer.encode(), htlc.payee.encode(), htlc.amount, htlc.hashlock, htlc.timeout, L.STATUS_OPEN, height))
    st.confirm(htlc_id, height, op, raw)
    return htlc_id


def _open_htlc(st, htlc_id):
    htlc = st.htlcs.get((htlc_id,))
    if htlc is None:
        raise Reject(L.HTLC_UNKNOWN, "no HTLC " + htlc_id.hex())
    if htlc.status != L.STATUS_OPEN:
        raise Reject(L.HTLC_NOT_OPEN, "the HTLC was claimed or refunded")
    return htlc


def _settle(st, htlc_id, htlc, account, status, height):
    txhash = L.htlc_payout_txhash(htlc_id)
    st.pay(txhash, ((0, account, htlc.amount),), height)
    st.htlcs.update((htlc_id,), htlc, htlc._replace(status=status))
    return txhash


def htlc_claim(st, op, raw, height):
    st.require_new(sha256(raw))
    htlc = _open_htlc(st, op.htlc_id)
    if height >= htlc.timeout:
        raise Reject(L.HTLC_EXPIRED, "claims end before height %d" % htlc.timeout)
    if sha256(op.preimage) != htlc.hashlock:
        raise Reject(L.HTLC_WRONG_PREIMAGE, "H(preimage) is not the hashlock")
    if not st.verify(pubkey(htlc.payee), op, op.payee_sig):
        raise Reject(L.HTLC_BAD_SIGNATURE, "the claim is not signed by the payee")
    txhash = _settle(st, op.htlc_id, htlc, htlc.payee, L.STATUS_CLAIMED, height)
    st.confirm(sha256(raw), height, op, raw)
    return txhash


def htlc_refund(st, op, raw, height):
    st.require_new(sha256(raw))
    htlc = _open_htlc(st, op.htlc_id)
    if height < htlc.timeout:
        raise Reject(L.HTLC_NOT_EXPIRED, "refunds start at height %d" % htlc.timeout)
    if not st.verify(pubkey(htlc.payer), op, op.payer_sig):
        raise Reject(L.HTLC_BAD_SIGNATURE, "the refund is not signed by the payer")
    txhash = _settle(st, op.htlc_id, htlc, htlc.payer, L.STATUS_REFUNDED, height)
    st.confirm(sha256(raw), height, op, raw)
    return txhash


def query_htlc(st, q):
    row = st.htlcs.get((q.key,))
    return None if row is None else list(row)


HANDLERS = {L.TAG_HTLC_CREATE: htlc_create, L.TAG_HTLC_CLAIM: htlc_claim, L.TAG_HTLC_REFUND: htlc_refund}
QUERIES = {L.QUERY_HTLC: query_htlc}
