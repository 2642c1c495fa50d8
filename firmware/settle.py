"""Finishing what sessions left open: after a crash, a reboot or a session that timed out.

A session settles its own money while it runs; a wallet that lost its session (the power
went, the process was killed, the run timed out) still holds everything it needs on
flash, and ``settle`` finishes it from there through the gateway, in one pass:

* requests the ledger never answered (a channel open, an HTLC create, a payment) go again
  (a repeat is answered ``DUPLICATE`` and booked as confirmed);
* a channel still open is closed alone with my latest co-signed state; one another side
  closed with an older state is answered with mine within the window; one whose window
  passed is settled; a closed one has my payout booked and its record removed;
* HTLCs: the payee claims every one whose preimage it holds, the payer refunds every one
  never revealed once its timeout block has come; a finished series is forgotten.

What must wait for the ledger (a dispute window, an HTLC timeout) is reported, not waited
for: run it again later. Each line of the report names the channel or HTLC and what
happened; nothing is changed on an answer the wallet refuses.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError

from .bookkeeping import WalletError
from .channels import ChannelError
from .htlcs import OPEN, PAYEE, PAYER, HtlcError

_REFUSED = (WalletError, ChannelError, HtlcError, DecodeError)


def settle(wallet, gateway):
    """One pass over ``wallet`` with ``gateway`` (a ``GatewayClient``); returns the report,
    a list of lines. ``GatewayError`` (no answer) passes through: nothing was lost, run it
    again."""
    report = []
    for raw in wallet.pending_requests():
        try:
            report.append("request %s: %s" % (_tag(raw), wallet.handle_result(gateway.submit(raw).encode())))
        except _REFUSED as e:
            report.append("request %s: answer refused: %s" % (_tag(raw), e))
    for channel_id in sorted(wallet.channels):
        report.append("channel %s: %s" % (channel_id.hex()[:16], _channel(wallet, gateway, channel_id)))
    for series_id in sorted(wallet.htlcs):
        report.extend("HTLC series %s: %s" % (series_id.hex()[:16], line)
                      for line in _series(wallet, gateway, series_id))
    return report


def _tag(raw):
    try:
        return type(L.decode_request(raw)).__name__
    except (DecodeError, L.UnknownOp):
        return "?"


def _channel(wallet, gateway, channel_id):
    channel = wallet.channel(channel_id)
    try:
        answer = gateway.query(channel.query()).encode()
        row = channel.ledger_row(answer)
        if row is None:
            return "not on the ledger (its open was never confirmed): nothing is locked"
        status, seq, deadline = row[5], row[6], row[8]
        latest = channel.latest().seq
        if status == L.STATUS_OPEN or (status == L.STATUS_CLOSING and seq < latest):
            result = gateway.submit(channel.dispute())
            if not result.ok and result.reason != L.DUPLICATE:
                return "closing alone with seq %d refused: %s %s" % (
                    latest, L.reason_name(result.reason), result.detail)
            return "closing alone with my latest state, seq %d%s; settle after the window" % (
                latest, "" if status == L.STATUS_OPEN else " (the other side closed with seq %d)" % seq)
        if status == L.STATUS_CLOSING:
            result = gateway.submit(channel.settle())
            if result.reason == L.CHANNEL_TOO_EARLY:
                return "closing with seq %d; the window ends at block %d: run again then" % (seq, deadline)
            if not (result.ok or result.reason in (L.DUPLICATE, L.CHANNEL_CLOSED)):
                return "settle refused: %s %s" % (L.reason_name(result.reason), result.detail)
            answer = gateway.query(channel.query()).encode()
        return "closed: %d paid out to me" % wallet.finish_channel(channel_id, answer)
    except _REFUSED as e:
        return "the ledger's answer was refused, nothing changed: %s" % e


def _series(wallet, gateway, series_id):
    series = wallet.series(series_id)
    lines = []
    for i in range(series.count()):
        if series.state(i) != OPEN:  # the others are settled or were never funded
            continue
        revealed = i < series.rec.revealed
        if series.role == PAYEE and revealed:
            request = series.claim(i)
        elif series.role == PAYER and not revealed:
            request = series.refund(i)
        else:
            continue  # the payer's revealed ones are the payee's to claim; the payee waits for preimages
        try:
            result = gateway.submit(request)
            if result.reason == L.HTLC_NOT_EXPIRED:
                lines.append("HTLC %d refunds from block %d: run again then" % (i, series.rec.timeout))
                continue
            if result.reason == L.HTLC_EXPIRED:
                lines.append("HTLC %d expired before it was claimed: the payer refunds it" % i)
                continue
            lines.append("HTLC %d: %s" % (i, wallet.settle_htlc(series_id, i, result.encode())))
        except _REFUSED as e:
            lines.append("HTLC %d: the ledger's answer was refused, nothing changed: %s" % (i, e))
    if series.done():
        try:
            wallet.forget_series(series_id)
            lines.append("settled, forgotten")
        except WalletError as e:
            lines.append("done, kept: %s" % e)
    elif not lines:
        lines.append("nothing to do yet (%s)" % ("preimages not all revealed" if series.role == PAYEE
                                               else "the payee may still claim"))
    return lines
