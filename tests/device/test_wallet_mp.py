"""The wallet under the real MicroPython: coins and a payment, a channel session between two
wallets, an HTLC series, reboots, tampering and refused input.

The ledger is host code (tests/test_wallet.py runs the same flows through it); here its
answers are the ``Result`` structures it sends, built for the request the wallet signed.
Steps report the heap in use after a collection and the time per installment.
"""
import os

from plugpay.firmware import channels, records
from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.books import CLEAN
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import signing
from plugpay.protocol import structures as S
from plugpay.protocol.port import sha256, ticks_diff, ticks_ms

RA_SECRET = sha256(b"the test RA")
RA_KEYS = {0: signing.public_key(RA_SECRET)}
FAUCET_SECRET = sha256(b"the test faucet")


def _device_key(name):
    return sha256(b"device key of " + name.encode())


def _answer(request_bytes):
    """The RA's signatures for a registration request (the RA is host code)."""
    req = ra.RegistrationRequest.decode(request_bytes)
    sigs = [signing.sign(RA_SECRET, S.Account(pk, 0, b"")) for pk in req.pubkeys]
    return ra.RegistrationResponse(req.nonce, 0, sigs).encode()


def _wallet(name, keys):
    os.mkdir(name)
    w = Wallet.create(Storage(name), _device_key(name), RA_KEYS, bytes(16))
    assert w.refill_reply(_answer(w.refill_request(keys))) == keys
    return w


def _reopen(name):
    w = Wallet.open(Storage(name), _device_key(name))
    report = w.check()
    assert report["ok"], report["problems"]
    return w


def _files(name):
    out = {}
    for f in os.listdir(name):
        with open(name + "/" + f, "rb") as h:
            out[f] = h.read()
    return out


def _mint(w, amounts, nonce):
    """Each coin minted alone, as the issuer does: clean coins."""
    for i, amount in enumerate(amounts):
        index, account = w.new_account()
        op = L.Faucet(nonce * 100 + i, [S.TxOutput(account, amount)], b"")
        op.faucet_sig = signing.sign(FAUCET_SECRET, op)
        assert w.receive(op.txhash(), 0, index, amount, CLEAN)


def _ok(w, raw):
    """The ledger's answer confirming ``raw``: its id is the txhash, channel or HTLC id."""
    op = L.decode_request(raw)
    if op.TAG == L.TAG_CHANNEL_OPEN:
        ident = op.channel_id()
    elif op.TAG == L.TAG_HTLC_CREATE:
        ident = op.htlc.digest()
    elif op.TAG == L.TAG_REDEEM:
        ident = op.redeem_id()
    else:
        ident = op.txhash()
    return w.handle_result(L.Result(sha256(raw), True, L.OK, "", ident).encode())


def _ledger_row(raw):
    """The ledger's answer to the query of the channel ``raw`` opened: what a producer is
    shown is the channel id, and it reads the rest there."""
    op = L.ChannelOpen.decode(raw)
    cid = op.channel_id()
    row = [op.consumer.encode(), op.producer.encode(), op.collateral, op.installments, op.window,
           L.STATUS_OPEN, 0, op.first_installment(), 0, 2]
    return L.Result(sha256(channels.query(cid)), True, L.OK, "", row).encode()


def _refused(call, files_of):
    before = _files(files_of)
    try:
        call()
    except WalletError:
        assert _files(files_of) == before
        return
    raise AssertionError("accepted")


def test_coins_and_a_payment_with_change():
    w = _wallet("pay", 6)
    yield "wallet with 6 keys"
    _mint(w, [700, 300], 1)
    payee = w.new_account()[1]
    start = ticks_ms()
    raw = w.pay([(payee, 450)], fee=2)
    ms = ticks_diff(ticks_ms(), start)
    tx = S.Transaction.decode(raw)
    assert [o.amount for o in tx.outputs] == [450, 248] and len(tx.inputs) == 1
    coin = w.books.spends[0].inputs[0]
    assert signing.verify(signing.public_key(w.keystore.secret(coin.index)), tx, tx.witnesses[0])
    yield "payment signed and stored in %d ms" % ms
    assert _ok(w, raw) == "confirmed"
    w = _reopen("pay")
    assert w.status()["balance"] == 548 and w.pending_requests() == []
    yield "confirmed, reopened"


def test_a_channel_session_with_a_reboot():
    consumer = _wallet("cons", 5)
    producer = _wallet("prod", 3)
    _mint(consumer, [1200], 2)
    index, account = producer.new_account()
    channel_id, raw = consumer.open_channel(account, 1000, 20, 6)
    assert _ok(consumer, raw) == "confirmed"
    producer.accept_channel(channel_id, _ledger_row(raw), index, 1000, 20, 6)
    yield "channel open"
    c, p = consumer.channel(channel_id), producer.channel(channel_id)
    spent = [0, 0, 0]  # ms in propose, countersign, accept
    for k in range(2, 12):
        t0 = ticks_ms()
        state = c.propose(50 * k, 500 * k, sha256(bytes([k])))
        t1 = ticks_ms()
        full = p.countersign(state)
        t2 = ticks_ms()
        c.accept(full)
        t3 = ticks_ms()
        spent[0] += ticks_diff(t1, t0)
        spent[1] += ticks_diff(t2, t1)
        spent[2] += ticks_diff(t3, t2)
    yield "10 installments: propose %d, countersign %d, accept %d ms each" % tuple(x // 10 for x in spent)
    consumer, producer = _reopen("cons"), _reopen("prod")
    c, p = consumer.channel(channel_id), producer.channel(channel_id)
    assert c.latest().seq == 10 and c.latest().encode() == p.latest().encode()
    yield "both rebooted and checked"
    pending = c.propose(600, 6000, sha256(b"12"))
    c = _reopen("cons").channel(channel_id)
    assert c.propose(600, 6000, sha256(b"12")) == pending  # after a reboot: the same bytes
    _refused(lambda: c.propose(650, 6500, sha256(b"12")), "cons")
    c.accept(p.countersign(pending))
    close = L.ChannelClose.decode(p.countersign_close(c.sign_close()))
    assert close.state.seq == 11 and close.state.paid_to_producer == 600
    assert signing.verify(c.rec.counterparty.pubkey, close, close.sig_producer)
    yield "closed at seq 11"


def test_bad_channel_input_is_refused():
    consumer = _wallet("bc", 4)
    producer = _wallet("bp", 2)
    _mint(consumer, [500], 3)
    index, account = producer.new_account()
    channel_id, raw = consumer.open_channel(account, 400, 4, 6)
    _ok(consumer, raw)
    producer.accept_channel(channel_id, _ledger_row(raw), index, 400, 4, 6)
    c, p = consumer.channel(channel_id), producer.channel(channel_id)
    good = S.ChannelState.decode(c.propose(200, 100, sha256(b"r")))
    secret = consumer.keystore.secret(c.rec.my_index)
    for field, value in (("seq", 2), ("paid_to_producer", 50), ("paid_to_producer", 401)):
        bad = S.ChannelState.decode(good.encode())
        setattr(bad, field, value)
        bad.sig_consumer = signing.sign(secret, bad)
        _refused(lambda: p.countersign(bad.encode()), "bp")
    forged = S.ChannelState.decode(good.encode())
    forged.sig_consumer = signing.sign(sha256(b"someone else"), forged)
    _refused(lambda: p.countersign(forged.encode()), "bp")
    _refused(lambda: p.countersign(b"\x87\x03"), "bp")
    full = S.ChannelState.decode(p.countersign(good.encode()))
    full.sig_producer = bytes(64)
    _refused(lambda: c.accept(full.encode()), "bc")


def test_an_htlc_series():
    payer = _wallet("hpay", 10)
    payee = _wallet("hget", 2)
    _mint(payer, [500], 4)
    index, account = payee.new_account()
    series = payer.start_htlcs(account, 100, 3, 40)
    sid = series.series_id
    for i in range(3):  # the first from the clean coin, the others from the series' change
        assert _ok(payer, payer.fund_htlc(sid, i)) == "confirmed"
    assert [(c.amount, c.group) for c in payer.books.coins] == [(200, sid)]
    yield "3 HTLCs funded"
    request = L.RedeemRequest.decode(payer.redeem(sid))
    assert [o.amount for o in request.outputs] == [128, 64, 8]
    assert _ok(payer, request.redeem) == "confirmed"
    assert sorted((c.amount, c.group) for c in _reopen("hpay").books.coins) == [(8, b""), (64, b""), (128, b"")]
    yield "the series' change redeemed for clean coins"
    theirs = payee.accept_htlcs(series.terms(), index)
    r = _reopen("hpay").series(sid).reveal(0)
    assert theirs.take_preimage(0, r)
    claim = theirs.claim(0)
    txhash, _ = theirs.payout(0)
    assert payee.settle_htlc(sid, 0, L.Result(sha256(claim), True, L.OK, "", txhash).encode()) == "claimed"
    assert _reopen("hget").status()["balance"] == 100
    yield "revealed, claimed, rebooted"


def test_a_tampered_book_is_reported_and_not_used():
    w = _wallet("tam", 12)  # a reopen starts past the block in use
    _mint(w, [90], 5)
    for slot in records.SLOTS:
        path = "tam/books" + slot
        try:
            with open(path, "rb") as f:
                blob = bytearray(f.read())
        except OSError:
            continue
        blob[-1] ^= 1
        with open(path, "wb") as f:
            f.write(blob)
    w = Wallet.open(Storage("tam"), _device_key("tam"))
    assert w.status()["balance"] is None and w.broken and w.broken[0][0] == "books"
    assert not w.check()["ok"]
    payee = w.new_account()[1]
    _refused(lambda: w.pay([(payee, 1)]), "tam")
