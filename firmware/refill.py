"""Keeping the wallet stocked with RA-signed one-time keys, through the MQTT gateway.

Below ``threshold`` unused keys, the wallet's registration request goes to the RA, sealed
to the newest RA key the wallet knows (``protocol.sealed``: the broker sees neither the
identity nor the keys), and its reply back into the wallet, which verifies every RA
signature against the RA key it was provisioned with before it stores anything
(``Wallet.refill_reply``). A refusal or a bad reply stores no key; no answer leaves the
request in flight in the wallet, so the next ``refill`` sends the very same request again
(same keys, same nonce; sealed afresh, so the two sendings share no byte on the broker).

An identity must exist first: the owner registers the wallet's ``device_pubkey()`` with
the RA in person and the wallet stores the id (``Wallet.set_identity``); without it
``refill`` raises the wallet's ``WalletError`` saying so. An ``MqttError`` (a connection
given up on, see ``firmware.mqtt``) passes through as well.
"""
from plugpay.protocol import ra_messages as ra
from plugpay.protocol.codec import DecodeError

from .gateway_client import DEFAULT_TIMEOUT_MS, GatewayError, GatewayRefused
from .keystore import KeystoreError

NOT_NEEDED = "not_needed"
REFILLED = "refilled"
REFUSED = "refused"  # the RA, or the gateway unable to open the request, said no (``detail``)
BAD_REPLY = "bad_reply"  # a reply that failed the wallet's checks
NO_ANSWER = "no_answer"  # nothing usable came back in time


class RefillReport:
    """What ``refill`` did: ``status`` (one of the constants above), keys ``added``, keys
    ``available`` afterwards, and ``detail`` (why, for anything but success)."""

    def __init__(self, status, added, available, detail=""):
        self.status = status
        self.added = added
        self.available = available
        self.detail = detail

    def __repr__(self):
        return "RefillReport(%s, added=%d, available=%d%s)" % (
            self.status, self.added, self.available, ", " + self.detail if self.detail else "")


def refill(wallet, gateway_client, count, threshold, timeout_ms=DEFAULT_TIMEOUT_MS):
    """Register ``count`` new keys if fewer than ``threshold`` are available."""
    if not wallet.needs_refill(threshold):
        return RefillReport(NOT_NEEDED, 0, wallet.keystore.available())
    request = wallet.refill_request(count)
    try:
        reply = gateway_client.register(request, wallet.ra_pubkeys, timeout_ms)
    except GatewayRefused as e:
        return RefillReport(REFUSED, 0, wallet.keystore.available(), str(e))
    except GatewayError as e:
        return RefillReport(NO_ANSWER, 0, wallet.keystore.available(), str(e))
    try:
        added = wallet.refill_reply(reply)
    except KeystoreError as e:
        status = REFUSED if _is_refusal(reply) else BAD_REPLY
        return RefillReport(status, 0, wallet.keystore.available(), str(e))
    return RefillReport(REFILLED, added, wallet.keystore.available())


def _is_refusal(reply):
    try:
        return isinstance(ra.decode_reply(reply), ra.RegistrationError)
    except DecodeError:
        return False
