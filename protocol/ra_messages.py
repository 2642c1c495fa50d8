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
"""
from . import codec, signing
from .codec import DecodeError
from .port import const, urandom
from .schema import SIG, U16, U32, ArrayOf, Bytes, Struct, Text
from .structures import Account

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


class _Batch(ArrayOf):
    def check(self, value, path):
        if isinstance(value, (list, tuple)) and len(value) > self.max:
            raise BatchTooLarge(path, "%d public keys exceed the batch limit of %d" % (len(value), self.max))
        return ArrayOf.check(self, value, path)


class RegistrationRequest(Struct):
    """Identity id, a fresh random nonce, the public keys to register, the device signature.

    Keys are only checked for size here; whether each is a point on the curve is the RA's
    check, so a bad key is refused as ``INVALID_PUBKEY`` naming its index.
    """

    NAME = "registration_request"
    TAG = TAG_REGISTRATION_REQUEST
    FIELDS = (
        ("identity_id", Bytes(IDENTITY_ID_BYTES)),
        ("nonce", Bytes(NONCE_BYTES)),
        ("pubkeys", _Batch(Bytes(33), MAX_BATCH, 1)),
        ("device_sig", SIG),
    )
    UNSIGNED = 1


class RegistrationResponse(Struct):
    """The request's nonce, the RA key epoch and one ``Account.ra_sig`` per requested key."""

    NAME = "registration_response"
    TAG = TAG_REGISTRATION_RESPONSE
    FIELDS = (
        ("nonce", Bytes(NONCE_BYTES)),
        ("epoch", U32),
        ("ra_sigs", ArrayOf(Bytes(64), MAX_BATCH, 1)),
    )


class RegistrationError(Struct):
    """A refusal: the request's nonce (empty if the request could not be decoded), a
    reason code from ``REASONS`` and a text for a log or a screen."""

    NAME = "registration_error"
    TAG = TAG_REGISTRATION_ERROR
    FIELDS = (
        ("nonce", Bytes(max=NONCE_BYTES)),
        ("code", U16),
        ("text", Text(MAX_REASON_TEXT)),
    )

    def reason(self):
        return REASONS.get(self.code, "UNKNOWN_REASON_%d" % self.code)


def make_request(identity_id, device_secret, pubkeys, nonce=None):
    """A wallet's signed request; the nonce is fresh random bytes unless given."""
    if nonce is None:
        nonce = urandom(NONCE_BYTES)
    request = RegistrationRequest(identity_id, nonce, list(pubkeys), b"")
    request.device_sig = signing.sign(device_secret, request)
    return request


def decode_reply(data):
    """Strictly decode the RA's answer into a RegistrationResponse or a RegistrationError."""
    value = codec.loads(data, "registration_reply")
    if isinstance(value, list) and value and value[0] == TAG_REGISTRATION_ERROR:
        return RegistrationError.from_value(value)
    return RegistrationResponse.from_value(value)


def accounts_from(request, response, ra_pubkey):
    """The wallet's check of a response: one signature per requested key, each valid under
    the RA key of the response's epoch. Returns the signed ``Account`` list, in order."""
    if response.nonce != request.nonce:
        raise DecodeError("registration_response.nonce", "does not answer this request")
    if len(response.ra_sigs) != len(request.pubkeys):
        raise DecodeError("registration_response.ra_sigs", "%d signatures for %d keys" % (len(response.ra_sigs), len(request.pubkeys)))
    accounts = []
    for i, pubkey in enumerate(request.pubkeys):
        account = Account(pubkey, response.epoch, response.ra_sigs[i])
        if not signing.verify(ra_pubkey, account, account.ra_sig):
            raise DecodeError("registration_response.ra_sigs[%d]" % i, "not a valid RA signature")
        accounts.append(account)
    return accounts


ALL = (RegistrationRequest, RegistrationResponse, RegistrationError)
