"""The wallet a vehicle or charger role uses: keys, coins, channels and HTLC series in one folder.

Files in the wallet's ``Storage`` (every write goes through it):

* ``seed``, ``keys``, ``counters.{a,b}``: the keystore (``keystore``);
* ``profile.{a,b}``: the RA public keys the wallet was provisioned with and its identity id;
* ``books.{a,b}``: coins and signed spends (``books``);
* ``ch-*.{a,b}``: one record per open channel (``channels``);
* ``ht-*.{a,b}``: one record per HTLC series (``htlcs``).

Everything is sans-IO: requests come out as bytes for the caller to send (to the ledger
through the gateway, to the RA, to the peer over the link) and answers go in as bytes.

A record that cannot be used (no copy authenticates, or an authentic copy that is
malformed) is reported by ``status``/``check`` and never used or overwritten; the rest of
the wallet keeps working. Only the keystore and the profile are needed to open at all.

After a reboot ``open`` finishes what a power cut may have interrupted between two writes
of one operation: a channel whose payout is already in the book is removed, an HTLC
whose payout is in the book gets its final state. Then the caller re-sends
``pending_requests()``.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import ra_messages as ra
from plugpay.protocol import signing
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import collect
from plugpay.protocol.structures import Account

from . import names
from .bookkeeping import WalletError, record_names, strict
from .books import Books, check_account
from .channels import CONSUMER, PRODUCER, Channel, channel_row
from .channels import load_all as load_channels
from .keystore import Keystore, KeystoreError
from .wallet_profile import WalletProfile

def _hex(ident):
    return ident.hex() if isinstance(ident, bytes) else repr(ident)


def _final_refusal(data, nonce):
    """True if ``data`` is the RA's refusal of the request with ``nonce``, other than
    UNAVAILABLE (which a retry of the same request may get past)."""
    try:
        reply = ra.decode_reply(data)
    except DecodeError:
        return False
    return isinstance(reply, ra.RegistrationError) and reply.nonce == nonce and reply.code != ra.UNAVAILABLE


class Wallet:
    """Open with ``Wallet.create`` (provisioning) or ``Wallet.open`` (every boot)."""

    def __init__(self, storage, keystore, profile):
        self.storage = storage
        self.keystore = keystore
        self.profile = profile  # a WalletProfile
        self.ra_pubkeys = profile.ra_pubkeys()
        self.books = None
        self.channels = {}
        self.htlcs = {}
        self.broken = []  # [(record name, why it cannot be used)]

    # -- creating and opening ----------------------------------------------------------

    @classmethod
    def create(cls, storage, device_key, ra_pubkeys, identity_id=None, pin=None):
        """A new wallet: keystore (fresh seed), an empty book and the profile listing it.
        An interrupted create (a seed but no profile, nothing handed out yet) is completed."""
        if storage.exists(names.SEED):
            keystore = Keystore.open(storage, device_key, pin)
            if WalletProfile.open(storage, keystore.state_key) is not None or keystore.reserved \
                    or keystore.requested:
                raise WalletError("a wallet exists here already: refusing to replace it")
        else:
            keystore = Keystore.create(storage, device_key, pin)
        books = Books(storage, keystore, {})
        if books.record.load() is None:
            books.save()
        profile = WalletProfile.create(storage, keystore.state_key, ra_pubkeys, identity_id, [names.BOOKS])
        return cls._open(storage, keystore, profile)

    @classmethod
    def open(cls, storage, device_key, pin=None):
        """Open the wallet in ``storage``. A wrong device key or PIN, a missing or
        tampered seed, keys file or profile raise (``KeystoreError``, ``RecordCorrupt``,
        ``WalletError``); any other unusable record is reported in ``broken``."""
        keystore = Keystore.open(storage, device_key, pin)
        profile = WalletProfile.open(storage, keystore.state_key)
        if profile is None:
            raise WalletError("a keystore without a wallet profile: run wallet init again")
        return cls._open(storage, keystore, profile)

    @classmethod
    def _open(cls, storage, keystore, profile):
        w = cls(storage, keystore, profile)
        try:
            w.books = Books.open(storage, keystore, w.ra_pubkeys)
        except ValueError as e:  # RecordCorrupt, WalletError
            w.broken.append((names.BOOKS, str(e)))
        w.channels, broken = load_channels(storage, keystore)
        w.broken.extend(broken)
        if record_names(storage, names.HTLC_PREFIX):  # htlcs (11 KB of heap from .mpy) only if used
            from .htlcs import load_all as load_series

            w.htlcs, broken = load_series(storage, keystore)
            w.broken.extend(broken)
        collect()
        w._inspect()
        if w.books is not None:
            w._reconcile()
        return w

    def _records(self):
        """Every loaded A/B record of the wallet, by name."""
        out = {names.COUNTERS: self.keystore.counters, names.PROFILE: self.profile.record}
        if self.books is not None:
            out[names.BOOKS] = self.books.record
        for obj in list(self.channels.values()) + list(self.htlcs.values()):
            out[obj.record.name] = obj.record
        return out

    def _inspect(self):
        """Hold the records against the profile's list (see ``wallet_profile``): a listed one
        gone, one read from an older copy that may not be the newest written, one that
        cannot be used, or skipped keys are damage, stored in the profile until a recovery.
        Then the damaged book spends nothing and a damaged channel signs nothing new."""
        storage, profile = self.storage, self.profile
        present = record_names(storage, names.BOOKS) + record_names(storage, names.CHANNEL_PREFIX) \
            + record_names(storage, names.HTLC_PREFIX)
        if profile.upgraded:  # a version-1 profile listed nothing: take what is here
            if names.BOOKS not in present and self.books is not None:
                self.books.save()
            present = sorted(set(present + [names.BOOKS]))
        damage = [(n, "both copies are gone") for n in profile.records() if n not in present]
        for name, record in self._records().items():
            if record.behind:
                damage.append((name, "may be behind: " + record.behind))
        damage.extend(self.broken)
        if self.keystore.skipped:
            damage.append((names.COUNTERS, self.keystore.skipped))
        profile.update(set(present + profile.records()), damage)
        found = profile.damage()
        for channel in self.channels.values():
            channel.behind = found.get(channel.record.name)
        collect()

    def damage(self):
        """``{record name: why}`` of what may have lost its newest state: the book spends
        nothing and a listed channel signs nothing new until ``plugpay wallet recover``."""
        return self.profile.damage()

    def _keep(self, objects, key, obj):
        """List the record of ``obj`` (just written) and keep one object per record: a
        record shown again keeps the object already in use, since two objects storing one
        A/B record could overwrite its newer copy."""
        self.profile.register(obj.record.name)
        return objects.setdefault(key, obj)

    def _forget(self, objects, key):
        """Unlist, then remove, a finished record."""
        obj = objects.pop(key)
        self.profile.unregister(obj.record.name)
        obj.remove()

    def _reconcile(self):
        """Finish operations a power cut cut between their two writes (see the module doc)."""
        for channel_id in list(self.channels):
            channel = self.channels[channel_id]
            if self.books.knows(*channel.payout()):
                self._forget(self.channels, channel_id)
        for series in self.htlcs.values():
            series.reconcile(self.books)

    # -- reading -------------------------------------------------------------------------

    @property
    def identity_id(self):
        return self.profile.identity_id or None

    def device_pubkey(self):
        """The long-term key the RA registers in person with the owner's identity."""
        return signing.public_key(self.keystore.device_secret())

    def _books(self):
        if self.books is None:
            raise WalletError("the book record cannot be used: %s" % dict(self.broken).get(names.BOOKS))
        return self.books

    def _spending_books(self):
        """The book, for a new spend: refused while it may be missing coins or spends."""
        why = self.damage().get(names.BOOKS)
        if why is not None:
            raise WalletError("the book cannot be used to spend (%s): run `plugpay wallet recover` to rebuild it "
                              "from the ledger" % why)
        return self._books()

    def channel(self, channel_id):
        channel = self.channels.get(channel_id)
        if channel is None:
            raise WalletError("no usable channel %s" % _hex(channel_id))
        return channel

    def series(self, series_id):
        series = self.htlcs.get(series_id)
        if series is None:
            raise WalletError("no usable HTLC series %s" % _hex(series_id))
        return series

    def fallbacks(self):
        """Records read from their other copy because one copy is unusable. After a power
        cut this is the expected state (the copy being rewritten in place is torn, and the
        other one is the newest completed write), so it is a warning, not a failure; it
        heals at the record's next store, which rewrites the unusable copy."""
        out = []
        for record in self._records().values():
            for name, why in record.problems:
                out.append("%s %s (the other copy was used)" % (name, why))
        return out

    def problems(self):
        """What is wrong but does not stop the wallet: damage (records gone, unusable or
        read from a copy that may be older than the newest written, skipped keys), records
        read from their other copy, key records failing their MAC, coins the ledger
        disagrees on."""
        damage = self.damage()
        out = ["%s: %s: run `plugpay wallet recover`" % (n, damage[n]) for n in sorted(damage)]
        out.extend("%s: %s" % b for b in self.broken if b[0] not in damage)
        out.extend(self.fallbacks())
        out.extend("%s: %s" % p for p in self.keystore.problems if p[0] == "keys")
        if self.books is not None:
            for lost in self.books.lost:
                c = lost.coin
                out.append("coin %s:%d (%d) is out of use: the ledger said %s" % (
                    c.txhash.hex(), c.sn, c.amount, L.reason_name(lost.reason)))
        return out

    def status(self):
        """A summary for a screen or a log (a dict of plain values)."""
        ks = self.keystore
        books = self.books
        channels = [self.channels[k].summary() for k in sorted(self.channels)]
        series = [self.htlcs[k].summary() for k in sorted(self.htlcs)]
        return {
            "balance": None if books is None else books.balance(),
            "clean_balance": None if books is None else books.clean_balance(),
            "to_redeem": None if books is None else len(books.groups()),
            "coins": None if books is None else len(books.coins),
            "locked": None if books is None else books.locked(),
            "incoming": None if books is None else books.incoming(),
            "pending_requests": None if books is None else len(books.spends),
            "keys": {"available": ks.available(), "reserved": ks.reserved, "capacity": ks.capacity(),
                     "registration_pending": ks.pending is not None},
            "identity": None if self.identity_id is None else self.identity_id.hex(),
            "channels": channels,
            "htlc_series": series,
            "problems": self.problems(),
        }

    def check(self):
        """Integrity: the keystore walk, every record, every invariant. Returns
        ``{"ok": bool, "problems": [...], "warnings": [...], "keys": keystore report}``;
        ``warnings`` are the ``fallbacks``, which do not make it fail."""
        keys = self.keystore.check()
        warnings = self.fallbacks()
        problems = [p for p in self.problems() if p not in warnings]
        if keys["bad_mac"]:
            problems.append("keys: %d key records fail their MAC" % keys["bad_mac"])
        if keys["torn_tail_bytes"]:
            problems.append("keys: a torn record of %d bytes at the end" % keys["torn_tail_bytes"])
        if self.books is not None:
            problems.extend(self.books.check())
        owners = {}
        for channel in self.channels.values():
            problems.extend(channel.check())
            index = channel.rec.my_index
            if index in owners:
                problems.append("key %d is in two channels" % index)
            owners[index] = channel.channel_id
            collect()
        for series in self.htlcs.values():
            problems.extend(series.check())
            collect()
        return {"ok": not problems, "problems": problems, "warnings": warnings, "keys": keys}

    # -- keys and registration ---------------------------------------------------------

    def set_identity(self, identity_id):
        """Store the identity id the RA gave the owner (after ``device_pubkey`` was
        registered in person)."""
        self.profile.set_identity(identity_id)

    def new_account(self):
        """A fresh one-time account to be paid at: ``(key index, Account)``; the key is
        marked used on flash before this returns."""
        return self.keystore.reserve()

    def needs_refill(self, threshold):
        return self.keystore.available() < threshold

    def refill_request(self, count):
        """The registration request for ``count`` keys (bytes for the RA), or the one in
        flight again after a reboot."""
        if self.keystore.pending is not None:
            return self.keystore.pending_request()
        if self.identity_id is None:
            raise WalletError("no identity yet: register device_pubkey() with the RA, then set_identity")
        return self.keystore.registration_request(self.identity_id, count)

    def refill_reply(self, data):
        """The RA's reply: stores the verified keys, returns how many. The RA's refusal of
        the request in flight (other than UNAVAILABLE: retry it) abandons it, its indices
        becoming gaps, so the next refill asks afresh; a reply that fails any check stores
        nothing. Refusals raise ``KeystoreError``."""
        try:
            return self.keystore.registration_reply(data, self.ra_pubkeys)
        except KeystoreError:
            pending = self.keystore.pending
            if pending is not None and _final_refusal(data, pending[2]):
                self.keystore.abandon_registration()
            raise

    # -- coins ---------------------------------------------------------------------------

    def receive(self, txhash, sn, index, amount, group):
        """A coin paid to my key ``index``; ``group`` is ``books.CLEAN`` for a coin the issuer
        minted alone, else the id it names (see ``books``). False if the book knew it."""
        return self._books().receive(txhash, sn, index, amount, group)

    def pay(self, payees, fee=0, unit_price=0):
        """A signed payment (``[(Account, amount)]``), stored before its bytes are returned."""
        return self._spending_books().pay(payees, fee, unit_price).request

    def pending_requests(self):
        """Every signed ledger request still waiting for its result: send (again) after a
        reboot."""
        return self._books().pending_requests()

    def redeem(self, group, fee=0):
        """The ``RedeemRequest`` (bytes, for the issuer, sealed) handing the coins of session
        ``group`` back for fresh clean ones; stored before it is returned. The issuer's
        answer goes to ``handle_result``."""
        books = self._spending_books()
        return books.redeem_request(books.redeem(group, fee))

    def to_redeem(self):
        """``pending_redeems()`` to send again first, then the groups of coins that came back
        from sessions and wait to be redeemed."""
        books = self._books()
        return books.pending_redeems(), books.groups()

    def handle_result(self, data):
        """The ledger's ``Result`` for one of ``pending_requests()``: "confirmed", "refused"
        or "lost" (see ``books``). A confirmed channel open becomes a channel record, an
        HTLC create moves its series; these are written before the book, so a power cut in
        between is repaired by re-sending the request (the ledger answers DUPLICATE)."""
        books = self._books()
        result = strict(L.Result, data, "ledger result")
        spend = books.find(result.request_digest)
        if spend is None:
            raise WalletError("no pending request of this wallet has digest %s" % result.request_digest.hex())
        confirmed = books.confirmed(spend, result)
        if spend.kind == L.TAG_CHANNEL_OPEN and confirmed:
            op = L.ChannelOpen.decode(spend.request)
            channel = Channel.create(self.storage, self.keystore, CONSUMER, spend.ident, op.producer,
                                     (op.collateral, op.installments, op.window), spend.meta)
            self._keep(self.channels, channel.channel_id, channel)
        elif spend.kind == L.TAG_HTLC_CREATE:
            series = self.htlcs.get(spend.meta[0])
            if series is not None:
                series.created(spend.meta[1], confirmed)
        return books.settle(spend, result)

    # -- channels ------------------------------------------------------------------------

    def open_channel(self, producer, collateral, installments, window, fee=0):
        """Consumer: a signed ``ChannelOpen`` to the producer's account: ``(channel id,
        bytes)``. The channel record is written when the ledger confirms the open."""
        spend = self._spending_books().fund_channel_open(producer, collateral, installments, window, fee)
        return spend.ident, spend.request

    def accept_channel(self, channel_id, answer, my_index, collateral, installments, window):
        """Producer: record the channel the consumer named, from ``answer``, the ledger's
        answer to ``channels.query(channel_id)``: a channel paying my account of key
        ``my_index`` on the agreed terms, from an RA-signed consumer (open, or already
        closing: recorded either way, so its payout is collected; whether to deliver is the
        session's call). The consumer shows only the id: the open's inputs would tell the
        producer about its other coins."""
        if not isinstance(channel_id, bytes) or len(channel_id) != 32:
            raise WalletError("a channel id is 32 bytes")
        if type(my_index) is not int or not 0 <= my_index < self.keystore.reserved:
            raise WalletError("key %r was never handed out" % (my_index,))
        row = channel_row(channel_id, answer)
        if row is None:
            raise WalletError("the ledger has no channel %s" % channel_id.hex())
        if row[1] != self.keystore.account(my_index).encode():
            raise WalletError("the channel pays another producer account")
        if tuple(row[2:5]) != (collateral, installments, window):
            raise WalletError("the channel's terms %d/%d/%d are not the agreed %r/%r/%r" % (
                row[2], row[3], row[4], collateral, installments, window))
        consumer = strict(Account, row[0], "the channel's consumer")
        check_account(self.ra_pubkeys, consumer, "consumer")
        for other in self.channels.values():
            if other.rec.my_index == my_index and other.channel_id != channel_id:
                raise WalletError("key %d is in channel %s already" % (my_index, other.channel_id.hex()))
        channel = Channel.create(self.storage, self.keystore, PRODUCER, channel_id, consumer,
                                 (collateral, installments, window), my_index)
        return self._keep(self.channels, channel_id, channel)

    def finish_channel(self, channel_id, data):
        """The ledger's answer to ``channel(channel_id).query()`` once it is closed: the
        payout goes into the book, the record goes away. Returns my payout."""
        amount = self.channel(channel_id).finish(data, self._books())
        self._forget(self.channels, channel_id)
        return amount

    # -- HTLC series ---------------------------------------------------------------------

    def start_htlcs(self, payee, amount, count, timeout):
        """Payer: a series of ``count`` HTLCs of ``amount`` to ``payee`` under a fresh key."""
        check_account(self.ra_pubkeys, payee, "payee")
        if type(count) is not int or type(amount) is not int or type(timeout) is not int \
                or count < 1 or amount < 1 or timeout < 1:
            raise WalletError("count, amount and timeout must be positive integers")
        from .htlcs import HtlcSeries

        index, _ = self.keystore.reserve()
        series = HtlcSeries.start(self.storage, self.keystore, index, payee, amount, count, timeout)
        return self._keep(self.htlcs, series.series_id, series)

    def fund_htlc(self, series_id, i, fee=0):
        """Payer: the signed ``HtlcCreate`` of HTLC ``i`` (bytes). Refused while one is
        pending or once it was funded: the same HTLC id funded twice would make the
        ledger's DUPLICATE ambiguous."""
        from .htlcs import NEW, PAYER

        series = self.series(series_id)
        books = self._spending_books()
        if series.role != PAYER:
            raise WalletError("only the payer funds HTLCs")
        if type(i) is not int or not 0 <= i < series.count():
            raise WalletError("no HTLC %r in a series of %d" % (i, series.count()))
        if series.state(i) != NEW or books.spend_with_meta([series_id, i]) is not None:
            raise WalletError("HTLC %d is funded already" % i)
        return books.fund_htlc(series.htlc(i), fee, [series_id, i]).request

    def accept_htlcs(self, terms, my_index):
        """Payee: the payer's signed terms for a series paying my key ``my_index``."""
        if type(my_index) is not int or not 0 <= my_index < self.keystore.reserved:
            raise WalletError("key %r was never handed out" % (my_index,))
        from .htlcs import HtlcSeries

        series = HtlcSeries.accept(self.storage, self.keystore, self.ra_pubkeys, my_index, terms)
        return self._keep(self.htlcs, series.series_id, series)

    def settle_htlc(self, series_id, i, data):
        """The ledger's result for my ``refund(i)`` (payer) or ``claim(i)`` (payee)."""
        from .htlcs import PAYEE

        series = self.series(series_id)
        if series.role == PAYEE:
            return series.claimed(i, data, self._books())
        return series.refunded(i, data, self._books())

    def forget_series(self, series_id):
        """Remove a series once nothing in it is mine to reveal, refund or claim."""
        series = self.series(series_id)
        if not series.done() or (self.books is not None and any(
                isinstance(s.meta, list) and s.meta[:1] == [series_id] for s in self.books.spends)):
            raise WalletError("the series still holds money of mine")
        self._forget(self.htlcs, series_id)
