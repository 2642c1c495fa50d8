"""What a wallet sends to the Registration Authority and what it gets back.

Gao et al.'s registration, batched: a user registers many one-time public keys at once and
gets one RA signature per key, the ``Account.ra_sig`` over ``Account(pubkey, epoch, b"")``.
The request names the identity the RA registered in person and is signed by that
identity's long-term device key, so nobody else can register keys in its name; its nonce
lets the RA refuse a replayed request. The reply is either a ``RegistrationResponse`` (the
signatures, in request order) or a ``RegistrationError`` (a reason code and a text).

Neither reply is signed: every signature in a response is checked by the wallet against the
RA epoch key it was provisioned with, and a forged error only costs a retry, which anyone
able to forge it could cause by dropping the message anyway.

The messages and their helpers live in ``ra_registration``, named here and loaded the
first time one is used: a wallet holds that code only while it registers keys.
"""
from .codec import DecodeError
from .port import const

TAG_REGISTRATION_REQUEST = const(40)
TAG_REGISTRATION_RESPONSE = const(41)
TAG_REGISTRATION_ERROR = const(42)

# 900 signatures (66 bytes each in CBOR) keep a response under the codec's 64 KiB message
# limit; 1,000 would not. A device splits larger registrations into several requests.
MAX_BATCH = const(900)
IDENTITY_ID_BYTES = const(16)
NONCE_BYTES = const(16)
MAX_REASON_TEXT = const(200)

# Reason codes of a RegistrationError.
MALFORMED = const(1)  # the bytes are not a RegistrationRequest
MESSAGE_TOO_LARGE = const(2)  # more bytes than any valid request
BATCH_TOO_LARGE = const(3)  # more than MAX_BATCH public keys
UNKNOWN_IDENTITY = const(4)
IDENTITY_DISABLED = const(5)
BAD_SIGNATURE = const(6)  # not signed by the identity's device key
REPLAYED_NONCE = const(7)  # this identity used this nonce for another batch
DUPLICATE_PUBKEY = const(8)  # the same key twice in one batch
ALREADY_REGISTERED = const(9)  # one-time accounts are one-time: the key is taken
INVALID_PUBKEY = const(10)  # not a compressed point on secp256k1
UNAVAILABLE = const(11)  # the RA could not store the batch; retry later

REASONS = {
    MALFORMED: "MALFORMED",
    MESSAGE_TOO_LARGE: "MESSAGE_TOO_LARGE",
    BATCH_TOO_LARGE: "BATCH_TOO_LARGE",
    UNKNOWN_IDENTITY: "UNKNOWN_IDENTITY",
    IDENTITY_DISABLED: "IDENTITY_DISABLED",
    BAD_SIGNATURE: "BAD_SIGNATURE",
    REPLAYED_NONCE: "REPLAYED_NONCE",
    DUPLICATE_PUBKEY: "DUPLICATE_PUBKEY",
    ALREADY_REGISTERED: "ALREADY_REGISTERED",
    INVALID_PUBKEY: "INVALID_PUBKEY",
    UNAVAILABLE: "UNAVAILABLE",
}


class BatchTooLarge(DecodeError):
    """A request with more keys than ``MAX_BATCH``: well-formed otherwise, so the RA can
    answer ``BATCH_TOO_LARGE`` rather than ``MALFORMED`` and the wallet knows to split."""


_LAZY = ("RegistrationRequest", "RegistrationResponse", "RegistrationError", "make_request", "decode_reply",
         "accounts_from", "ALL")


def __getattr__(name):
    """The registration messages and their helpers, from ``ra_registration`` (loaded now if
    it is not yet): a wallet holds their code only while it registers keys."""
    if name not in _LAZY:
        raise AttributeError(name)
    from . import ra_registration

    value = getattr(ra_registration, name)
    globals()[name] = value
    return value
