"""The RA registration messages themselves (``ra_messages`` names them and loads this
module on first use): a wallet needs them only while it registers keys.
"""
from . import codec, signing
from .codec import DecodeError
from .port import urandom
from .ra_messages import (
    IDENTITY_ID_BYTES,
    MAX_BATCH,
    MAX_REASON_TEXT,
    NONCE_BYTES,
    REASONS,
    TAG_REGISTRATION_ERROR,
    TAG_REGISTRATION_REQUEST,
    TAG_REGISTRATION_RESPONSE,
    BatchTooLarge,
)
from .schema import SIG, U16, U32, ArrayOf, Bytes, Struct, Text
from .structures import Account


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
