"""A session paid through a series of N HTLCs (``payment.Payment`` for ``firmware.session``).

The consumer funds all N HTLCs of b/N each, one ledger transaction each, and pays
installment 0 once every one is confirmed: the series' terms with the preimage r_0;
installment k is r_k. The producer checks on the ledger that HTLC k is open before it
accepts the preimage, and claims each one; what it did not claim refunds to the consumer
after the timeout.
"""
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError

from .htlcs import HtlcError, compact_terms, expand_terms
from .payment import Payment


class HtlcPayment(Payment):
    """One side's HTLC series in a session: ``series`` is the wallet's ``HtlcSeries``."""

    NAME = "HTLC series"

    def __init__(self, session):
        Payment.__init__(self, session)
        self.series = None
        self.funded = 0  # consumer: HTLCs confirmed
        self.claims = 0  # producer: claims waiting for the ledger
        self.closing_started = False

    # ---- consumer ------------------------------------------------------------------------

    def deposit(self, producer_account, now):
        s = self.s
        n = s.params.installments
        self.series = s.wallet.start_htlcs(producer_account, s.terms.budget() // n, n, s.terms.htlc_timeout)
        self._fund_next(now)

    def _fund_next(self, now):
        raw = self.s.wallet.fund_htlc(self.series.series_id, self.funded, self.s.terms.fee)
        self.s.submit(raw, self._funded)

    def _funded(self, result, data, now):
        s = self.s
        outcome = s.wallet.handle_result(data)
        if s.stopped:  # no more HTLCs once the link is over; the funded ones refund later
            return s.after_stop(now)
        if outcome != "confirmed":
            s.note(now, "HTLC %d: %s %s" % (self.funded, L.reason_name(result.reason), result.detail))
            return s.stop(M.FAILED, now)
        self.funded += 1
        if self.funded < s.params.installments:
            return self._fund_next(now)
        s.note(now, "%d HTLCs funded" % self.funded)
        s.pay(now)

    def ready(self):
        return self.funded >= self.s.params.installments

    def pay(self, k, now):
        preimage = self.series.reveal(k)
        self.s.signed(self.s.terms.paid_after(k), now)
        return codec.dumps([compact_terms(self.series), preimage]) if k == 0 else preimage

    # ---- producer ------------------------------------------------------------------------

    def accept(self, k, proof, now):
        s = self.s
        if k == 0:
            try:
                terms, preimage = codec.loads(proof, "htlc deposit", M.MAX_PROOF_BYTES)
            except (DecodeError, TypeError, ValueError) as e:
                raise HtlcError("the HTLC deposit: %s" % e)
            if not isinstance(terms, bytes) or not isinstance(preimage, bytes):
                raise HtlcError("the HTLC deposit is [terms, preimage]")
            self.series = s.wallet.accept_htlcs(expand_terms(terms, s.account), s.index)
            if self.series.count() != s.params.installments \
                    or self.series.rec.amount * self.series.count() != s.terms.budget():
                raise HtlcError("the series is not %d HTLCs of %d" % (
                    s.params.installments, s.terms.budget() // s.params.installments))
            if self.series.rec.timeout < s.terms.htlc_timeout:
                raise HtlcError("the HTLCs refund from block %d, before the agreed %d" % (
                    self.series.rec.timeout, s.terms.htlc_timeout))
        else:
            preimage = proof
        self.series.take_preimage(k, preimage)
        query = L.Query(L.QUERY_HTLC, self.series.htlc_id(k), 0).encode()
        s.query(query, lambda result, data, t: self._seen(k, data, t))

    def _seen(self, k, data, now):
        s = self.s
        row = self.series.ledger_row(k, data)
        if row is None or row[5] != L.STATUS_OPEN:
            s.note(now, "HTLC %d is not open on the ledger: %s" % (
                k, "not there" if row is None else "status %d" % row[5]))
            return s.stop(M.FAILED_UnpaidOverLimit, now)
        if not s.stopped:  # else the link is over, but the preimage I hold is still claimed
            s.accepted(k, b"", now)
        self.claims += 1
        s.submit(self.series.claim(k), lambda r, d, t: self._claimed(k, d))

    def _claimed(self, k, data):
        s = self.s
        if s.wallet.settle_htlc(self.series.series_id, k, data) == "claimed":
            s.payout = (s.payout or 0) + self.series.rec.amount
        self.claims -= 1
        if s.stopped and self.claims == 0:
            s.finished = True

    # ---- resumes and the end ---------------------------------------------------------------

    def balance(self):
        """The count of preimages given (none before the series: the same bytes as 0)."""
        return codec.dumps(0 if self.series is None else self.series.rec.revealed)

    def progress(self, balance):
        """The count of preimages given."""
        if not balance:
            return 0
        try:
            given = codec.loads(balance, "preimages given", 16)
        except DecodeError:
            return None
        return given if type(given) is int and given >= 0 else None

    def close(self, now):
        s = self.s
        if self.closing_started or (not s.producer and s.awaiting_ledger()):
            return  # settled once; or an HTLC is on its way: settled once answered
        self.closing_started = True
        if self.series is not None and not s.producer:
            s.note(now, "%d of %d preimages revealed; the rest refund after block %d" % (
                self.series.rec.revealed, self.series.count(), self.series.rec.timeout))
        s.finished = not s.producer or self.claims == 0
