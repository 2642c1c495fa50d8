"""Builders of real, signed ledger requests for tests: an RA, a faucet, one-time keys with
RA-signed accounts, and the operations of ``plugpay.protocol.ledger_ops`` signed by them.

Builders return the operation (a ``Struct``); ``run`` encodes, executes a block, commits
as the replica would, and decodes the results.
"""
import collections
import hashlib
import sqlite3

from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.protocol.schema import MAX_UINT


def secret(label):
    return hashlib.sha256(b"plugpay ledger test " + str(label).encode()).digest()


RA_EPOCH = 1
RA_SECRET = secret("ra")
RA_PUBKEYS = {RA_EPOCH: signing.public_key(RA_SECRET)}
FAUCET_SECRET = secret("faucet")
FAUCET_PUBKEY = signing.public_key(FAUCET_SECRET)


class Key:
    """A one-time key pair and its account, RA-signed unless ``ra_secret`` says otherwise."""

    def __init__(self, label, epoch=RA_EPOCH, ra_secret=RA_SECRET):
        self.secret = secret(label)
        self.pubkey = signing.public_key(self.secret)
        self.account = S.Account(self.pubkey, epoch, b"")
        self.account.ra_sig = signing.sign(ra_secret, self.account)

    def sign(self, struct):
        return signing.sign(self.secret, struct)


# An output the test can spend: where it is, its amount, and the key that owns it.
Coin = collections.namedtuple("Coin", "txhash sn amount key")


def open_ledger(path, faucet=True):
    """A ledger on a real SQLite file; no fsync per commit (durability is the replica's
    business, and the tests commit after every block)."""
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA synchronous=OFF")
    return Ledger(conn, RA_PUBKEYS, faucet_pubkey=FAUCET_PUBKEY if faucet else None)


def run(ledger, height, *ops):
    """Execute one block of ops (structures, or raw bytes as they are), commit, decode."""
    raws = [op if isinstance(op, (bytes, bytearray)) else op.encode() for op in ops]
    results = [L.Result.decode(r) for r in ledger.execute(height, raws)]
    ledger.conn.commit()
    return results


def reasons(results):
    return [L.reason_name(r.reason) for r in results]


def _outputs(pays):
    return [S.TxOutput(key.account, amount) for key, amount in pays]


def coins(txhash, pays, first_sn=0):
    return [Coin(txhash, first_sn + i, amount, key) for i, (key, amount) in enumerate(pays)]


def faucet(pays, nonce=0, signer=FAUCET_SECRET):
    op = L.Faucet(nonce, _outputs(pays), b"")
    op.faucet_sig = signing.sign(signer, op)
    return op


def _sign_inputs(op, spend, signers):
    op.witnesses = [(s or c.key).sign(op) for c, s in zip(spend, signers or [None] * len(spend))]
    return op


def _inputs(spend):
    return [S.TxInput(c.txhash, c.sn) for c in spend]


def transaction(spend, pays, signers=None, unit_price=35):
    """Spend ``spend`` (coins) into ``pays`` ((Key, amount) pairs); ``signers`` overrides
    the witness keys (forgeries)."""
    total = min(sum(a for _, a in pays), MAX_UINT)  # the price field is informational
    tx = S.Transaction(_inputs(spend), S.Price(unit_price, total), _outputs(pays), [b""] * len(spend))
    return _sign_inputs(tx, spend, signers)


def channel_open(spend, consumer, producer, collateral, installments=10, window=5, change=()):
    op = L.ChannelOpen(_inputs(spend), consumer.account, producer.account, collateral, installments, window,
                       _outputs(change), [b""] * len(spend))
    return _sign_inputs(op, spend, None)


def redeem(spend, amount, outputs=(), salt=b"s" * 32, signers=None):
    """Hand ``spend`` back to the issuer for ``amount``, committing to ``outputs`` ((Key,
    amount) pairs) under ``salt``."""
    order = L.redeem_order(salt, _outputs(outputs))
    op = L.Redeem(_inputs(spend), amount, order, [b""] * len(spend))
    return _sign_inputs(op, spend, signers)


def channel_state(channel_id, seq, paid, consumer, producer, energy_wh=0):
    state = S.ChannelState(channel_id, seq, paid, energy_wh, hashlib.sha256(b"receipt %d" % seq).digest(), b"", b"")
    state.sig_consumer = consumer.sign(state) if consumer else b""
    state.sig_producer = producer.sign(state) if producer else b""
    return state


def channel_close(state, consumer, producer):
    op = L.ChannelClose(state, b"", b"")
    op.sig_consumer = consumer.sign(op)
    op.sig_producer = producer.sign(op)
    return op


def channel_dispute(state, closer, by_producer):
    op = L.ChannelDispute(state, by_producer, b"")
    op.closer_sig = closer.sign(op)
    return op


def htlc_create(spend, payer, payee, amount, preimage, timeout, change=()):
    htlc = S.Htlc(payer.account, payee.account, amount, hashlib.sha256(preimage).digest(), timeout, b"")
    htlc.payer_sig = payer.sign(htlc)
    op = L.HtlcCreate(htlc, _inputs(spend), _outputs(change), [b""] * len(spend))
    return _sign_inputs(op, spend, None)


def htlc_claim(htlc_id, preimage, signer):
    op = L.HtlcClaim(htlc_id, preimage, b"")
    op.payee_sig = signer.sign(op)
    return op


def htlc_refund(htlc_id, signer):
    op = L.HtlcRefund(htlc_id, b"")
    op.payer_sig = signer.sign(op)
    return op


def market_request(key, bid_deadline, region="AT-5020", energy_wh=20000):
    op = L.MarketRequest(key.pubkey, region, 600, 660, L.WINDOW_HEIGHTS, energy_wh, bid_deadline, b"")
    op.sig = key.sign(op)
    return op


SALZBURG_E6 = (47809500, 13055000)  # a charger's site (public), in micro-degrees


def market_bid(request_key, bidder, unit_price, seq=1, site=SALZBURG_E6):
    op = L.MarketBid(request_key.pubkey, bidder.pubkey, site[0], site[1], unit_price, seq, b"")
    op.sig = bidder.sign(op)
    return op


def market_commit(request_key, bid_digest, signer=None):
    op = L.MarketCommit(request_key.pubkey, bid_digest, b"")
    op.sig = (signer or request_key).sign(op)
    return op


def market_withdraw(request_key, signer=None):
    op = L.MarketWithdraw(request_key.pubkey, b"")
    op.sig = (signer or request_key).sign(op)
    return op


def query(ledger, kind, key, index=0):
    return L.Result.decode(ledger.query(L.Query(kind, key, index).encode()))


def conserved(ledger):
    """The conservation invariant: every minted unit is live, locked, burnt or redeemed."""
    s = ledger.supply()
    return s["live"] + s["channels"] + s["htlcs"] + s["burnt"] + s["redeemed"] == s["minted"]
