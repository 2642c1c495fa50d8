"""Requests that mint or return coins: the test network's faucet (``Faucet`` minted by the
host, ``FaucetRequest`` sent by a device) and the issuer's redeem (``Redeem`` on the
ledger, ``RedeemRequest`` to the issuer). A device loads this module only when it asks the
faucet or redeems; ``ledger_ops`` names everything here.
"""
from . import codec
from .codec import DecodeError
from .ledger_ops import (
    MAX_FAUCET_OUTPUTS,
    MAX_REDEEM_OUTPUTS,
    MAX_REQUEST_BYTES,
    SALT_BYTES,
    TAG_FAUCET,
    TAG_FAUCET_REQUEST,
    TAG_REDEEM,
    TAG_REDEEM_REQUEST,
    check_witnesses,
)
from .port import sha256
from .schema import SIG, U64, ArrayOf, Bytes, Nested, Struct
from .structures import HASH, MAX_TX_INPUTS, MAX_TX_OUTPUTS, TxInput, TxOutput


class Faucet(Struct):
    """Mints outputs on a test network, signed by the faucet key the ledger is configured
    with. The nonce makes two otherwise equal mints two different requests."""

    NAME = "faucet"
    TAG = TAG_FAUCET
    FIELDS = (
        ("nonce", U64),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS, 1)),
        ("faucet_sig", SIG),
    )
    UNSIGNED = 1

    def txhash(self):
        return sha256(self.body())


class FaucetRequest(Struct):
    """A device asking the test network's faucet for money, sent sealed to the gateway
    (``sealed``), which holds the faucet key, checks the request against its limit and
    mints each output in a ``Faucet`` of its own (``host.faucet``), so the ledger never
    shows coins of one wallet created together. Not a ledger operation itself."""

    NAME = "faucet_request"
    TAG = TAG_FAUCET_REQUEST
    FIELDS = (
        ("nonce", U64),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_FAUCET_OUTPUTS, 1)),
    )


class Redeem(Struct):
    """Gives coins back to the issuer, who mints the same value as fresh coins, each in a
    ``Faucet`` op of its own (``redeem_mint``). A coin that came back from a session (a
    change output, a refund, a payout) names that session on the ledger; spending it in
    another session would tie the two together, so it is redeemed instead.

    ``amount`` is what the issuer owes (inputs above it are a fee). ``order`` commits to the
    fresh outputs under a secret salt (``redeem_order``): the wallet can prove what it asked
    for, while the ledger, which shows this op to everyone, shows nothing that ties the
    redeemed coins to the new ones. The id is the hash of the body, as for a channel open."""

    NAME = "redeem"
    TAG = TAG_REDEEM
    FIELDS = (
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("amount", U64),
        ("order", HASH),
        ("witnesses", ArrayOf(SIG, MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        check_witnesses(self, path)
        if self.amount < 1:
            raise DecodeError(path + ".amount", "at least 1")

    def redeem_id(self):
        return sha256(self.body())


class RedeemRequest(Struct):
    """What a wallet sends the issuer, sealed (``protocol.sealed``): the signed ``Redeem``,
    the salt of its ``order`` and the fresh outputs it commits to. Not a ledger op."""

    NAME = "redeem_request"
    TAG = TAG_REDEEM_REQUEST
    FIELDS = (
        ("redeem", Bytes(max=MAX_REQUEST_BYTES)),
        ("salt", Bytes(SALT_BYTES)),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_REDEEM_OUTPUTS, 1)),
    )


def redeem_order(salt, outputs):
    """The ``Redeem.order`` commitment to ``outputs`` under ``salt``."""
    return sha256(b"plugpay/redeem-order/v1" + salt + codec.dumps([o.to_value() for o in outputs]))


def redeem_mint(redeem_id, salt, i, output):
    """The unsigned ``Faucet`` op that mints fresh output ``i`` of a redeem. Its nonce
    comes from the salt, which only the wallet and the issuer know: the wallet finds its
    coin at ``(op.txhash(), 0)`` without asking anyone, and nobody else can tell which
    mints answer which redeem."""
    nonce = int.from_bytes(sha256(b"plugpay/redeem-mint/v1" + redeem_id + salt + bytes((i,)))[:8], "big")
    return Faucet(nonce, [output], b"")
