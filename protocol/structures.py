"""Every signed structure of plugpay, in wire order.

The field layout follows the two source papers: Gao et al.'s one-time account
``(pk, Sign(sk_RA, pk))`` and UTXO transaction (inputs, price, outputs), and Unterweger et
al.'s state-channel updates, HTLCs and metered installments. Amounts are integers in the
smallest currency unit and energy is in Wh; there are no floats anywhere on the wire.
"""
from .codec import DecodeError
from .port import const, sha256
from .schema import ANY, SIG, U16, U32, U64, ArrayOf, Bytes, Nested, Record, Struct, UInt

TAG_ACCOUNT = const(1)
TAG_TRANSACTION = const(2)
TAG_CHANNEL_STATE = const(3)
TAG_HTLC = const(4)
TAG_METER_READING = const(5)
TAG_METER_RECEIPT = const(6)
TAG_LINK_MESSAGE = const(7)

MAX_TX_INPUTS = const(16)
MAX_TX_OUTPUTS = const(16)

HASH = Bytes(32)
SESSION_ID = Bytes(16)


class Account(Struct):
    """A one-time account: compressed public key, RA key epoch, RA signature over both.

    The address is the SHA-256 of the public key. The RA signature proves registration
    without naming the owner; only the RA's certificate repository maps it to an identity.
    """

    NAME = "account"
    TAG = TAG_ACCOUNT
    FIELDS = (("pubkey", Bytes(33)), ("epoch", U32), ("ra_sig", SIG))
    UNSIGNED = 1

    def validate(self, path):
        if self.pubkey[0] not in (2, 3):
            raise DecodeError(path + ".pubkey", "not a compressed public key (prefix 02 or 03)")

    def address(self):
        return sha256(self.pubkey)


class TxInput(Record):
    """Spends output ``pre_sn`` of transaction ``pre_txhash`` (Gao et al.'s source field)."""

    NAME = "input"
    FIELDS = (("pre_txhash", HASH), ("pre_sn", UInt(MAX_TX_OUTPUTS - 1)))


class Price(Record):
    """Gao et al.'s price field: unit price (per kWh) and the total it comes to."""

    NAME = "price"
    FIELDS = (("unit_price", U64), ("total", U64))


class TxOutput(Record):
    """Gao et al.'s destination field: an RA-signed one-time account and an amount."""

    NAME = "output"
    FIELDS = (("account", Nested(Account)), ("amount", U64))


class Transaction(Struct):
    """A Gao et al. UTXO transaction.

    The paper puts each input's signature inside the input; here the signatures are a
    trailing witness list, one per input, so the body (hashed into ``txhash`` and signed by
    every input's key) is one contiguous encoding and the txhash cannot be malleated by
    re-encoding a signature.
    """

    NAME = "transaction"
    TAG = TAG_TRANSACTION
    FIELDS = (
        ("inputs", ArrayOf(Nested(TxInput), MAX_TX_INPUTS, 1)),
        ("price", Nested(Price)),
        ("outputs", ArrayOf(Nested(TxOutput), MAX_TX_OUTPUTS, 1)),
        ("witnesses", ArrayOf(SIG, MAX_TX_INPUTS, 1)),
    )
    UNSIGNED = 1

    def validate(self, path):
        if len(self.witnesses) != len(self.inputs):
            raise DecodeError(path + ".witnesses", "%d witnesses for %d inputs" % (len(self.witnesses), len(self.inputs)))

    def txhash(self):
        return sha256(self.body())


class ChannelState(Struct):
    """One off-chain state-channel update, valid on the ledger once both sides signed it.

    ``paid_to_producer`` is cumulative, as is ``energy_wh``; ``receipt_digest`` binds the
    update to the counter-signed meter receipt it pays for.
    """

    NAME = "channel_state"
    TAG = TAG_CHANNEL_STATE
    FIELDS = (
        ("channel_id", HASH),
        ("seq", U64),
        ("paid_to_producer", U64),
        ("energy_wh", U64),
        ("receipt_digest", HASH),
        ("sig_consumer", SIG),
        ("sig_producer", SIG),
    )
    UNSIGNED = 2

    def fully_signed(self):
        return len(self.sig_consumer) == 64 and len(self.sig_producer) == 64


class Htlc(Struct):
    """A hash-time-locked payment: the payee claims with r where H(r) = hashlock before
    block height ``timeout``; from it on the payer is refunded. Signed by the payer.

    Payer and payee are whole RA-signed accounts, not addresses: the ledger pays the
    amount out to one of them, and Gao et al. let money reach registered accounts only,
    which the ledger checks when the HTLC is funded.
    """

    NAME = "htlc"
    TAG = TAG_HTLC
    FIELDS = (
        ("payer", Nested(Account)),
        ("payee", Nested(Account)),
        ("amount", U64),
        ("hashlock", HASH),
        ("timeout", U64),
        ("payer_sig", SIG),
    )
    UNSIGNED = 1

    def digest(self):
        """The HTLC id on the ledger."""
        return sha256(self.encode())


class MeterReading(Struct):
    """A reading of the charger's meter, signed by the meter key and hash-chained to the
    previous reading of the session (``prev_digest``, zeros for the first)."""

    NAME = "meter_reading"
    TAG = TAG_METER_READING
    FIELDS = (
        ("session_id", SESSION_ID),
        ("index", U64),
        ("cumulative_wh", U64),
        ("unit_price", U64),
        ("installment", U64),
        ("prev_digest", HASH),
        ("timestamp", U64),
        ("meter_sig", SIG),
    )
    UNSIGNED = 1

    def digest(self):
        return sha256(self.encode())


class MeterReceipt(Struct):
    """The vehicle's counter-signature on a meter reading: what an installment pays for."""

    NAME = "meter_receipt"
    TAG = TAG_METER_RECEIPT
    FIELDS = (("reading", Nested(MeterReading)), ("ev_sig", SIG))
    UNSIGNED = 1

    def digest(self):
        return sha256(self.encode())


class LinkMessage(Struct):
    """The envelope of every link message: a random session id (no stable identifier of
    either side), a per-direction sequence number, the message kind and its payload."""

    NAME = "link_message"
    TAG = TAG_LINK_MESSAGE
    FIELDS = (("session_id", SESSION_ID), ("seq", U64), ("kind", U16), ("payload", ANY))


ALL = (Account, Transaction, ChannelState, Htlc, MeterReading, MeterReceipt, LinkMessage)
