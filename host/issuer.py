"""The issuer: takes coins back from wallets and mints the same value afresh, one coin at a time.

A coin that came back from a charging session (deposit change, a channel's refund or
payout, an HTLC's claim or refund) names that session on the ledger, so a wallet never
spends it in another session (``firmware.books``). It sends the issuer, sealed end to end
(``protocol.sealed``), a ``RedeemRequest``: a signed ``Redeem`` of those coins, the salt of
its ``order`` and the fresh outputs (powers of two, each to a fresh one-time key). The
issuer checks that the outputs are what the order commits to and add up to the amount,
submits the ``Redeem``, and once the ledger confirmed it mints every output alone in a
``Faucet`` op signed with the issuer key (the ledger's faucet key), with a nonce derived
from the salt (``ledger_ops.redeem_mint``). Nobody without the salt can tell which mints
answer which redeem; the issuer can, as the RA can audit every account anyway.

Everything is idempotent, so a wallet that lost the answer sends the same request again:
the ledger answers the ``Redeem`` and the mints ``DUPLICATE``, which count as done. The
answer is the ledger's ``Result`` for the ``Redeem`` (``request_digest`` = SHA-256 of its
bytes, ``data`` its id), given only once every mint is confirmed: the wallet books its new
coins from it. A refused ``Redeem`` is answered with the ledger's refusal (the wallet
takes its coins back, or marks them lost). Mints that did not confirm yet raise
``NotYet``: the wallet keeps the redeem pending and asks again later.

``Issuer`` is the logic without I/O; the gateway submits what it says and returns its answers.
"""
from plugpay.host.faucet import Refused
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256


class NotYet(Exception):
    """The redeem is on the ledger but not every mint confirmed: ask again later."""


def _done(result):
    return result.ok or result.reason == L.DUPLICATE


_NONE = L.Result(bytes(32), False, L.NOT_FOUND, "", None)  # a mint nobody answered


class Issuer:
    """Checks redeem requests and builds the ops that honour them, signed with ``secret``
    (the ledger's faucet key). ``ra_pubkeys`` ({epoch: pubkey}) checks the fresh accounts
    before anything is submitted: a redeem whose mints the ledger would refuse is refused
    up front, so no wallet's coins are burnt for nothing."""

    def __init__(self, secret, ra_pubkeys):
        self.secret = secret
        self.ra_pubkeys = dict(ra_pubkeys)

    def check(self, data):
        """``(redeem bytes, [mint op bytes])`` for an encoded ``RedeemRequest``, or
        ``Refused`` with a reason code saying what is wrong."""
        try:
            request = L.RedeemRequest.decode(data, L.MAX_REQUEST_BYTES)
            redeem = L.Redeem.decode(request.redeem, L.MAX_REQUEST_BYTES)
        except DecodeError as e:
            raise Refused(L.MALFORMED, str(e))
        outputs = request.outputs
        if L.redeem_order(request.salt, outputs) != redeem.order:
            raise Refused(L.MALFORMED, "the outputs are not what the redeem's order commits to")
        total = 0
        for i, out in enumerate(outputs):
            if out.amount == 0:
                raise Refused(L.ZERO_AMOUNT, "outputs[%d].amount is 0" % i)
            ra = self.ra_pubkeys.get(out.account.epoch)
            if ra is None:
                raise Refused(L.UNKNOWN_RA_EPOCH, "outputs[%d].account: no RA key for epoch %d" % (
                    i, out.account.epoch))
            if not signing.verify(ra, out.account, out.account.ra_sig):
                raise Refused(L.BAD_ACCOUNT_SIGNATURE, "outputs[%d].account: the RA signature does not verify" % i)
            total += out.amount
        if total != redeem.amount:
            raise Refused(L.INPUTS_BELOW_OUTPUTS, "the outputs add up to %d, the redeem gives %d" % (
                total, redeem.amount))
        redeem_id = redeem.redeem_id()
        mints = []
        for i, out in enumerate(outputs):
            op = L.redeem_mint(redeem_id, request.salt, i, out)
            op.faucet_sig = signing.sign(self.secret, op)
            mints.append(op.encode())
        return request.redeem, mints

    @staticmethod
    def answer(redeem, mints, redeem_result, mint_results=None):
        """The wallet's answer: the ledger's refusal of the redeem, or its confirmation once
        every mint in ``mints`` (what ``check`` gave) is done; ``NotYet`` otherwise.
        ``redeem_result`` and ``mint_results`` are the ledger's decoded ``Result``s, the
        latter in the order of ``mints`` (None while they were not sent)."""
        if not _done(redeem_result):
            return redeem_result.encode()
        results = dict((r.request_digest, r) for r in mint_results or ())
        missing = [raw for raw in mints if not _done(results.get(sha256(raw)) or _NONE)]
        if missing:
            got = results.get(sha256(missing[0]))
            why = "%s %s" % (L.reason_name(got.reason), got.detail) if got is not None else "no answer"
            raise NotYet("the redeem is on the ledger; %d of its %d mints are not yet (%s)" % (
                len(missing), len(mints), why))
        redeem_id = L.Redeem.decode(redeem).redeem_id()
        return L.Result(sha256(redeem), True, L.OK, "", redeem_id).encode()
