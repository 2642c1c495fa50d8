"""Rebuilding a damaged wallet from its seed and what the ledger shows (``plugpay wallet
recover``).

The seed derives every one-time key the wallet registered, so whatever the chain holds for
those keys is the wallet's, whatever its files lost. The caller finds it (the host replays
the public chain: ``tools/wallet_recover``) and hands it to ``rebuild``:

* the key counters skip past the highest key the chain shows in use;
* the book becomes the unspent outputs paying the wallet's keys (signed spends the chain
  never confirmed are dropped: their coins are coins again, and the ledger takes at most
  one spend of each);
* a channel with one of the wallet's keys whose record is gone or unusable is recorded
  again from the ledger's row, and it and every channel whose record may be behind is set
  closing: neither can prove a state newer than the one it holds (a rebuilt one only the
  opening), so neither signs a new one; ``settle`` closes it alone and the peer answers
  with the newest within the window, or the ledger holds the newest already;
* the damage it repaired is cleared. HTLC series are not rebuilt: a damaged one stays
  reported, and ``settle`` still claims or refunds what it can.
"""
from . import names
from .books import Books
from .channels import Channel, record_name
from .keystore import KeystoreError
from .records import SLOTS


def key_accounts(wallet):
    """``{encoded Account: key index}`` of every registered key (a derivation each)."""
    ks = wallet.keystore
    out = {}
    for index in range(ks.capacity()):
        try:
            if ks.record(index) is None:
                continue
        except KeystoreError:
            continue
        out[ks.account(index).encode()] = index
    return out


def rebuild(wallet, coins, channels, highest):
    """Rebuild ``wallet`` from the ledger: ``coins`` (``coins.Coin``, unspent, paying its
    keys), ``channels`` ``[(channel id, role, my key index, counterparty Account, (collateral,
    installments, window))]`` open or closing on the ledger, ``highest`` the highest key
    index the chain shows in use (-1 for none). Returns what was done, as lines."""
    ks, storage = wallet.keystore, wallet.storage
    done = []
    if highest >= ks.reserved:
        ks.skip_past(highest)
        done.append("keys: the chain shows key %d in use: the next key handed out is %d" % (highest, ks.reserved))
    books = wallet.books or Books(storage, ks, wallet.ra_pubkeys)
    books.rebuild(coins)
    wallet.books = books
    done.append("book: %d coins worth %d, from the chain" % (len(coins), books.balance()))
    damage = wallet.damage()
    for channel_id, role, index, counterparty, terms in channels:
        if channel_id in wallet.channels:
            continue
        name = record_name(channel_id)
        for slot in SLOTS:  # what is left of an unusable record
            if storage.exists(name + slot):
                storage.remove(name + slot)
        channel = wallet._keep(wallet.channels, channel_id,
                               Channel.create(storage, ks, role, channel_id, counterparty, terms, index))
        channel.close_only()
        damage[name] = "rebuilt"
        done.append("channel %s: recorded again from the ledger; it closes alone" % channel_id.hex()[:16])
    for channel in wallet.channels.values():
        if channel.record.name in damage:
            channel.close_only()
            channel.behind = None
    repaired = [n for n in damage if not n.startswith(names.HTLC_PREFIX)]
    wallet.profile.clear_damage(repaired)
    wallet.broken = [b for b in wallet.broken if b[0] not in repaired]
    return done
