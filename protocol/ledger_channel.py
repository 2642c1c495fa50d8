"""State-channel requests (Unterweger et al.): the deposit that opens a channel, the
cooperative close, a unilateral close (dispute) and the settlement after its window.
Built by both sides of a channel session; ``ledger_ops`` names everything here and loads
this module when one is first used.
"""
from .codec import DecodeError
from .ledger_ops import (
    MAX_INSTALLMENTS,
    MAX_WINDOW,
    TAG_CHANNEL_CLOSE,
    TAG_CHANNEL_DISPUTE,
    TAG_CHANNEL_OPEN,
    TAG_CHANNEL_SETTLE,
    check_witnesses,
)
from .port import sha256
from .schema import BOOL, SIG, U64, ArrayOf, Nested, Struct, UInt
from .structures import HASH, MAX_TX_INPUTS, MAX_TX_OUTPUTS, Account, ChannelState, TxInput, TxOutput


class ChannelOpen(Struct):
    """Locks the consumer's collateral in a state channel (Unterweger et al., deposit).

    The channel starts at seq 0 with the first of ``installments`` installments,
    ``collateral // installments``, already the producer's: the producer never delivers
    energy it has not been paid for. The id is the hash of the body, so the producer can
    compute it from the open it was shown before the witnesses exist.
    """

    NAME = "channel_open"
    TAG = TAG_CHANNEL_OPEN
    FIELDS = (
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("consumer", Nested(Account)),  # refunds go here; its key signs channel states
        ("producer", Nested(Account)),  # payouts go here; its key signs channel states
        ("collateral", U64),
        ("installments", UInt(MAX_INSTALLMENTS)),
        ("window", UInt(MAX_WINDOW)),
        ("change", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS)),
        ("witnesses", ArrayOf(SIG, MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        check_witnesses(self, path)
        if self.installments < 1 or self.installments > self.collateral:
            raise DecodeError(path + ".installments", "must be 1..collateral")
        if self.window < 1:
            raise DecodeError(path + ".window", "a dispute window is at least one block")

    def channel_id(self):
        return sha256(self.body())

    def first_installment(self):
        return self.collateral // self.installments


def opening_state(channel_id, first_installment):
    """The implicit seq-0 state of a channel: valid on the ledger without signatures.

    Off-chain states start at seq 1; a party with nothing newer closes with this one.
    """
    return ChannelState(channel_id, 0, first_installment, 0, bytes(32), b"", b"")


class ChannelClose(Struct):
    """Cooperative close: a fully signed state, and both parties' signatures on closing
    with it. Pays out at once."""

    NAME = "channel_close"
    TAG = TAG_CHANNEL_CLOSE
    FIELDS = (
        ("state", Nested(ChannelState)),
        ("sig_consumer", SIG),
        ("sig_producer", SIG),
    )
    UNSIGNED = 2


class ChannelDispute(Struct):
    """Unilateral close by one party with its latest state: starts (or, with a higher seq,
    overrides within) the dispute window. Signed by the closing party."""

    NAME = "channel_dispute"
    TAG = TAG_CHANNEL_DISPUTE
    FIELDS = (
        ("state", Nested(ChannelState)),
        ("by_producer", BOOL),
        ("closer_sig", SIG),
    )
    UNSIGNED = 1


class ChannelSettle(Struct):
    """Pays out a unilaterally closed channel once its dispute window is over. Anyone may
    send it: the payout is fixed by the ledger's state, not by the sender."""

    NAME = "channel_settle"
    TAG = TAG_CHANNEL_SETTLE
    FIELDS = (("channel_id", HASH),)
