"""Encoders and decoders of the hot path, written out instead of walking the schema.

A Gao transaction is most of what a ledger executes, and the generic schema decoder and
encoder cost more than its state lookups. Everything here gives exactly the bytes or the
record the generic code gives (``tests/test_ledger_fastpath.py`` checks each against it,
differentially), or declines so that the generic code answers.
"""
try:
    import cbor2 as _cbor2
except ImportError:  # codec then runs its own backend, and the fast path is off
    _cbor2 = None

from plugpay.protocol import codec
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256
from plugpay.protocol.schema import MAX_UINT

_FIELD_NAMES = dict((cls, tuple(name for name, _ in cls.FIELDS))
                    for cls in (S.Transaction, S.TxInput, S.Price, S.TxOutput, S.Account))
_ACCOUNT_DOMAIN = ("plugpay/%s/v%d" % (S.Account.NAME, S.Account.VERSION)).encode()


def key_cbor(key):
    """``codec.dumps(list(key))``, written directly for the common keys: a 32-byte id,
    or a 32-byte txhash and an output number below 24."""
    if len(key) == 2:
        first, sn = key
        if type(first) is bytes and len(first) == 32 and type(sn) is int and 0 <= sn < 24:
            return b"\x82\x58\x20" + first + bytes((sn,))
    elif len(key) == 1:
        first = key[0]
        if type(first) is bytes and len(first) == 32:
            return b"\x81\x58\x20" + first
    return codec.dumps(list(key))


def pubkey(account):
    """The public key inside a stored, already verified, encoded ``Account``: its
    deterministic encoding always starts ``85 01 01 58 21`` (array of 5, tag 1, version 1,
    33-byte string), so the key is bytes 5..38; cheaper than decoding on every spend."""
    return account[5:38]


def _record(cls, values):
    """An instance of a schema record holding already checked ``values`` in field order,
    as ``Record.from_value`` builds it (no ``__init__``)."""
    obj = object.__new__(cls)
    obj.__dict__.update(zip(_FIELD_NAMES[cls], values))
    return obj


def _uint(value, limit=MAX_UINT):
    return type(value) is int and 0 <= value <= limit


def _signature(value):
    return type(value) is bytes and (len(value) == 64 or not value)


def _account(value):
    """A decoded ``Account`` value checked as ``Account.from_value`` does, or None."""
    if type(value) is not list or len(value) != 5 or value[0] != S.TAG_ACCOUNT or type(value[0]) is not int \
            or value[1] != S.Account.VERSION or type(value[1]) is not int:
        return None
    _, _, key, epoch, ra_sig = value
    if type(key) is not bytes or len(key) != 33 or key[0] not in (2, 3) or not _uint(epoch, 0xFFFFFFFF) \
            or not _signature(ra_sig):
        return None
    return _record(S.Account, value[2:])


def decode_transaction(raw):
    """The hot request, a Gao transaction, decoded without the generic schema walk: the
    ``Transaction`` that ``ledger_ops.decode_request(raw)`` gives, or None for anything
    else (another operation, a malformed one, another CBOR backend), which the generic
    decoder then answers with its own error text. Every field is checked as its schema
    type checks it, and those checks (ints of 64 bits, bytes, arrays) imply codec's
    subset check; the re-encoding check is codec's, so only deterministic CBOR passes."""
    if codec.BACKEND != "cbor2" or raw[:2] != b"\x86\x02":  # [tag 2, ...] of 6 items
        return None
    try:
        value = _cbor2.loads(raw)
    except Exception:
        return None
    if type(value) is not list or len(value) != 6 or value[1] != S.Transaction.VERSION or type(value[1]) is not int:
        return None
    _, _, inputs, price, outputs, witnesses = value
    if type(inputs) is not list or type(price) is not list or type(outputs) is not list \
            or type(witnesses) is not list or not 1 <= len(inputs) <= S.MAX_TX_INPUTS \
            or not 1 <= len(outputs) <= S.MAX_TX_OUTPUTS or len(witnesses) != len(inputs):
        return None
    ins, outs = [], []
    for item in inputs:
        if type(item) is not list or len(item) != 2:
            return None
        pre_txhash, pre_sn = item
        if type(pre_txhash) is not bytes or len(pre_txhash) != 32 or not _uint(pre_sn, S.MAX_TX_OUTPUTS - 1):
            return None
        ins.append(_record(S.TxInput, item))
    if len(price) != 2 or not _uint(price[0]) or not _uint(price[1]):
        return None
    for item in outputs:
        if type(item) is not list or len(item) != 2 or not _uint(item[1]):
            return None
        account = _account(item[0])
        if account is None:
            return None
        outs.append(_record(S.TxOutput, (account, item[1])))
    for witness in witnesses:
        if not _signature(witness):
            return None
    if codec.dumps(value) != raw:
        return None
    return _record(S.Transaction, (ins, _record(S.Price, price), outs, list(witnesses)))


def account_body(account):
    """``account.body()`` written directly, as ``key_cbor`` writes keys: the array head of
    ``[tag 1, version 1, pubkey, epoch]``, the 33-byte key, then the epoch."""
    epoch = account.epoch
    return b"\x84\x01\x01\x58\x21" + account.pubkey + (bytes((epoch,)) if epoch < 24 else codec.dumps(epoch))


def account_bytes(account):
    """``account.encode()``: the body with one more item in its head, then the signature."""
    sig = account.ra_sig
    return b"\x85" + account_body(account)[1:] + (b"\x58\x40" + sig if sig else b"\x40")


def account_digest(account):
    """``account.signing_digest()``: what the RA signed."""
    return sha256(_ACCOUNT_DOMAIN + account_body(account))
