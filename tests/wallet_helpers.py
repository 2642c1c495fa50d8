"""A wallet party for tests (its own folder, device key and RA-registered keys), a real
ledger to run its requests in, and the steps tests repeat: mint clean coins, send a block,
redeem through the issuer's logic, open and update a channel."""
import hashlib
import os
import sqlite3

import pytest

import ledger_helpers as H
from plugpay.firmware import channels
from plugpay.firmware.books import CLEAN
from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.host.issuer import Issuer
from plugpay.host.ledger import Ledger
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol import structures as S

_vins = iter(range(10**6))


def fresh_vin():
    """A vehicle id no other party of this run has (the RA refuses one registered twice)."""
    return "1HGCM82633A%06d" % next(_vins)


def ra_keys(authority):
    return {authority.vault.epoch: authority.vault.public_key}


@pytest.fixture
def ledger(tmp_path, authority):
    conn = sqlite3.connect(str(tmp_path / "ledger.db"))
    conn.execute("PRAGMA synchronous=OFF")
    return Ledger(conn, ra_keys(authority), faucet_pubkey=H.FAUCET_PUBKEY)


class Party:
    """A wallet in its own folder with its device key, registered with the RA."""

    def __init__(self, root, authority, keys=24):
        os.mkdir(root)
        self.root = str(root)
        self.device_key = os.urandom(32)
        self.wallet = Wallet.create(Storage(self.root), self.device_key, ra_keys(authority))
        fields = {"name": "Ada Lovelace", "licence": "LOV-1815", "vehicle_id": fresh_vin()}
        self.wallet.set_identity(authority.register_identity(fields, self.wallet.device_pubkey()))
        assert self.wallet.refill_reply(authority.handle(self.wallet.refill_request(keys))) == keys

    def reboot(self):
        """Reopen from the same files, as after a power cycle; the wallet must pass check."""
        self.wallet = Wallet.open(Storage(self.root), self.device_key)
        report = self.wallet.check()
        assert report["ok"], report["problems"]
        return self.wallet

    def files(self):
        out = {}
        for name in sorted(os.listdir(self.root)):
            with open(os.path.join(self.root, name), "rb") as f:
                out[name] = f.read()
        return out


@pytest.fixture
def consumer(tmp_path, authority):
    return Party(tmp_path / "consumer", authority)


@pytest.fixture
def producer(tmp_path, authority):
    return Party(tmp_path / "producer", authority)


def send(ledger, height, *raws):
    """One block of requests through the real ledger: the encoded results."""
    out = ledger.execute(height, list(raws))
    ledger.conn.commit()
    return out


def mint(ledger, party, amounts, height=1):
    """Faucet coins to fresh accounts of ``party``, each minted alone as the issuer does
    (clean coins), learned by its wallet; their txhashes."""
    w = party.wallet
    keys = [w.new_account() for _ in amounts]
    ops = []
    for (_, acc), amount in zip(keys, amounts):
        op = L.Faucet(int.from_bytes(os.urandom(8), "big"), [S.TxOutput(acc, amount)], b"")
        op.faucet_sig = signing.sign(H.FAUCET_SECRET, op)
        ops.append(op)
    results = H.run(ledger, height, *ops)
    for res, (index, _), amount in zip(results, keys, amounts):
        assert res.ok, res.detail
        assert w.receive(res.data, 0, index, amount, CLEAN)
    return [res.data for res in results]


def redeem(ledger, party, group, height):
    """Hand ``group``'s coins back through the real issuer logic: the redeem in one block,
    its mints in the next; the wallet takes the issuer's answer."""
    raw = party.wallet.redeem(group)
    redeem_op, mints = Issuer(H.FAUCET_SECRET, party.wallet.ra_pubkeys).check(raw)
    (done,) = H.run(ledger, height, redeem_op)
    minted = H.run(ledger, height + 1, *mints) if done.ok else None
    return party.wallet.handle_result(Issuer.answer(redeem_op, mints, done, minted))


def settle_all(ledger, height, wallet):
    """Send every pending request in one block and hand each result to the wallet."""
    return [wallet.handle_result(r) for r in send(ledger, height, *wallet.pending_requests())]


def receipt(k):
    return hashlib.sha256(b"meter receipt %d" % k).digest()


def decoded(raw):
    return L.decode_request(raw)


def unchanged(party, call, error=WalletError, match=None):
    """``call`` is refused with ``error`` and changes neither a file nor the status."""
    before, status = party.files(), party.wallet.status()
    with pytest.raises(error, match=match):
        call()
    assert party.files() == before
    assert party.wallet.status() == status


def accept(ledger, producer, channel_id, index, *terms):
    """The producer records the channel the consumer named, as the ledger shows it."""
    return producer.wallet.accept_channel(channel_id, ledger.query(channels.query(channel_id)), index, *terms)


def open_channel(ledger, consumer, producer, collateral=1000, installments=10, window=5, height=2):
    mint(ledger, consumer, [collateral + 200], height=height - 1)
    index, account = producer.wallet.new_account()
    channel_id, raw = consumer.wallet.open_channel(account, collateral, installments, window, fee=3)
    (result,) = send(ledger, height, raw)
    assert consumer.wallet.handle_result(result) == "confirmed"
    accept(ledger, producer, channel_id, index, collateral, installments, window)
    return channel_id


def update(consumer, producer, channel_id, k, per=100, wh=2000):
    """Installment k: the consumer proposes, the producer countersigns, the consumer accepts."""
    state = consumer.wallet.channel(channel_id).propose(per * k, wh * k, receipt(k))
    full = producer.wallet.channel(channel_id).countersign(state)
    consumer.wallet.channel(channel_id).accept(full)
    return full


