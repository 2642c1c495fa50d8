"""Encrypt-then-MAC sealing: identical bytes on every backend, tampering always detected."""
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from plugpay.protocol import aead, aead_cpython, aes

KEY = bytes(range(32))


class FakeCryptolib:
    """MicroPython's ``cryptolib.aes`` (ECB mode only), backed by ``cryptography``."""

    class aes:
        def __init__(self, key, mode):
            assert mode == 1, "plugpay uses ECB blocks only"
            self.enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

        def encrypt(self, data):
            assert len(data) % 16 == 0
            return self.enc.update(bytes(data))


@pytest.mark.parametrize("size", [16, 24, 32])
def test_pure_aes_matches_cryptography(size):
    for _ in range(50):
        key, block = os.urandom(size), os.urandom(16)
        want = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(block)
        assert aes.encrypt_block(aes.expand_key(key), block) == want


def test_fips197_appendix_c3_vector():
    key = bytes(range(32))
    block = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert aes.encrypt_block(aes.expand_key(key), block).hex() == "8ea2b7ca516745bfeafc49904b496089"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.binary(min_size=16, max_size=16))
def test_counter_mode_is_identical_on_every_backend(data, nonce):
    aead._cryptolib = FakeCryptolib
    try:
        a = aead_cpython.ctr(KEY, nonce, data)
        assert aead._ctr_pure(KEY, nonce, data) == a
        assert aead._ctr_cryptolib(KEY, nonce, data) == a
    finally:
        aead._cryptolib = None


def test_counter_wraps_like_cryptography():
    nonce = b"\xff" * 16
    data = bytes(40)
    assert aead._ctr_pure(KEY, nonce, data) == aead_cpython.ctr(KEY, nonce, data)


def test_seal_round_trip_and_layout():
    blob = aead.seal(KEY, b"seed material", aad=b"keystore/v1")
    assert len(blob) == aead.OVERHEAD + len(b"seed material")
    assert blob[0] == aead.VERSION
    assert aead.unseal(KEY, blob, aad=b"keystore/v1") == b"seed material"
    assert aead.seal(KEY, b"x") != aead.seal(KEY, b"x")  # fresh nonce each time


def test_every_single_byte_change_is_detected():
    blob = aead.seal(KEY, b"0123456789abcdef", aad=b"a")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(aead.AuthError):
            aead.unseal(KEY, bytes(bad), aad=b"a")


def test_truncation_wrong_key_and_wrong_aad_are_detected():
    blob = aead.seal(KEY, b"secret", aad=b"a")
    for cut in range(len(blob)):
        with pytest.raises(aead.AuthError):
            aead.unseal(KEY, blob[:cut], aad=b"a")
    with pytest.raises(aead.AuthError):
        aead.unseal(bytes(32), blob, aad=b"a")
    with pytest.raises(aead.AuthError):
        aead.unseal(KEY, blob, aad=b"b")
    with pytest.raises(aead.AuthError, match="version"):
        aead.unseal(KEY, b"\x02" + blob[1:], aad=b"a")
    with pytest.raises(ValueError):
        aead.seal(b"short", b"x")
