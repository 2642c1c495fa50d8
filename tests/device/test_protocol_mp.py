"""The wire codec and structures under the real MicroPython: same bytes, same refusals."""
import mpyunit
from plugpay.protocol import cbor, codec
from plugpay.protocol import structures as S
from plugpay.protocol.codec import DecodeError

U64 = (1 << 64) - 1
VECTORS = [
    (0, "00"), (23, "17"), (24, "1818"), (256, "190100"), (65536, "1a00010000"),
    (U64, "1bffffffffffffffff"), (-1, "20"), (-1 - U64, "3bffffffffffffffff"),
    (b"", "40"), ("\u00e9", "62c3a9"), ([], "80"), ([1, [2, 3]], "8201820203"),
    (False, "f4"), (True, "f5"), (None, "f6"),
]
BAD = ["1801", "190017", "5801ff", "0102", "5f41ffff", "f90000", "c101", "a0", "f7",
       "62fffe", "", "43aabb", "8301", "5bffffffffffffffff", "1c"]


def test_backend_is_the_embedded_codec():
    assert codec.BACKEND == "plugpay", codec.BACKEND


def test_rfc8949_vectors():
    for value, hex_ in VECTORS:
        assert codec.dumps(value).hex() == hex_, hex_
        assert codec.loads(bytes.fromhex(hex_)) == value, hex_


def test_bool_is_not_an_int_and_back():
    # isinstance(True, int) is False on MicroPython, True on CPython: both must encode f5.
    assert cbor.dumps([True, 1, False, 0]).hex() == "84f501f400"
    assert codec.loads(bytes.fromhex("84f501f400")) == [True, 1, False, 0]


def test_bad_encodings_are_refused():
    for hex_ in BAD:
        try:
            codec.loads(bytes.fromhex(hex_), "probe")
        except DecodeError as e:
            assert e.field == "probe"
            continue
        raise AssertionError("accepted " + hex_)


def account(i):
    return S.Account(bytes([2]) + bytes([i]) * 32, 1, bytes([i]) * 64)


def test_structures_round_trip():
    mpyunit.step("start")
    acc = account(7)
    tx = S.Transaction([S.TxInput(bytes(32), 0), S.TxInput(bytes([1]) * 32, 1)], S.Price(35, 500000),
                       [S.TxOutput(account(1), 300000), S.TxOutput(account(2), 200000)], [bytes(64), bytes(64)])
    mpyunit.step("built")
    for obj in (acc, tx, S.LinkMessage(bytes(16), 1, 2, [1, b"x", "y", [None, True]])):
        raw = obj.encode()
        back = type(obj).decode(raw)
        assert back == obj and back.encode() == raw
    assert len(tx.encode()) == 440
    mpyunit.step("round-tripped")


def test_field_errors_are_named():
    value = codec.loads(account(1).encode())
    value[2] = bytes(32)
    try:
        S.Account.decode(codec.dumps(value))
        raise AssertionError("short key accepted")
    except DecodeError as e:
        assert e.field == "account.pubkey", e.field
    tx = codec.loads(S.Transaction([S.TxInput(bytes(32), 0)], S.Price(1, 1), [S.TxOutput(account(1), 1)], [bytes(64)]).encode())
    tx[4][0][1] = True
    try:
        S.Transaction.decode(codec.dumps(tx))
        raise AssertionError("boolean amount accepted")
    except DecodeError as e:
        assert e.field == "transaction.outputs[0].amount", e.field
    try:
        S.Transaction.decode(account(1).encode())
        raise AssertionError("account accepted as transaction")
    except DecodeError as e:
        assert "type tag" in e.reason


def test_ledger_requests_round_trip():
    from plugpay.protocol import ledger_ops as L

    opened = L.ChannelOpen([S.TxInput(bytes(32), 0)], account(3), account(4), 1000, 10, 6, [], [bytes(64)])
    assert opened.first_installment() == 100
    faucet = L.Faucet(1, [S.TxOutput(account(5), 10)], bytes(64))
    for obj in (opened, faucet):
        raw = obj.encode()
        back = L.decode_request(raw)
        assert type(back) is type(obj) and back.encode() == raw
    try:
        L.decode_request(bytes.fromhex("83181f0180"))  # tag 31 is a Result, not a request
        raise AssertionError("result accepted as a request")
    except DecodeError:
        pass


def test_body_sliced_from_the_decoded_bytes():
    tx = S.Transaction([S.TxInput(bytes(32), 0), S.TxInput(bytes([1]) * 32, 1)], S.Price(35, 500000),
                       [S.TxOutput(account(1), 300000)], [bytes([7]) * 64, bytes([8]) * 64])
    raw = tx.encode()
    back = S.Transaction.decode(raw)
    assert back.body_from(raw) == back.body() == tx.body()
    assert back.body_from(memoryview(raw)) == tx.body()
