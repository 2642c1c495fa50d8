"""HTLC requests: create (funded like a transaction), claim with the preimage, refund
after the timeout. Built by the two sides of an HTLC-series session; ``ledger_ops`` names
everything here and loads this module when one is first used.
"""
from .ledger_ops import TAG_HTLC_CLAIM, TAG_HTLC_CREATE, TAG_HTLC_REFUND, check_witnesses
from .schema import SIG, ArrayOf, Bytes, Nested, Struct
from .structures import HASH, MAX_TX_INPUTS, MAX_TX_OUTPUTS, Htlc, TxInput, TxOutput


class HtlcCreate(Struct):
    """Funds an HTLC (the payer-signed terms) with Gao inputs. The HTLC id is
    ``htlc.digest()``: payer and payee know it before the funding exists."""

    NAME = "htlc_create"
    TAG = TAG_HTLC_CREATE
    FIELDS = (
        ("htlc", Nested(Htlc)),
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("change", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS)),
        ("witnesses", ArrayOf(SIG, MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        check_witnesses(self, path)


class HtlcClaim(Struct):
    """The payee reveals r before the timeout; signed by the payee's key so nobody who
    saw r first can race the claim."""

    NAME = "htlc_claim"
    TAG = TAG_HTLC_CLAIM
    FIELDS = (("htlc_id", HASH), ("preimage", Bytes(32)), ("payee_sig", SIG))
    UNSIGNED = 1


class HtlcRefund(Struct):
    """The payer takes the amount back at or after the timeout height."""

    NAME = "htlc_refund"
    TAG = TAG_HTLC_REFUND
    FIELDS = (("htlc_id", HASH), ("payer_sig", SIG))
    UNSIGNED = 1
