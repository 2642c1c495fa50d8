"""``Ledger.check`` (what CheckTx settles before ordering) and ``apply_block``'s trusted
signatures (what FinalizeBlock skips): a check writes nothing, refuses only what no later
block can undo, and a block applied with the check's signatures gives exactly the results
and state of one that verifies everything."""
import pytest

import ledger_helpers as H
from plugpay.host.ledger import state as state_mod
from plugpay.protocol import ledger_ops as L

A, B, C, D = (H.Key(x) for x in "abcd")
CONSUMER, PRODUCER = H.Key("consumer"), H.Key("producer")


@pytest.fixture
def ledger(tmp_path):
    return H.open_ledger(tmp_path / "ledger.db")


def minted(ledger):
    (res,) = H.run(ledger, 1, H.faucet([(A, 1000), (B, 500)]))
    return H.coins(res.data, [(A, 1000), (B, 500)])


def checked(ledger, op, height=2):
    """``ledger.check`` of ``op``, asserting it changed neither the digest nor the snapshot."""
    before = ledger.state_digest(), ledger.snapshot()
    out = ledger.check(op if isinstance(op, bytes) else op.encode(), height)
    assert (ledger.state_digest(), ledger.snapshot()) == before
    return out


def count_verifications(monkeypatch):
    calls = []
    real = state_mod.signing.verify_digest
    monkeypatch.setattr(state_mod.signing, "verify_digest", lambda *a: calls.append(a) or real(*a))
    return calls


def test_a_good_transaction_passes_with_its_four_signatures(ledger):
    a, b = minted(ledger)
    check = checked(ledger, H.transaction([a, b], [(C, 1200), (D, 250)]))
    assert check.reason == L.OK and check.result is None
    assert len(check.signatures) == 4  # two witnesses, two new accounts' RA signatures


@pytest.mark.parametrize("build, reason", [
    (lambda a, b: H.transaction([a], [(C, 10)], signers=[B]), "BAD_INPUT_SIGNATURE"),
    (lambda a, b: H.transaction([a], [(H.Key("x", ra_secret=H.secret("not ra")), 10)]), "BAD_ACCOUNT_SIGNATURE"),
    (lambda a, b: H.transaction([a], [(C, 1001)]), "INPUTS_BELOW_OUTPUTS"),
    (lambda a, b: H.transaction([a, a], [(C, 10)]), "DUPLICATE_INPUT"),
    (lambda a, b: b"\x86\x02", "MALFORMED"),
    (lambda a, b: b"\x00" * (L.MAX_REQUEST_BYTES + 1), "TOO_LARGE"),
])
def test_refusals_no_block_can_undo_carry_the_ledgers_reason(ledger, build, reason):
    a, b = minted(ledger)
    op = build(a, b)
    check = checked(ledger, op)
    assert L.reason_name(check.reason) == reason
    raw = op if isinstance(op, bytes) else op.encode()
    assert check.result == ledger.execute(2, [raw])[0]  # the very Result a block would give


def test_spent_inputs_and_replays_are_refused_as_the_block_would(ledger):
    a, b = minted(ledger)
    pay = H.transaction([a], [(C, 900)])
    H.run(ledger, 2, pay)
    assert L.reason_name(checked(ledger, pay, 3).reason) == "DUPLICATE"
    assert L.reason_name(checked(ledger, H.transaction([a], [(D, 900)]), 3).reason) == "DOUBLE_SPEND"


def test_what_an_earlier_request_or_a_later_height_can_settle_passes(ledger):
    a, b = minted(ledger)
    pay = H.transaction([a], [(C, 900)])
    (c,) = H.coins(pay.txhash(), [(C, 900)])
    assert checked(ledger, H.transaction([c], [(D, 800)])).reason == L.OK  # spends what pay makes
    op = H.channel_open([b], CONSUMER, PRODUCER, 400)
    assert checked(ledger, op).reason == L.OK
    (res,) = H.run(ledger, 2, op)
    settle = L.ChannelSettle(res.data)
    assert checked(ledger, settle, 3).reason == L.OK  # no close yet: a block decides
    assert checked(ledger, H.htlc_refund(b"\x01" * 32, A), 3).reason == L.OK  # no such HTLC yet


def test_a_bad_signature_under_a_recorded_channels_keys_is_refused(ledger):
    a, b = minted(ledger)
    (res,) = H.run(ledger, 2, H.channel_open([b], CONSUMER, PRODUCER, 400))
    state = H.channel_state(res.data, 3, 120, CONSUMER, PRODUCER)
    forged = H.channel_close(state, CONSUMER, A)
    assert L.reason_name(checked(ledger, forged, 3).reason) == "CHANNEL_BAD_SIGNATURE"
    assert checked(ledger, H.channel_close(state, CONSUMER, PRODUCER), 3).reason == L.OK


def test_a_block_with_the_checks_signatures_verifies_none_again_and_ends_alike(tmp_path, monkeypatch):
    checker, plain = H.open_ledger(tmp_path / "a.db"), H.open_ledger(tmp_path / "b.db")
    a, b = minted(checker)
    minted(plain)
    ops = [H.transaction([a], [(C, 900)]).encode(), H.transaction([b], [(D, 400)], signers=[A]).encode()]
    trusted = {}
    for raw in ops:
        trusted[state_mod.sha256(raw)] = checker.check(raw, 2).signatures
    calls = count_verifications(monkeypatch)
    fast = checker.apply_block(2, ops, trusted)
    assert len(calls) == 1  # only the forged witness, which no check vouched for
    assert fast == plain.apply_block(2, ops)
    assert H.reasons([L.Result.decode(r) for r in fast.results]) == ["OK", "BAD_INPUT_SIGNATURE"]
    assert fast.reasons == [L.OK, L.BAD_INPUT_SIGNATURE]


def test_trusted_signatures_of_another_request_do_not_vouch_for_a_forgery(ledger):
    a, b = minted(ledger)
    good = H.transaction([a], [(C, 900)]).encode()
    forged = H.transaction([b], [(D, 400)], signers=[A]).encode()
    vouched = ledger.check(good, 2).signatures
    applied = ledger.apply_block(2, [forged], {state_mod.sha256(forged): vouched})
    assert applied.reasons == [L.BAD_INPUT_SIGNATURE]
