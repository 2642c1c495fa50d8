"""Requests to the host that nobody on the way can read: ECIES on secp256k1 with ``aead``.

Why: an RA registration names the device's identity beside the one-time keys it
registers, and a faucet request lists several accounts of one wallet. In clear, the
broker's operator (or anyone subscribed to its topics) would tie every later session to
one identity. So the device seals such a request, end to end through broker and gateway,
to the RA key of an epoch (H), and only the host holding that epoch's secret opens it:

- a fresh ephemeral secret e, E = e*G, shared = x(e*H) (ECDH);
- prk = HMAC(b"plugpay/sealed/v1", shared || E || H), k_req = HMAC(prk, b"request"),
  k_rep = HMAC(prk, b"reply");
- the request's box is ``aead.seal(k_req, padded inner, header)``, the header being the
  encoded ``SealedRequest`` without its box: nobody can move a box to another epoch or key;
- the reply's box is ``aead.seal(k_rep, padded inner reply, request digest)``: only the
  device that sealed the request reads it, and it answers that request alone.

Plaintexts are padded (``inner || 0x80 || 0x00...``) to a multiple of 256 bytes, so sizes
say little. A host that cannot open a request has no key to answer with, so it refuses in
clear: a code and a text, no box. Refusals are not authenticated; a forged one costs a
retry, as a dropped message would. Every byte is untrusted: sizes are checked and decoding
is strict. Devices seal, so this module follows the portability rule of ``schema``.
"""
from . import aead, signing
from .codec import MAX_BYTES, DecodeError
from .port import const, hmac_sha256, sha256
from .schema import U16, U32, Bytes, Struct, Text

TAG_SEALED_REQUEST = const(48)
TAG_SEALED_REPLY = const(49)

PAD_BLOCK = const(256)
MAX_PADDED = const(65024)  # 254 blocks: a sealed message stays under the codec's 64 KiB
MAX_INNER = const(65023)  # MAX_PADDED less the 0x80 that starts the padding
MAX_REQUEST_BYTES = MAX_BYTES
MAX_TEXT = const(200)
_LABEL = b"plugpay/sealed/v1"
_BOX = Bytes(max=aead.OVERHEAD + MAX_PADDED)

# Codes of a ``SealedReply``. Stable numbers: they are on the wire.
OK = const(0)
MALFORMED = const(1)  # not a SealedRequest, bad padding, or an inner message that does not decode
TOO_LARGE = const(2)
UNKNOWN_EPOCH = const(3)  # sealed to an RA epoch whose secret this host does not hold
CANNOT_OPEN = const(4)  # the box does not decrypt or authenticate
UNKNOWN_KIND = const(5)  # an inner message of a kind this host does not serve
UNAVAILABLE = const(6)  # the host could not serve it now; retry later

REASONS = {
    OK: "OK",
    MALFORMED: "MALFORMED",
    TOO_LARGE: "TOO_LARGE",
    UNKNOWN_EPOCH: "UNKNOWN_EPOCH",
    CANNOT_OPEN: "CANNOT_OPEN",
    UNKNOWN_KIND: "UNKNOWN_KIND",
    UNAVAILABLE: "UNAVAILABLE",
}


def reason_name(code):
    return REASONS.get(code, "UNKNOWN_REASON_%d" % code)


class SealedRefused(Exception):
    """The host's clear refusal of a sealed request: a code from ``REASONS`` and a text."""

    def __init__(self, code, text):
        super().__init__("%s: %s" % (reason_name(code), text))
        self.code = code
        self.text = text

    def reason(self):
        return reason_name(self.code)


def _check_box(box, path):
    if len(box) < aead.OVERHEAD + PAD_BLOCK or (len(box) - aead.OVERHEAD) % PAD_BLOCK:
        raise DecodeError(path, "%d bytes is no sealed box of whole %d-byte blocks" % (len(box), PAD_BLOCK))


class SealedRequest(Struct):
    """A request sealed to the RA key of ``epoch`` by the ephemeral key ``ephemeral``.

    The box is the one trailing field left out of the body, so the body (the header) is
    exactly what the box's associated data covers."""

    NAME = "sealed_request"
    TAG = TAG_SEALED_REQUEST
    FIELDS = (("epoch", U32), ("ephemeral", Bytes(33)), ("box", _BOX))
    UNSIGNED = 1

    def validate(self, path):
        if self.ephemeral[0] not in (2, 3):
            raise DecodeError(path + ".ephemeral", "not a compressed public key (prefix 02 or 03)")
        _check_box(self.box, path + ".box")


class SealedReply(Struct):
    """The answer to the request whose SHA-256 is ``request_digest``: ``OK`` with a box
    only that request's sender opens, or a refusal code and text with no box."""

    NAME = "sealed_reply"
    TAG = TAG_SEALED_REPLY
    FIELDS = (("request_digest", Bytes(32)), ("code", U16), ("text", Text(MAX_TEXT)), ("box", _BOX))

    def validate(self, path):
        if self.code != OK:
            if self.box:
                raise DecodeError(path + ".box", "a refusal carries no box")
            return
        if self.text:
            raise DecodeError(path + ".text", "an answer carries no error text")
        _check_box(self.box, path + ".box")


class ReplyKey:
    """What answers one sealed request: its reply key and its digest. The device keeps it
    beside the request in flight; the host holds it while serving the request."""

    def __init__(self, key, request_digest):
        self.key = key
        self.request_digest = request_digest

    def __repr__(self):  # never the key
        return "ReplyKey(request %s)" % self.request_digest.hex()[:16]


def _keys(shared, ephemeral, host_pubkey):
    prk = hmac_sha256(_LABEL, shared + ephemeral + host_pubkey)
    return hmac_sha256(prk, b"request"), hmac_sha256(prk, b"reply")


def _pad(data):
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("a sealed message holds bytes")
    if len(data) > MAX_INNER:
        raise ValueError("%d bytes exceed the %d a sealed message holds" % (len(data), MAX_INNER))
    fill = PAD_BLOCK - len(data) % PAD_BLOCK  # 1..256
    return bytes(data) + b"\x80" + bytes(fill - 1)


def _unpad(data, path):
    """The message before ``0x80 0x00...``; the padding must be the shortest there is."""
    n = len(data)
    if n == 0 or n % PAD_BLOCK:
        raise DecodeError(path, "%d padded bytes is not a whole number of %d-byte blocks" % (n, PAD_BLOCK))
    i, stop = n - 1, n - PAD_BLOCK
    while i >= stop and data[i] == 0:
        i -= 1
    if i < stop or data[i] != 0x80:
        raise DecodeError(path, "bad padding (no 0x80 then zeros within the last block)")
    return bytes(data[:i])


def _clip(text):
    raw = text.encode("utf-8")
    if len(raw) <= MAX_TEXT:
        return text
    cut = MAX_TEXT
    while cut > 0 and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 sequence
        cut -= 1
    return raw[:cut].decode("utf-8")


# -- the device's side ------------------------------------------------------------------


def seal_request(inner, epoch, host_pubkey):
    """``(request bytes, ReplyKey)``: ``inner`` sealed to ``host_pubkey``, the RA key of
    ``epoch``. Keep the ReplyKey to open the answer; re-send the same bytes if needed."""
    padded = _pad(inner)
    ephemeral_secret = signing.new_secret()
    ephemeral = signing.public_key(ephemeral_secret)
    k_req, k_rep = _keys(signing.shared_secret(ephemeral_secret, host_pubkey), ephemeral, host_pubkey)
    request = SealedRequest(epoch, ephemeral, bytes(aead.OVERHEAD + PAD_BLOCK))  # box comes next
    request.box = aead.seal(k_req, padded, request.body())
    raw = request.encode()
    return raw, ReplyKey(k_rep, sha256(raw))


_REPLY_HEAD = b"\x86\x18\x31\x01\x58\x20"  # [49, 1, then a 32-byte string: the request digest]


def reply_digest(data):
    """The request digest a ``SealedReply`` names, read from its fixed header without
    decoding the rest (a reply may be 60 KB: a device decodes it once, in ``open_reply``),
    or None for bytes that do not start as a reply."""
    if not isinstance(data, (bytes, bytearray)) or len(data) < 38 or bytes(data[:6]) != _REPLY_HEAD:
        return None
    return bytes(data[6:38])


def open_reply(reply_key, data):
    """The inner reply of the request ``reply_key`` belongs to. A clear refusal raises
    ``SealedRefused``; bytes that do not decode, answer another request or fail
    authentication raise ``DecodeError`` or ``aead.AuthError``."""
    reply = SealedReply.decode(data)
    if reply.request_digest != reply_key.request_digest:
        raise DecodeError("sealed_reply.request_digest", "answers another request")
    if reply.code != OK:
        raise SealedRefused(reply.code, reply.text)
    return _unpad(aead.unseal(reply_key.key, reply.box, reply.request_digest), "sealed_reply.box")


# -- the host's side --------------------------------------------------------------------


def check_request(data):
    """The decoded ``SealedRequest`` (no key needed: sizes and format only), or
    ``SealedRefused`` (``TOO_LARGE``, ``MALFORMED``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SealedRefused(MALFORMED, "expected bytes")
    if len(data) > MAX_REQUEST_BYTES:
        raise SealedRefused(TOO_LARGE, "%d bytes exceed the %d-byte limit" % (len(data), MAX_REQUEST_BYTES))
    try:
        return SealedRequest.decode(data)
    except DecodeError as e:
        raise SealedRefused(MALFORMED, str(e))


def open_request(data, secret_for_epoch):
    """``(inner bytes, ReplyKey)`` of a sealed request; ``secret_for_epoch(epoch)`` gives
    the secret of an RA epoch, or None. Raises ``SealedRefused`` with the code to answer."""
    request = check_request(data)
    secret = secret_for_epoch(request.epoch)
    if secret is None:
        raise SealedRefused(UNKNOWN_EPOCH, "no key for RA epoch %d here: seal to the current epoch" % request.epoch)
    host_pubkey = signing.public_key(secret)
    try:
        shared = signing.shared_secret(secret, request.ephemeral)
    except signing.SignatureError:
        raise SealedRefused(CANNOT_OPEN, "the ephemeral key is not a point on secp256k1")
    k_req, k_rep = _keys(shared, request.ephemeral, host_pubkey)
    try:
        padded = aead.unseal(k_req, request.box, request.body())
    except aead.AuthError:
        raise SealedRefused(CANNOT_OPEN, "the box does not authenticate under RA epoch %d's key "
                                         "(tampered with, or sealed to another key)" % request.epoch)
    try:
        inner = _unpad(padded, "sealed_request.box")
    except DecodeError as e:
        raise SealedRefused(MALFORMED, str(e))
    return inner, ReplyKey(k_rep, sha256(bytes(data)))


def seal_reply(reply_key, inner):
    """The ``SealedReply`` bytes carrying ``inner`` to the sender of the request."""
    box = aead.seal(reply_key.key, _pad(inner), reply_key.request_digest)
    return SealedReply(reply_key.request_digest, OK, "", box).encode()


def refusal(request_bytes, code, text):
    """The clear ``SealedReply`` refusing ``request_bytes`` with ``code`` (not OK) and a
    text, cut to ``MAX_TEXT`` bytes."""
    if code == OK:
        raise ValueError("a refusal needs a code other than OK")
    return SealedReply(sha256(bytes(request_bytes)), code, _clip(text), b"").encode()

