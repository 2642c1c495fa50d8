"""The ledger's fast path (``host/ledger/fastpath.py``) against the generic schema code it
stands in for: every encoder gives the same bytes, the transaction decoder accepts only
what the schema accepts and builds the same record, and a block gives the same results,
digest and snapshot either way."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger_helpers as H
from plugpay.host.ledger import fastpath
from plugpay.protocol import codec
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError

A, B, C, D = (H.Key(x) for x in "abcd")


def mint(ledger, pays, nonce=0, height=1):
    (res,) = H.run(ledger, height, H.faucet(pays, nonce))
    assert res.ok, res.detail
    return H.coins(res.data, pays)


@pytest.mark.parametrize("key", [
    (b"\x00" * 32, 0), (b"\xff" * 32, 23), (b"\x01" * 32, 24), (b"\x01" * 32, 1 << 40),
    (b"\x02" * 31, 3), (b"\x03" * 32,), (b"\x03" * 33,), (b"",), ("burnt",), ("minted",),
    (b"\x04" * 32, b"\x05" * 33), (b"\x04" * 32, True),
])
def test_digest_key_encoding_is_the_codec_encoding(key):
    assert fastpath.key_cbor(key) == codec.dumps(list(key))


# -- the transaction fast path -----------------------------------------------------------

def _valid_transaction():
    spend = [H.Coin(b"\x11" * 32, 0, 700, A), H.Coin(b"\x22" * 32, 3, 300, B)]
    return H.transaction(spend, [(C, 700), (D, 300)]).encode()


_LEAVES = st.one_of(
    st.integers(min_value=-(1 << 64), max_value=(1 << 65)), st.booleans(), st.none(), st.text(max_size=3),
    st.binary(max_size=70), st.sampled_from([b"\x02" * 33, b"\x04" * 33, b"\x00" * 64, b"\x00" * 32, 1.5]),
    st.lists(st.integers(0, 30), max_size=3))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


def _replace(value, path, new):
    if not path:
        return new
    value = list(value)
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


def _generic(raw):
    try:
        return L.decode_request(raw)
    except DecodeError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_transaction_fast_decode_accepts_only_what_the_schema_accepts_and_builds_the_same(data):
    """The ledger's fast path for transactions (``fastpath.decode_transaction``) either declines or
    gives exactly the ``Transaction`` the generic decoder gives: mutated values, mutated
    bytes, non-deterministic encodings. What it declines, the generic decoder answers."""
    raw = _valid_transaction()
    value = codec.loads(raw)
    kind = data.draw(st.sampled_from(["value", "bytes", "none"]))
    if kind == "value":
        path = data.draw(st.sampled_from(list(_paths(value))[1:]))
        try:
            raw = codec.dumps(_replace(value, path, data.draw(_LEAVES)))
        except Exception:
            return
    elif kind == "bytes":
        at = data.draw(st.integers(0, len(raw) - 1))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "widen"]))
        if edit == "flip":
            raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
        elif edit == "insert":
            raw = raw[:at] + data.draw(st.binary(min_size=1, max_size=3)) + raw[at:]
        elif edit == "delete":
            raw = raw[:at] + raw[at + 1:]
        else:  # a non-shortest head for a small integer
            raw = raw[:at] + b"\x18" + raw[at:] if raw[at] < 24 else raw
    fast, generic = fastpath.decode_transaction(raw), _generic(raw)
    if kind == "none":
        assert fast is not None
    if fast is not None:
        assert generic is not None and fast == generic
        assert [type(o.account) for o in fast.outputs] == [S.Account] * len(fast.outputs)
        assert fast.encode() == raw


@pytest.mark.parametrize("epoch", [0, 23, 24, 255, 256, 65536, 0xFFFFFFFF])
@pytest.mark.parametrize("ra_sig", [b"", b"\x07" * 64])
def test_account_encoding_written_directly_is_the_schema_encoding(epoch, ra_sig):
    account = S.Account(A.account.pubkey, epoch, ra_sig)
    assert fastpath.account_bytes(account) == account.encode()
    assert fastpath.account_digest(account) == account.signing_digest()


def test_fast_path_leaves_results_and_digest_as_the_generic_decoder_does(tmp_path, monkeypatch):
    """One block of good, refused and malformed transactions: the same results, state digest
    and snapshot with the fast path as with only the generic decoder."""
    from plugpay.host.ledger import core

    def block(path):
        ledger = H.open_ledger(path)
        a, b, c = mint(ledger, [(A, 1000), (B, 500), (C, 200)])
        good = H.transaction([a, b], [(C, 1400)]).encode()
        forged = H.transaction([c], [(D, 100)], signers=[A]).encode()
        value = codec.loads(H.transaction([c], [(D, 150)]).encode())
        value[4][0][1] = 0  # an output of 0
        noncanonical = b"\x86\x18\x02" + good[2:]
        ops = [good, good, forged, codec.dumps(value), noncanonical, good[:-1], b"\x86\x02"]
        results = ledger.execute(2, ops)
        return results, ledger.state_digest(), ledger.snapshot()

    fast = block(tmp_path / "fast.db")
    monkeypatch.setattr(core, "decode_transaction", lambda raw: None)
    assert block(tmp_path / "generic.db") == fast
    assert [L.Result.decode(r).reason for r in fast[0]] == [
        L.OK, L.DUPLICATE, L.BAD_INPUT_SIGNATURE, L.ZERO_AMOUNT, L.MALFORMED, L.MALFORMED, L.MALFORMED]
    ok = L.Result.decode(fast[0][0])
    assert fast[0][0] == L.Result(ok.request_digest, True, L.OK, "", ok.data).encode()
