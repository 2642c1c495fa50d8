"""Answers that come late, wrong or not at all, and a dishonest peer's bytes: each ends in a
defined response code, never in an exception out of the session, and the money settles.

Real wallets and the real ledger state machine (``sessionsim``); the ledger's answers are
held back, forged or released late by wrapping what it serves."""
import pytest

from plugpay.firmware.session import CHANNEL, HTLC
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256
from test_session import World


def hold(w, side, which):
    """Keep ``side``'s ledger requests for which ``which(kind, raw)`` is true from the ledger;
    returns the list they collect in."""
    held = []
    serve = w.ledger.serve

    def holding(session, now):
        if session is side:
            requests = session.ledger_requests()
            held.extend((k, r) for k, r in requests if which(k, r))
            session._ledger = [(k, r) for k, r in requests if not which(k, r)] + session._ledger
        return serve(session, now)

    w.ledger.serve = holding
    return held


def release(w):
    del w.ledger.serve  # the ledger serves everything again


def test_a_channel_that_opens_after_the_link_stopped_is_closed_and_settled(tmp_path, authority):
    w = World(tmp_path, authority, n=5)
    c, p = w.consumer, w.producer
    held = hold(w, c, lambda kind, raw: raw[1] == L.TAG_CHANNEL_OPEN)
    w.pair.run(until=lambda: p.stopped and c.stopped)  # the ledger was slower than the payment timeout
    assert p.stop_code == M.FAILED_PaymentOverdue and not c.finished
    release(w)
    (kind, raw), = held
    c.ledger_answer(w.ledger.submit(raw), w.clock.now_ms())  # now it confirms
    w.run()
    assert c.finished and w.ledger.ledger.supply()["channels"] == 0  # closed alone and settled
    b = c.terms.budget()
    assert c.payout == b - b // w.params.installments  # the deposit's first installment stays paid


def test_htlcs_are_not_funded_further_once_the_link_stopped(tmp_path, authority):
    w = World(tmp_path, authority, mode=HTLC, n=5)
    c, p = w.consumer, w.producer
    held = hold(w, c, lambda kind, raw: raw[1] == L.TAG_HTLC_CREATE)
    w.pair.run(until=lambda: p.stopped and c.stopped and held)
    release(w)
    (kind, raw), = held
    c.ledger_answer(w.ledger.submit(raw), w.clock.now_ms())
    w.run()
    assert c.finished and c.payment.funded == 0
    assert [op for _, op, ok, _ in w.ledger.submitted if ok] == [L.TAG_HTLC_CREATE]  # one, to refund later


def test_an_undecodable_installment_stops_the_producer_with_a_code(tmp_path, authority):
    w = World(tmp_path, authority, n=5)
    c, p = w.consumer, w.producer
    w.pair.run(until=lambda: c.channel is not None)
    honest = c.channel.propose
    c.channel.propose = lambda paid, wh, receipt: b"\xff\xff" if paid == c.terms.paid_after(2) else honest(paid, wh, receipt)
    w.run()
    assert p.stop_code == M.FAILED_UnpaidOverLimit and c.stop_code == M.FAILED_UnpaidOverLimit
    assert c.finished and p.finished and p.payout == c.terms.paid_after(1)  # the last co-signed state


@pytest.mark.parametrize("row", [None, [], 5, [0, 0, 0, 0, 0, 0, b"x"], "other parties"])
def test_a_malformed_or_foreign_channel_row_is_refused(tmp_path, authority, row):
    w = World(tmp_path, authority, n=5)
    c, p = w.consumer, w.producer
    held = hold(w, p, lambda kind, raw: kind == "query")
    w.pair.run(until=lambda: held)
    (kind, query), = held
    if row == "other parties":  # the right shape for another channel
        row = L.Result.decode(w.ledger.query(query)).data
        row[0], row[1] = row[1], row[0]
    foreign = isinstance(row, list) and len(row) == 10
    p.ledger_answer(L.Result(sha256(query), True, L.OK, "", row).encode(), w.clock.now_ms())
    # A malformed answer is refused; a channel paying someone else is no deposit.
    assert p.stop_code == (M.FAILED_UnpaidOverLimit if foreign else M.FAILED)
    assert p.machine.installments_paid == 0  # the deposit was not taken as paid
    release(w)
    w.run()
    assert c.finished and p.finished and w.ledger.ledger.supply()["channels"] == 0


def test_a_preimage_whose_check_comes_back_after_the_stop_is_still_claimed(tmp_path, authority):
    w = World(tmp_path, authority, mode=HTLC, n=5)
    c, p = w.consumer, w.producer
    late = lambda kind, raw: kind == "query" and p.series is not None and L.Query.decode(raw).key == p.series.htlc_id(2)  # noqa: E731
    held = hold(w, p, late)
    w.run()  # the consumer gives up waiting for the answer to installment 2
    assert c.stop_code == M.FAILED_Timeout and held
    p.ledger_answer(w.ledger.query(held[0][1]), w.clock.now_ms())  # the ledger's answer, late
    release(w)
    w.run()
    per = c.terms.budget() // w.params.installments
    assert p.finished and p.payout == 3 * per  # HTLCs 0, 1 and 2: every preimage it holds


def test_the_consumer_pays_for_no_less_than_it_measured(tmp_path, authority):
    w = World(tmp_path, authority, n=10, meter_error_ppm=2793)  # the meter over-reads 0.28 %
    p = w.producer
    tol = w.params.tolerance_wh

    def short(now):  # and the charger (producing, metering) stops every chunk its tolerance early
        p.energy.chunk = p.params.due_wh(p.machine.readings + 1) - tol
        p.board.start_delivery(p.energy.chunk)
        p.energy.read_meter(now)

    p.energy.start_chunk = short
    w.run()
    assert w.consumer.stop_code == M.FAILED_ReceiptMismatch
    w.check_bounds()

