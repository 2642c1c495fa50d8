"""State channels: open with collateral, cooperative close, unilateral close with a dispute
window in which a higher fully signed state overrides a stale one, and settle after it."""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.port import sha256

from .fastpath import pubkey
from .payments import check_funding, create_outputs, spend
from .state import Channel, Reject


def channel_open(st, op, raw, height):
    body = op.body_from(raw)
    channel_id = sha256(body)  # = op.channel_id()
    accounts = ((op.consumer, "consumer"), (op.producer, "producer"))
    found, fee = check_funding(st, op, sha256(op.domain() + body), op.change, op.collateral, accounts, channel_id)
    spend(st, found, channel_id, height)
    create_outputs(st, channel_id, op.change, height)
    st.add_total("burnt", fee)
    st.channels.insert((channel_id,), Channel(
        op.consumer.encode(), op.producer.encode(), op.collateral, op.installments, op.window,
        L.STATUS_OPEN, 0, op.first_installment(), 0, height))
    st.confirm(channel_id, height, op, raw)
    return channel_id


def _live_channel(st, channel_id):
    channel = st.channels.get((channel_id,))
    if channel is None:
        raise Reject(L.CHANNEL_UNKNOWN, "no channel " + channel_id.hex())
    if channel.status == L.STATUS_CLOSED:
        raise Reject(L.CHANNEL_CLOSED, "channel is closed")
    return channel


def _check_state(st, channel, state):
    """A state the ledger may close on: seq 0 is exactly the opening state (no
    signatures needed); any later seq is signed by both parties named at open."""
    if state.paid_to_producer > channel.collateral:
        raise Reject(L.CHANNEL_OVERPAID, "pays %d of a %d collateral" % (state.paid_to_producer, channel.collateral))
    if state.seq == 0:
        opening = L.opening_state(state.channel_id, channel.collateral // channel.installments)
        if state.body() != opening.body():
            raise Reject(L.CHANNEL_BAD_STATE, "seq 0 must be the opening state")
        return
    if not state.fully_signed():
        raise Reject(L.CHANNEL_NOT_SIGNED, "state seq %d lacks a signature" % state.seq)
    digest = state.signing_digest()
    if not (st.verify_digest(pubkey(channel.consumer), digest, state.sig_consumer)
            and st.verify_digest(pubkey(channel.producer), digest, state.sig_producer)):
        raise Reject(L.CHANNEL_BAD_SIGNATURE, "state seq %d is not signed by this channel's parties" % state.seq)


def _pay_out(st, channel_id, channel, seq, paid, height):
    txhash = L.channel_payout_txhash(channel_id)
    st.pay(txhash, ((0, channel.producer, paid), (1, channel.consumer, channel.collateral - paid)), height)
    st.channels.update((channel_id,), channel, channel._replace(status=L.STATUS_CLOSED, seq=seq, paid=paid))
    return txhash


def channel_close(st, op, raw, height):
    st.require_new(sha256(raw))
    state = op.state
    channel = _live_channel(st, state.channel_id)
    if state.seq < channel.seq:
        raise Reject(L.CHANNEL_STALE_STATE, "seq %d is below the recorded %d" % (state.seq, channel.seq))
    _check_state(st, channel, state)
    digest = op.signing_digest()
    if not (st.verify_digest(pubkey(channel.consumer), digest, op.sig_consumer)
            and st.verify_digest(pubkey(channel.producer), digest, op.sig_producer)):
        raise Reject(L.CHANNEL_BAD_SIGNATURE, "the close is not signed by both parties")
    txhash = _pay_out(st, state.channel_id, channel, state.seq, state.paid_to_producer, height)
    st.confirm(sha256(raw), height, op, raw)
    return txhash


def channel_dispute(st, op, raw, height):
    st.require_new(sha256(raw))
    state = op.state
    channel = _live_channel(st, state.channel_id)
    if channel.status == L.STATUS_CLOSING:
        if height >= channel.deadline:
            raise Reject(L.CHANNEL_WINDOW_OVER, "the dispute window ended at %d" % channel.deadline)
        if state.seq <= channel.seq:
            raise Reject(L.CHANNEL_STALE_STATE, "seq %d does not beat the recorded %d" % (state.seq, channel.seq))
    _check_state(st, channel, state)
    closer = channel.producer if op.by_producer else channel.consumer
    if not st.verify(pubkey(closer), op, op.closer_sig):
        raise Reject(L.CHANNEL_BAD_SIGNATURE, "the dispute is not signed by the closing party")
    deadline = channel.deadline if channel.status == L.STATUS_CLOSING else height + channel.window
    st.channels.update((state.channel_id,), channel, channel._replace(
        status=L.STATUS_CLOSING, seq=state.seq, paid=state.paid_to_producer, deadline=deadline))
    st.confirm(sha256(raw), height, op, raw)
    return deadline


def channel_settle(st, op, raw, height):
    st.require_new(sha256(raw))
    channel = _live_channel(st, op.channel_id)
    if channel.status != L.STATUS_CLOSING:
        raise Reject(L.CHANNEL_NOT_CLOSING, "no unilateral close to settle")
    if height < channel.deadline:
        raise Reject(L.CHANNEL_TOO_EARLY, "the dispute window lasts until height %d" % channel.deadline)
    txhash = _pay_out(st, op.channel_id, channel, channel.seq, channel.paid, height)
    st.confirm(sha256(raw), height, op, raw)
    return txhash


def query_channel(st, q):
    row = st.channels.get((q.key,))
    return None if row is None else list(row)


HANDLERS = {
    L.TAG_CHANNEL_OPEN: channel_open,
    L.TAG_CHANNEL_CLOSE: channel_close,
    L.TAG_CHANNEL_DISPUTE: channel_dispute,
    L.TAG_CHANNEL_SETTLE: channel_settle,
}
QUERIES = {L.QUERY_CHANNEL: query_channel}
