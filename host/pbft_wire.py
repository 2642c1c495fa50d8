"""Digests and shape checks shared by the PBFT engine (``pbft``) and its view changes
(``pbft_views``): every message from the network is checked with these before any state
is touched."""
import hashlib

from plugpay.protocol import codec

NULL_BATCH = []
GENESIS = bytes(32)
MAX_CLIENT_ID = 80
MAX_TS = (1 << 63) - 1


def digest(value):
    """SHA-256 of the deterministic CBOR of ``value``: batch digests, block hashes."""
    return hashlib.sha256(codec.dumps(value)).digest()


def block_hash(height, prev, batch_digest, results_digest, state_digest):
    """The hash that chains blocks: it covers the batch, its results and the app state."""
    return digest([height, prev, batch_digest, results_digest, state_digest])


def is_uint(x):
    return type(x) is int and 0 <= x <= MAX_TS


def is_digest(x):
    return type(x) is bytes and len(x) == 32


def is_client(x):
    return type(x) is str and 0 < len(x) <= MAX_CLIENT_ID


def is_list(x, max_len):
    return type(x) is list and len(x) <= max_len
