"""A wallet that knows when it may be behind (issue 16's reproductions, each as bad luck or
an old backup would do it): the newest copy of one record deleted or a bit flipped in it,
both copies deleted. After each, no key index leaves twice, no seq is signed twice, the book
spends nothing it may not have, ``check`` fails naming the damage and ``status`` says it,
across reboots, and the wallet can still close what it holds with what it can prove.
"""
import os
import subprocess
import sys

import pytest

from plugpay.firmware import names, records
from plugpay.firmware.channels import ChannelError
from plugpay.firmware.keystore import Exhausted
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import signing
from plugpay.protocol.structures import ChannelState
from wallet_helpers import mint, open_channel, receipt, update
from wallet_helpers import Party, WalletError, send

def newest(party, name):
    """The file of ``name``'s newest copy, as the wallet read it."""
    w = party.wallet
    record = {names.COUNTERS: w.keystore.counters, names.BOOKS: w.books and w.books.record,
              names.PROFILE: w.profile.record}.get(name)
    if record is None:
        record = next(c.record for c in w.channels.values() if c.record.name == name)
    return os.path.join(party.root, name + records.SLOTS[record.slot])


def lose(path, how):
    if how == "deleted":
        os.remove(path)
    else:  # a flipped bit inside the sealed payload of a complete copy
        blob = bytearray(open(path, "rb").read())
        blob[-10] ^= 0x10
        open(path, "wb").write(bytes(blob))


def reopen(party):
    party.wallet = Wallet.open(Storage(party.root), party.device_key)
    return party.wallet


def damaged(party, name):
    """Check fails naming ``name``; status lists it; both say to recover."""
    w = party.wallet
    report = w.check()
    assert not report["ok"]
    named = [p for p in report["problems"] if p.startswith(name + ":") and "wallet recover" in p]
    assert named, report["problems"]
    assert any(p in w.status()["problems"] for p in named)


@pytest.mark.parametrize("how", ["deleted", "flipped"])
def test_key_counters_behind_never_hand_out_a_key_again(tmp_path, authority, how):
    consumer = Party(tmp_path / "w", authority, keys=48)
    w = consumer.wallet
    handed = set()
    for _ in range(11):  # into the second block: the newest counters copy holds limit 16
        handed.add(w.new_account()[0])
    lose(newest(consumer, names.COUNTERS), how)
    w = reopen(consumer)
    damaged(consumer, names.COUNTERS)
    index, _ = w.new_account()
    assert index not in handed and index > max(handed)
    w = reopen(consumer)  # the damage is remembered after the counters healed
    damaged(consumer, names.COUNTERS)
    assert w.new_account()[0] > index


def test_key_counters_gone_take_every_key_as_used(consumer):
    w = consumer.wallet
    w.new_account()
    for slot in records.SLOTS:
        path = os.path.join(consumer.root, names.COUNTERS + slot)
        if os.path.exists(path):
            os.remove(path)
    w = reopen(consumer)
    damaged(consumer, names.COUNTERS)
    with pytest.raises(Exhausted, match="register more"):
        w.new_account()


@pytest.mark.parametrize("how", ["deleted", "flipped"])
@pytest.mark.parametrize("side", ["consumer", "producer"])
def test_a_channel_record_behind_signs_nothing_new_and_closes_on_what_it_proves(ledger, consumer, producer,
                                                                              side, how):
    channel_id = open_channel(ledger, consumer, producer, collateral=1000, installments=10)
    update(consumer, producer, channel_id, 1)
    update(consumer, producer, channel_id, 2)
    full3 = update(consumer, producer, channel_id, 3, per=133)  # paid 399 at seq 3
    party, other = (consumer, producer) if side == "consumer" else (producer, consumer)
    lose(newest(party, "ch-" + channel_id[:8].hex()), how)
    w = reopen(party)
    ch = w.channel(channel_id)
    assert ch.latest().seq == 2 and ch.behind
    damaged(party, "ch-" + channel_id[:8].hex())
    # The run: the other seq 3 (350 where 399 was signed) is neither proposed nor countersigned.
    if side == "consumer":
        with pytest.raises(ChannelError, match="may be behind|gone|may not"):
            ch.propose(350, 6000, receipt(3))
    else:
        forged = other.wallet.channel(channel_id)
        other_state = ChannelState(channel_id, 3, 350, 6000, receipt(3), b"", b"")
        other_state.sig_consumer = signing.sign(other.wallet.keystore.secret(forged.rec.my_index), other_state)
        with pytest.raises(ChannelError, match="may not"):
            ch.countersign(other_state.encode())
    with pytest.raises(ChannelError, match="may not"):
        ch.sign_close()
    w = reopen(party)  # across reboots
    with pytest.raises(ChannelError, match="may not"):
        w.channel(channel_id).sign_close()
    # It closes alone with seq 2; the other side answers with seq 3 in the window; seq 3 pays.
    (r,) = send(ledger, 10, w.channel(channel_id).dispute())
    assert L.Result.decode(r).ok
    (r,) = send(ledger, 11, other.wallet.channel(channel_id).dispute())
    assert L.Result.decode(r).ok
    row = ledger.query(w.channel(channel_id).query())
    assert w.channel(channel_id).ledger_row(row)[6] == 3 and ChannelState.decode(full3).paid_to_producer == 399


@pytest.mark.parametrize("how", ["deleted", "flipped"])
def test_a_book_behind_spends_nothing_and_says_so(ledger, consumer, producer, how):
    mint(ledger, consumer, [300])
    mint(ledger, consumer, [5000], height=2)  # the newest copy holds the 5,000 coin
    lose(newest(consumer, names.BOOKS), how)
    w = reopen(consumer)
    assert w.status()["balance"] == 300  # the older copy
    damaged(consumer, names.BOOKS)
    payee = producer.wallet.new_account()[1]
    with pytest.raises(WalletError, match="wallet recover"):
        w.pay([(payee, 100)])
    with pytest.raises(WalletError, match="wallet recover"):
        w.open_channel(payee, 100, 2, 5)
    reopen(consumer)
    damaged(consumer, names.BOOKS)


@pytest.mark.parametrize("what", ["books", "channel"])
def test_a_record_gone_with_both_copies_is_damage_not_never_written(ledger, consumer, producer, what):
    channel_id = open_channel(ledger, consumer, producer)
    update(consumer, producer, channel_id, 1)
    name = names.BOOKS if what == "books" else "ch-" + channel_id[:8].hex()
    for party in (consumer, producer) if what == "channel" else (consumer,):
        for slot in records.SLOTS:
            path = os.path.join(party.root, name + slot)
            if os.path.exists(path):
                os.remove(path)
        w = reopen(party)
        damaged(party, name)
        assert any("both copies are gone" in p for p in w.check()["problems"])
        if what == "books":
            with pytest.raises(WalletError, match="wallet recover"):
                w.pay([(producer.wallet.new_account()[1], 1)])
        else:
            assert channel_id not in w.channels


def test_a_power_cut_mid_write_is_not_damage(ledger, consumer, producer):
    """The benign case stays benign: a copy torn by an in-place write that never finished."""
    channel_id = open_channel(ledger, consumer, producer)
    update(consumer, producer, channel_id, 1)
    path = newest(consumer, "ch-" + channel_id[:8].hex())
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3)  # the trailer never made it to flash
    w = reopen(consumer)
    report = w.check()
    assert report["ok"] and report["warnings"] and not w.damage()
    ch = w.channel(channel_id)  # the last completed write: seq 1 proposed, not yet accepted
    assert ch.pending().seq == 1 and ch.behind is None
    ch.accept(producer.wallet.channel(channel_id).latest().encode())  # the producer's copy, again
    ch.propose(200, 4000, receipt(2))


PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli", "wallet"]


def test_cli_check_and_status_exit_non_zero_naming_the_damage(tmp_path, consumer):
    key = tmp_path / "device.key"
    key.write_bytes(consumer.device_key)
    for _ in range(3):
        consumer.wallet.new_account()
    lose(newest(consumer, names.COUNTERS), "deleted")
    args = ["--dir", consumer.root, "--device-key", str(key)]
    check = subprocess.run(PLUGPAY + ["check"] + args, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "problem: counters:" in check.stdout and "wallet recover" in check.stdout
    status = subprocess.run(PLUGPAY + ["status"] + args, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "counters:" in status.stdout, status
