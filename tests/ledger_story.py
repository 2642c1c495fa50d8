"""A ledger history with every kind of request, one block per step, for the event log tests:
mints, a payment, a redeem, a channel disputed and settled, a channel closed cooperatively,
HTLCs claimed and refunded, market requests committed, withdrawn and left open, a double
spend and bytes that are no request. Some things are left open at the end (a channel, an
HTLC, a market request with a bid) so a view of what is open has something to show.

``Story(first).steps`` are the requests of each step, for step i landing in block ``first +
i`` or later (one request per block works too); ``open_at_end`` names what stays open.
"""
import ledger_helpers as H

PREIMAGE = b"p" * 32
REGION = "AT-5020"


class Story:
    def __init__(self, first):
        self.first = first
        k = self.k = {name: H.Key("story " + name) for name in (
            "a", "b", "c", "d", "e", "f", "g", "h", "pay1", "pay2", "con1", "pro1", "con2", "pro2", "con3", "pro3",
            "payer", "payee", "req1", "req2", "req3", "bidder", "bidder3")}
        pays = [(k[name], 1000) for name in ("a", "b", "c", "d", "e", "f", "g", "h")]
        self.mint = H.faucet(pays, nonce=7)
        coin = dict(zip("abcdefgh", H.coins(self.mint.txhash(), pays)))
        self.pay = H.transaction([coin["a"]], [(k["pay1"], 600), (k["pay2"], 400)])
        self.double = H.transaction([coin["a"]], [(k["pay2"], 1000)])
        self.redeem = H.redeem([coin["h"]], 1000)
        self.open1 = H.channel_open([coin["b"]], k["con1"], k["pro1"], 1000, installments=10, window=1)
        self.ch1 = self.open1.channel_id()
        self.dispute = H.channel_dispute(H.channel_state(self.ch1, 2, 200, k["con1"], k["pro1"], 400), k["con1"],
                                         False)
        self.settle = H.L.ChannelSettle(self.ch1)
        self.open2 = H.channel_open([coin["c"]], k["con2"], k["pro2"], 1000, installments=4, window=3)
        self.close2 = H.channel_close(H.channel_state(self.open2.channel_id(), 4, 1000, k["con2"], k["pro2"], 2000),
                                      k["con2"], k["pro2"])
        self.open3 = H.channel_open([coin["d"]], k["con3"], k["pro3"], 800, installments=8, window=6)
        self.htlc_claimed = H.htlc_create([coin["e"]], k["payer"], k["payee"], 1000, PREIMAGE, first + 1000)
        self.claim = H.htlc_claim(self.htlc_claimed.htlc.digest(), PREIMAGE, k["payee"])
        refund_at = first + 9  # the refund below lands later than that
        self.htlc_refunded = H.htlc_create([coin["f"]], k["payer"], k["payee"], 1000, PREIMAGE, refund_at)
        self.refund = H.htlc_refund(self.htlc_refunded.htlc.digest(), k["payer"])
        self.htlc_open = H.htlc_create([coin["g"]], k["payer"], k["payee"], 1000, PREIMAGE, first + 1001)
        self.req1 = H.market_request(k["req1"], first + 1000, REGION, 12000)
        self.bid1 = H.market_bid(k["req1"], k["bidder"], 310)
        self.commit1 = H.market_commit(k["req1"], self.bid1.digest())
        self.req2 = H.market_request(k["req2"], first + 1000, REGION, 5000)
        self.withdraw2 = H.market_withdraw(k["req2"])
        self.req3 = H.market_request(k["req3"], first + 1000, REGION, 7000)
        self.bid3 = H.market_bid(k["req3"], k["bidder3"], 290)
        self.garbage = b"\x82\x01\x02 is no request"
        self.steps = [
            [self.mint], [self.pay], [self.open1, self.htlc_claimed, self.req1], [self.dispute, self.htlc_refunded],
            [self.settle, self.bid1], [self.open2, self.req2], [self.close2, self.commit1], [self.withdraw2],
            [self.claim, self.double, self.garbage], [self.open3, self.htlc_open, self.req3],
            [self.bid3, self.redeem, self.refund],
        ]

    def encoded(self):
        """The steps' request bytes."""
        return [[op if isinstance(op, bytes) else op.encode() for op in step] for step in self.steps]

    def open_at_end(self):
        """(channel ids, HTLC ids, market request keys) still open after the last step."""
        return ({self.open3.channel_id().hex()}, {self.htlc_open.htlc.digest().hex()},
                {self.k["req3"].pubkey.hex()})
