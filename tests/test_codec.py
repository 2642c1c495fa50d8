"""The strict CBOR codec: byte-for-byte equal to cbor2, and one strictness rule for both."""
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugpay.protocol import cbor, codec
from plugpay.protocol.codec import DecodeError

U64 = (1 << 64) - 1

subset_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-1 - U64, max_value=U64)
    | st.binary(max_size=300)
    | st.text(max_size=80),
    lambda children: st.lists(children, max_size=6),
    max_leaves=40,
)


@pytest.fixture(params=["cbor2", "plugpay"])
def backend(request):
    codec.use(request.param)
    yield request.param
    codec.use("cbor2")


@settings(max_examples=1500, deadline=None)
@given(subset_values)
def test_encoding_is_byte_identical_to_cbor2(value):
    assert cbor.dumps(value) == cbor2.dumps(value)
    assert cbor.loads(cbor.dumps(value)) == value


@pytest.mark.parametrize(
    "value, hex_",
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (255, "18ff"),
        (256, "190100"),
        (65535, "19ffff"),
        (65536, "1a00010000"),
        (U64, "1bffffffffffffffff"),
        (-1, "20"),
        (-25, "3818"),
        (-1 - U64, "3bffffffffffffffff"),
        (b"", "40"),
        ("é", "62c3a9"),
        ([], "80"),
        ([1, [2, 3]], "8201820203"),
        (False, "f4"),
        (True, "f5"),
        (None, "f6"),
    ],
)
def test_rfc8949_appendix_a_examples(value, hex_, backend):
    assert codec.dumps(value).hex() == hex_
    assert codec.loads(bytes.fromhex(hex_)) == value


@pytest.mark.parametrize(
    "hex_, why",
    [
        ("1801", "non-shortest"),  # 1 in a one-byte head
        ("190017", "non-shortest"),
        ("1a000000ff", "non-shortest"),
        ("1b00000000ffffffff", "non-shortest"),
        ("3800", "non-shortest"),
        ("5801ff", "non-shortest"),  # byte-string length in a longer head
        ("980100", "non-shortest"),
        ("0102", "trailing"),
        ("80f6", "trailing"),
        ("5f41ffff", "indefinite"),
        ("9f01ff", "indefinite"),
        ("f90000", "float"),
        ("fb3ff0000000000000", "float"),
        ("c101", "tag"),
        ("c249010000000000000000", "big integer"),
        ("a0", "map"),
        ("f7", "undefined"),
        ("f0", "simple value"),
        ("62fffe", "bad utf-8"),
        ("", "empty"),
        ("19ff", "truncated head"),
        ("43aabb", "truncated string"),
        ("8301", "truncated array"),
        ("5bffffffffffffffff", "huge declared length"),
        ("9bffffffffffffffff", "huge declared array"),
        ("1c", "reserved head"),
    ],
)
def test_bad_encodings_are_refused_by_both_backends(hex_, why, backend):
    with pytest.raises(DecodeError) as info:
        codec.loads(bytes.fromhex(hex_), field="probe")
    assert info.value.field == "probe"


def test_nesting_and_size_limits(backend):
    deep = b"\x81" * (codec.MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(DecodeError):
        codec.loads(deep)
    ok = b"\x81" * codec.MAX_DEPTH + b"\x00"
    assert codec.loads(ok) is not None
    with pytest.raises(DecodeError, match="limit"):
        codec.loads(b"\x40" + bytes(10), max_bytes=4)


def test_pure_decoder_never_allocates_a_declared_length():
    # A 2^63-byte declared string must fail as truncated before any allocation.
    with pytest.raises(cbor.CBORError, match="truncated"):
        cbor.loads(bytes.fromhex("5b7fffffffffffffff"))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error_identically(data):
    results = []
    for name in ("cbor2", "plugpay"):
        codec.use(name)
        try:
            results.append(("ok", codec.loads(data)))
        except DecodeError:
            results.append(("error", None))
    codec.use("cbor2")
    assert results[0] == results[1]
    if results[0][0] == "ok":
        assert codec.dumps(results[0][1]) == data


@settings(max_examples=500, deadline=None)
@given(subset_values, st.data())
def test_mutated_encodings_are_valid_or_refused(value, data):
    raw = bytearray(cbor.dumps(value))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for blob in (bytes(raw), bytes(raw[:cut])):
        try:
            decoded = codec.loads(blob)
        except DecodeError:
            continue
        assert codec.dumps(decoded) == blob
