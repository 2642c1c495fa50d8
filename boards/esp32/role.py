"""The role on an ESP32: the steps of ``plugpay session`` (tools/session_cli.py, CPython) with
MicroPython's means: open the wallet, top up one-time keys through the gateway, meet a peer
in the market (consumer: request, wait for bids, evaluate, commit; producer: bid on the
newest fitting request until one commits to it), then run the session over MQTT with the
board's relay and meter, and again. Portable, but only run on a board: no ESP32 is attached
where the project is tested, and the CPython path of the same steps is what
tests/test_session_cli.py runs against a real host.
"""
import time

from plugpay.firmware import market
from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.refill import refill
from plugpay.firmware.runner import SessionRunner
from plugpay.firmware.session import CHANNEL, HTLC, Session, Terms
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.port import sha256

BID_WINDOW_MS = 3000
POLL_MS = 250
KEYS, REFILL_BELOW = 64, 16
SESSION_TIMEOUT_MS = 7200000
DISPUTE_WINDOW_BLOCKS = 10
HTLC_TIMEOUT_BLOCKS = 100000


def _sides(role, s):
    """``(producer, initiator)`` as ``session_cli.sides`` decides them."""
    if role == "charger":
        return s["scenario"] == "g2v", False
    if s["scenario"] == "v2v":
        return s["produce"], not s["produce"]
    return s["scenario"] == "v2g", True


def _parameters(view, unit_price, installments):
    """The same ``ChargeParameters`` both sides derive (``session_cli.charge_parameters``)."""
    start, end = view.window_start * 60, view.window_end * 60
    power_w = -(-view.energy_wh * 3600 // (end - start))
    tolerance = max(1, view.energy_wh // installments // 100)
    return M.ChargeParameters(view.energy_wh, start, end, power_w, unit_price, installments, tolerance)


class Role:
    def __init__(self, config, board):
        self.config = config
        self.s = config["session"]
        self.board = board
        self.producer, self.initiator = _sides(config["role"], self.s)
        self.mode = CHANNEL if self.s["mode"] == "channel" else HTLC
        self.wallet = Wallet.open(Storage(config["wallet"]), KeyFile(config["device_key"]).load())

    def serve(self):
        host, port = self.config["broker_address"]
        mqtt = Mqtt(host, port)
        mqtt.connect()
        try:
            self.gateway = GatewayClient(mqtt)
            report = refill(self.wallet, self.gateway, KEYS, REFILL_BELOW)
            print("plugpay: keys %s, %d available" % (report.status, report.available))
            terms = self._sell() if self.producer else self._buy()
            session = Session(self.wallet, self.board, terms, 0, timestamp=int(time.time()))
            finished = SessionRunner(session, mqtt).run(SESSION_TIMEOUT_MS)
            print("plugpay: session %s: link %s, %s, payout %s" % (
                terms.session_id.hex()[:8], M.code_name(session.stop_code) if session.stop_code is not None else "-",
                "settled" if finished else "NOT settled", session.payout))
        finally:
            mqtt.close()

    def _terms(self, request_key, view, bid_digest, unit_price):
        return Terms(market.session_id(request_key, bid_digest),
                     _parameters(view, unit_price, self.s["installments"]), self.mode, self.producer,
                     self.initiator, window=DISPUTE_WINDOW_BLOCKS, htlc_timeout=view.height + HTLC_TIMEOUT_BLOCKS)

    def _view(self, request_key):
        query = market.market_query(request_key)
        return market.read_market(self.gateway.query(query).encode(), query)

    def _buy(self):
        index, _ = self.wallet.new_account()
        secret = self.wallet.keystore.secret(index)
        start = int(time.time()) // 60
        raw = market.request(secret, self.s["region"], (start, start + self.s["window_min"]), self.s["energy_wh"],
                             1 << 40, L.WINDOW_UNIX_MINUTES)
        if not self.gateway.submit(raw).ok:
            raise OSError("the ledger refused the market request")
        request_key = L.MarketRequest.decode(raw).request_key
        time.sleep_ms(BID_WINDOW_MS)
        view = self._view(request_key)
        chosen = market.evaluate(view.bids, self.s["position_e6"])
        if chosen is None:
            raise OSError("no bids in %s" % self.s["region"])
        if not self.gateway.submit(market.commit(secret, request_key, chosen.digest)).ok:
            raise OSError("the ledger refused the commit")
        return self._terms(request_key, view, chosen.digest, chosen.unit_price)

    def _sell(self):
        tried = set()
        while True:
            query = market.region_query(self.s["region"], 0)
            rows = [r for r in market.read_open_requests(self.gateway.query(query).encode(), query)
                    if r.request_key not in tried and r.window_unit == L.WINDOW_UNIX_MINUTES]
            if not rows:
                time.sleep_ms(POLL_MS)
                continue
            row = rows[-1]
            tried.add(row.request_key)
            price = market.quote(self.s["price"], row.energy_wh,
                                 self.config["power_w"] * (row.window_end - row.window_start) // 60, 0)
            if price is None:
                continue
            index, _ = self.wallet.new_account()
            sent = market.bid(self.wallet.keystore.secret(index), row.request_key, self.s["position_e6"], 1, price)
            if not self.gateway.submit(sent).ok:
                continue
            for _ in range(120):  # 30 s for the consumer to commit
                view = self._view(row.request_key)
                if view.status == L.STATUS_COMMITTED:
                    if market.is_chosen(view, sent):
                        return self._terms(row.request_key, view, sha256(sent), price)
                    break
                time.sleep_ms(POLL_MS)


def run(config, board):
    """Serve sessions one after another; a failed one is reported and the next begins."""
    role = Role(config, board)
    while True:
        try:
            role.serve()
        except Exception as e:  # the board keeps serving; the reason goes to the console
            print("plugpay: session failed: %s" % e)
            board.stop_delivery()
            time.sleep_ms(5000)
