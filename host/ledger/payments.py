"""Payments: Gao et al.'s transactions, the faucet's mints and redeems to the issuer, and the
funding checks every operation paid for with inputs shares (channel opens, HTLCs)."""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256
from plugpay.protocol.schema import MAX_UINT

from .fastpath import account_bytes, account_digest, pubkey
from .state import Reject, Spent, Utxo

MAX_VERIFIED_ACCOUNTS = 1 << 18  # the RA-signature cache is cleared when it reaches this


def check_account(st, account, where):
    """Gao step 2: the RA signed this one-time account (checked once per account)."""
    key = (account.pubkey, account.epoch, account.ra_sig)
    if key in st.verified_accounts:
        return
    ra = st.ra_pubkeys.get(account.epoch)
    if ra is None:
        raise Reject(L.UNKNOWN_RA_EPOCH, "%s: no RA key for epoch %d" % (where, account.epoch))
    if not st.verify_digest(ra, account_digest(account), account.ra_sig):
        raise Reject(L.BAD_ACCOUNT_SIGNATURE, where + ": the RA signature does not verify")
    if len(st.verified_accounts) >= MAX_VERIFIED_ACCOUNTS:
        st.verified_accounts.clear()
    st.verified_accounts.add(key)


def sum_outputs(outputs, locked=0):
    total = locked
    for i, out in enumerate(outputs):
        if out.amount == 0:
            raise Reject(L.ZERO_AMOUNT, "outputs[%d].amount is 0" % i)
        total += out.amount
    if total > MAX_UINT:
        raise Reject(L.AMOUNT_OVERFLOW, "the outputs sum to more than 2**64-1")
    return total


def check_funding(st, op, digest, outputs, locked, accounts, ident=None):
    """Gao et al.'s verification of anything paid for with inputs, in the paper's order:
    (1) format: no input twice, amounts non-zero and their sum within 64 bits;
    (2) every account named (outputs, plus ``accounts``) is RA-signed;
    (3) every input refers to an output that exists, and its witness verifies with
        that output's key over ``digest`` (``op``'s signing digest);
    (4) no input is spent already; (5) inputs cover outputs plus ``locked``.
    Returns the outputs to spend and the fee. Writes nothing.

    ``ident``, for an operation whose id hashes its inputs, moves the replay check
    to step (4): confirming it spent those inputs, so while they are all unspent it
    cannot have been confirmed, and the common case needs no lookup of the id."""
    seen = set()
    for i, inp in enumerate(op.inputs):
        key = (inp.pre_txhash, inp.pre_sn)
        if key in seen:
            raise Reject(L.DUPLICATE_INPUT, "inputs[%d] repeats an earlier input" % i)
        seen.add(key)
    total_out = sum_outputs(outputs, locked)
    for account, where in accounts:
        check_account(st, account, where)
    for i, out in enumerate(outputs):
        check_account(st, out.account, "outputs[%d].account" % i)
    found = []
    for i, (inp, witness) in enumerate(zip(op.inputs, op.witnesses)):
        key = (inp.pre_txhash, inp.pre_sn)
        source = st.utxos.get(key) or st.spent.get(key)
        if source is None:
            raise Reject(L.UNKNOWN_INPUT, "inputs[%d]: no output %s:%d" % (i, inp.pre_txhash.hex(), inp.pre_sn))
        if not st.verify_digest(pubkey(source.account), digest, witness):
            raise Reject(L.BAD_INPUT_SIGNATURE, "witnesses[%d] does not verify" % i)
        found.append((key, source))
    for i, (key, source) in enumerate(found):
        if isinstance(source, Spent):
            if ident is not None:
                st.require_new(ident)
            raise Reject(L.DOUBLE_SPEND, "inputs[%d] was spent by %s" % (i, source.spent_by.hex()))
    total_in = sum(source.amount for _, source in found)
    if total_in < total_out:
        raise Reject(L.INPUTS_BELOW_OUTPUTS, "inputs %d < outputs %d" % (total_in, total_out))
    return found, total_in - total_out


# -- writes (only after every check passed) ------------------------------------------------

def spend(st, found, by, height):
    for key, utxo in found:
        st.utxos.delete(key, utxo)
        st.spent.insert(key, Spent(utxo.account, utxo.amount, utxo.height, by, height))


def create_outputs(st, txhash, outputs, height):
    for sn, out in enumerate(outputs):
        st.utxos.insert((txhash, sn), Utxo(account_bytes(out.account), out.amount, height))


# -- operations ----------------------------------------------------------------------------

def transaction(st, tx, raw, height):
    """Gao et al.'s payment. Its price field (unit price, total) is information for the
    parties and auditors; the ledger checks amounts only, and burns the fee."""
    body = tx.body_from(raw)  # cut from the request: gives the txhash and the signing digest
    txhash = sha256(body)
    found, fee = check_funding(st, tx, sha256(tx.domain() + body), tx.outputs, 0, (), txhash)
    spend(st, found, txhash, height)
    create_outputs(st, txhash, tx.outputs, height)
    st.add_total("burnt", fee)
    st.confirm(txhash, height, tx, raw)
    return txhash


def faucet(st, op, raw, height):
    if st.faucet_pubkey is None:
        raise Reject(L.NOT_FAUCET, "this ledger has no faucet")
    txhash = op.txhash()
    st.require_new(txhash)
    amount = sum_outputs(op.outputs)
    if st.total("minted") + amount > MAX_UINT:
        raise Reject(L.AMOUNT_OVERFLOW, "the supply would exceed 2**64-1")
    if not st.verify(st.faucet_pubkey, op, op.faucet_sig):
        raise Reject(L.NOT_FAUCET, "not signed by the faucet key")
    for i, out in enumerate(op.outputs):
        check_account(st, out.account, "outputs[%d].account" % i)
    create_outputs(st, txhash, op.outputs, height)
    st.add_total("minted", amount)
    st.confirm(txhash, height, op, raw)
    return txhash


def redeem(st, op, raw, height):
    """Coins handed back to the issuer: spent, and their ``amount`` counted as redeemed
    (the issuer mints as much afresh); inputs above the amount are a fee."""
    body = op.body_from(raw)
    redeem_id = sha256(body)
    found, fee = check_funding(st, op, sha256(op.domain() + body), (), op.amount, (), redeem_id)
    spend(st, found, redeem_id, height)
    st.add_total("redeemed", op.amount)
    st.add_total("burnt", fee)
    st.confirm(redeem_id, height, op, raw)
    return redeem_id


# -- queries -------------------------------------------------------------------------------

def query_utxo(st, q):
    key = (q.key, q.index)
    utxo = st.utxos.get(key)
    if utxo is not None:
        return list(utxo) + [None, None]
    spent = st.spent.get(key)
    return None if spent is None else list(spent)


def query_tx(st, q):
    row = st.confirmed.get((q.key,))
    return None if row is None else list(row)


HANDLERS = {S.TAG_TRANSACTION: transaction, L.TAG_FAUCET: faucet, L.TAG_REDEEM: redeem}
QUERIES = {L.QUERY_UTXO: query_utxo, L.QUERY_TX: query_tx}
