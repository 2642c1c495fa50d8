"""MQTT topic names between devices and the host gateway: one place for both sides.

A device publishes a request on ``plugpay/<kind>/<client id>`` and reads the answer on
the reply topic of that kind with the same client id:

- ``plugpay/ledger/submit/<cid>``: a ledger request (``ledger_ops``) -> ``Result``
- ``plugpay/ledger/query/<cid>``: a ``ledger_ops.Query`` -> ``Result``
- answers to those two: ``plugpay/ledger/result/<cid>``
- ``plugpay/host/sealed/<cid>``: a ``sealed.SealedRequest`` -> its ``SealedReply`` on
  ``plugpay/host/sealed-reply/<cid>``. Whatever names an identity or ties accounts of one
  wallet together (RA registration, faucet requests) travels sealed, never on a clear topic.
- ``plugpay/link/<session id>/to-responder`` and ``.../to-initiator``: one charging link
  session between two devices, one topic per direction (``link_topics``)

The client id is the device's choice of 1 to 40 characters from ``[A-Za-z0-9_.-]``: it
keeps MQTT wildcards and separators (``+ # /``) out of topic levels. Devices code this
module too, so it follows the portability rule of ``schema``.
"""
from .port import const

PREFIX = "plugpay/"
MAX_CLIENT_ID = const(40)
_CLIENT_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

LEDGER_SUBMIT = "ledger/submit"
LEDGER_QUERY = "ledger/query"
HOST_SEALED = "host/sealed"
LEDGER_RESULT = "ledger/result"
HOST_SEALED_REPLY = "host/sealed-reply"

REQUESTS = (LEDGER_SUBMIT, LEDGER_QUERY, HOST_SEALED)
REPLIES = (LEDGER_RESULT, HOST_SEALED_REPLY)
REPLY_TO = {
    LEDGER_SUBMIT: LEDGER_RESULT,
    LEDGER_QUERY: LEDGER_RESULT,
    HOST_SEALED: HOST_SEALED_REPLY,
}


def valid_client_id(cid):
    if not isinstance(cid, str) or not 1 <= len(cid) <= MAX_CLIENT_ID:
        return False
    for c in cid:
        if c not in _CLIENT_ID_CHARS:
            return False
    return True


def topic(kind, cid):
    """The topic of ``kind`` (a request or a reply) for client ``cid``."""
    if kind not in REQUESTS and kind not in REPLIES:
        raise ValueError("unknown topic kind %r" % (kind,))
    if not valid_client_id(cid):
        raise ValueError("client id %r: use 1-40 letters, digits, '_', '.', '-'" % (cid,))
    return PREFIX + kind + "/" + cid


def reply_topic(request_kind, cid):
    """Where the answer to a request of ``request_kind`` from ``cid`` is published."""
    return topic(REPLY_TO[request_kind], cid)


def subscription(kind):
    """The MQTT filter matching ``kind`` for every client id."""
    return PREFIX + kind + "/+"


def parse(name):
    """``(kind, client id)`` of one of our topics (str, or bytes as umqtt gives them),
    or None for anything else, including a bad client id."""
    if isinstance(name, (bytes, bytearray)):
        try:
            name = bytes(name).decode("utf-8")
        except UnicodeError:
            return None
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return None
    cut = name.rfind("/")
    kind, cid = name[len(PREFIX):cut], name[cut + 1:]
    if (kind not in REQUESTS and kind not in REPLIES) or not valid_client_id(cid):
        return None
    return kind, cid


def link_topics(session_id):
    """``(to_responder, to_initiator)``: the topics of one charging link session. Built
    from the session's random 16-byte id alone, so they name neither side and never repeat
    across sessions."""
    if not isinstance(session_id, bytes) or len(session_id) != 16:
        raise ValueError("a link session id is 16 bytes")
    base = PREFIX + "link/" + session_id.hex() + "/"
    return base + "to-responder", base + "to-initiator"
