"""What is open on the ledger now, folded from its event log (``host.events``): market
requests still taking bids and their bids, channels open or in their dispute window, and
HTLCs not yet claimed or refunded. The dashboard shows it.

Why fold events rather than query the ledger: the ledger answers lookups by id, and an
observer that lists everything open would need every id anyway; the events carry them, in
commit order, so replaying the chain from block 1 rebuilds the same picture as the ledger's
own state for these objects. Only applied requests (``ok``) change it.
"""

SHOWN = 200  # rows of each kind in a snapshot; the counts are exact


class LedgerView:
    def __init__(self):
        self.height = 0
        self.market = {}    # request key -> the request's event fields, with "bids": {bidder: bid}
        self.channels = {}  # channel id -> its terms and state
        self.htlcs = {}     # HTLC id -> its terms

    def apply(self, height, events):
        """Fold block ``height``'s events in; True if anything open changed."""
        self.height = height
        changed = False
        for e in events:
            if e["ok"]:
                handler = getattr(self, "_" + e["kind"], None)
                if handler is not None:
                    handler(e)
                    changed = True
        over = [key for key, r in self.market.items() if r["bid_deadline"] <= height]
        for key in over:  # bidding is over: the ledger takes no more bids and stops listing it
            del self.market[key]
        return changed or bool(over)

    def _market_request(self, e):
        self.market[e["request"]] = {"request": e["request"], "region": e["region"], "energy_wh": e["energy_wh"],
                                     "window": e["window"], "bid_deadline": e["bid_deadline"],
                                     "height": e["height"], "bids": {}}

    def _market_bid(self, e):
        request = self.market.get(e["request"])
        if request is not None:
            request["bids"][e["bidder"]] = {"bidder": e["bidder"], "unit_price": e["unit_price"], "seq": e["seq"],
                                            "site": e["site"], "height": e["height"]}

    def _market_commit(self, e):
        self.market.pop(e["request"], None)

    _market_withdraw = _market_commit

    def _channel_open(self, e):
        self.channels[e["channel"]] = {"channel": e["channel"], "collateral": e["collateral"],
                                       "installments": e["installments"], "window": e["window"],
                                       "status": "open", "seq": 0, "paid_to_producer": e["first_installment"],
                                       "deadline": None, "height": e["height"]}

    def _channel_dispute(self, e):
        channel = self.channels.get(e["channel"])
        if channel is not None:
            channel.update(status="closing", seq=e["seq"], paid_to_producer=e["paid_to_producer"],
                           deadline=e.get("deadline"))

    def _channel_close(self, e):
        self.channels.pop(e["channel"], None)

    _channel_settle = _channel_close

    def _htlc_create(self, e):
        self.htlcs[e["htlc"]] = {"htlc": e["htlc"], "amount": e["amount"], "timeout": e["timeout"],
                                 "height": e["height"]}

    def _htlc_claim(self, e):
        self.htlcs.pop(e["htlc"], None)

    _htlc_refund = _htlc_claim

    def snapshot(self):
        """The open objects as JSON values, oldest first, at most ``SHOWN`` of each kind."""
        market = [dict(r, bids=sorted(r["bids"].values(), key=lambda b: b["unit_price"]))
                  for r in list(self.market.values())[:SHOWN]]
        return {"height": self.height,
                "market": market, "market_count": len(self.market),
                "channels": list(self.channels.values())[:SHOWN], "channel_count": len(self.channels),
                "locked_in_channels": sum(c["collateral"] for c in self.channels.values()),
                "htlcs": list(self.htlcs.values())[:SHOWN], "htlc_count": len(self.htlcs),
                "locked_in_htlcs": sum(h["amount"] for h in self.htlcs.values())}
