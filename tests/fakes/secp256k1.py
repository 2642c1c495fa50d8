"""Test double of a board's native C ``secp256k1`` module (secp256k1-embedded API).

Only put on the import path by tests, to prove the crypto shim picks a native module first.
It wraps coincurve, so signatures are real; it records calls so a test can see it was used.
"""
from coincurve import PrivateKey, PublicKey

EC_COMPRESSED = 2
EC_UNCOMPRESSED = 0
calls = []


def ec_pubkey_create(secret):
    calls.append("ec_pubkey_create")
    return PrivateKey(secret).public_key.format(compressed=False)


def ec_pubkey_serialize(pub, flag=EC_COMPRESSED):
    return PublicKey(pub).format(compressed=flag == EC_COMPRESSED)


def ec_pubkey_parse(data):
    try:
        return PublicKey(bytes(data)).format(compressed=False)
    except Exception:
        raise ValueError("failed to parse public key")


def ecdsa_sign(msg, secret):
    calls.append("ecdsa_sign")
    return PrivateKey(secret).sign_recoverable(msg, hasher=None)[:64]


def ecdsa_signature_serialize_compact(sig):
    return bytes(sig)


def ecdsa_signature_parse_compact(data):
    if len(data) != 64:
        raise ValueError("signature must be 64 bytes")
    return bytes(data)


def ecdsa_verify(sig, msg, pub):
    calls.append("ecdsa_verify")
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    return PublicKey(pub).verify(cdata_to_der(deserialize_compact(sig)), msg, hasher=None)
