"""``plugpay session``: one side of a charging session against a running host.

The host is what ``plugpay ledger up`` starts (replicas, MQTT broker, gateway, faucet, RA
registration). This process is one device: a vehicle or a charger with a wallet from
``plugpay wallet init`` and a simulated board. The two sides find each other through the
market on the ledger (Unterweger et al.): the consumer posts a request for its region,
window and energy under a one-time key, producers quote and bid from their public site
(and may undercut once after seeing the others), the consumer picks argmin g(distance,
price) with its private position after a bid window and commits. Both derive the link's
session id (with an ECDH secret of their two one-time keys, so no one else reading the
board finds the session's topics) and the terms from the request and the chosen bid, then
run the session (``firmware.session`` over ``firmware.runner``) on a fresh MQTT connection
whose user name is the session's id: a deployment broker opens the session's link topics
to that connection alone (``host.deployment``). The market, key refill and funding use a
connection of their own, closed before the session starts.

The consumer sets the bid deadline ``--bid-blocks`` past the ledger's height (asked of
the gateway with the same bytes every device sends, so the question names nothing of its
own), and closes bidding itself by committing after the wall-clock ``--bid-window``.

Exit codes: 0 a session settled with the link's OK; 1 it failed at run time (broker or
gateway unreachable, no bids, not enough money, a refused or unfinished session);
2 bad input (options, a missing or locked wallet).
"""
import json
import os
import sys
import time
from decimal import Decimal, InvalidOperation

from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ScaledClock
from plugpay.boards.sim.power import Battery, Meter
from plugpay.firmware import issuing, market
from plugpay.firmware.bookkeeping import WalletError
from plugpay.firmware.devicekey import DeviceKeyError
from plugpay.firmware.gateway_client import GatewayClient, GatewayError
from plugpay.firmware.keystore import KeystoreError
from plugpay.firmware.mqtt import MqttError
from plugpay.firmware.records import RecordCorrupt
from plugpay.firmware.refill import NOT_NEEDED, REFILLED, refill
from plugpay.firmware.runner import SessionRunner
from plugpay.firmware.session import CHANNEL, HTLC, Session, Terms
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import sha256, urandom
from plugpay.tools import broker_args

POLL_S = 0.25  # a producer looks at the market this often: well inside the link's 2 s response timeout
COMMIT_WAIT_S = 30.0  # a producer gives up on a request not committed this long after its bid
COMMIT_TRIES = 3  # a commit races a producer's update: read the bids again this often
DISPUTE_WINDOW_BLOCKS = 10
HTLC_TIMEOUT_BLOCKS = 100000  # after the request's block: far beyond any session
MAX_HTLCS = 64
BATTERY_MARGIN_WH = 10000  # a simulated vehicle battery holds this much beyond the session's energy


class UsageError(ValueError):
    """An option value this command cannot use (exit 2)."""


class SessionFailure(Exception):
    """The session could not be made or did not settle (exit 1); the text says why."""


# -- what both sides derive alike ----------------------------------------------------------

def parse_position(text):
    """``(lat_e6, lon_e6)`` micro-degrees of ``"LAT,LON"`` in decimal degrees."""
    try:
        lat, lon = (Decimal(part.strip()) for part in text.split(","))
        site = (int((lat * 1000000).to_integral_value()), int((lon * 1000000).to_integral_value()))
        L.LATITUDE_E6.check(site[0], "latitude")
        L.LONGITUDE_E6.check(site[1], "longitude")
    except (ValueError, InvalidOperation, DecodeError) as e:
        raise UsageError("--position wants LAT,LON in degrees (e.g. 47.80,13.04), got %r: %s" % (text, e))
    return site


def charge_parameters(request, unit_price, installments):
    """The link's ``ChargeParameters`` from a market request (a ``MarketView`` or an
    ``OpenRequest``: energy and window in Unix minutes) and the chosen bid's price, so
    both sides compute the same: the power is what delivers the energy within the window
    (rounded up), the metering tolerance 1 % of an installment's energy (at least 1 Wh)."""
    if request.window_unit != L.WINDOW_UNIX_MINUTES:
        raise SessionFailure("the request's window is in block heights; this command serves Unix-minute windows")
    start, end = request.window_start * 60, request.window_end * 60
    power_w = -(-request.energy_wh * 3600 // (end - start))
    tolerance = max(1, request.energy_wh // installments // 100)
    try:
        return M.ChargeParameters(request.energy_wh, start, end, power_w, unit_price, installments, tolerance)
    except DecodeError as e:
        raise SessionFailure("the request and bid give no valid terms: %s" % e)


def sides(role, scenario, produce):
    """``(producer, initiator)`` of this side: the charger is always the responder; the
    vehicle initiates and consumes in G2V, produces in V2G; in V2V the producing vehicle
    (``--produce``) responds."""
    if role == "charger":
        if scenario == "v2v" or produce:
            raise UsageError("a charger takes no part in v2v and produces by scenario, not --produce: "
                             "v2v is two vehicles, one with --produce")
        return scenario == "g2v", False
    if scenario == "v2v":
        return produce, not produce
    if produce:
        raise UsageError("--produce is for v2v; in %s the scenario decides who produces" % scenario)
    return scenario == "v2g", True


# -- the command ---------------------------------------------------------------------------

def add_parser(subparsers):
    """Register ``session`` on the ``plugpay`` command line."""
    p = subparsers.add_parser("session", help="one side (vehicle or charger) of a charging session against a "
                              "running host (`plugpay ledger up`)", description=__doc__.split("\n\n")[1])
    p.add_argument("--role", required=True, choices=["vehicle", "charger"])
    broker_args.add_broker(p, "the host's MQTT broker: mqtt://host:port, or mqtts://host:port with --ca (default "
                           "mqtt://127.0.0.1:1883, what `ledger up` starts)", default="mqtt://127.0.0.1:1883")
    p.add_argument("--wallet", required=True, metavar="DIR", help="the wallet's folder (`plugpay wallet init`)")
    p.add_argument("--device-key", required=True, metavar="FILE", help="the wallet's 32-byte device key file")
    p.add_argument("--pin-env", metavar="NAME", help="environment variable holding the wallet's PIN, if it has one")
    p.add_argument("--scenario", choices=["g2v", "v2g", "v2v"], default="g2v",
                   help="g2v: the charger produces; v2g: the vehicle produces; v2v: the vehicle with --produce "
                   "produces (default g2v)")
    p.add_argument("--produce", action="store_true", help="v2v: this vehicle sells energy")
    p.add_argument("--mode", choices=["channel", "htlc"], default="channel",
                   help="payment: one state channel or N HTLCs; both sides must give the same (default channel)")
    p.add_argument("-n", "--installments", type=int, default=None,
                   help="installments N, the same on both sides (default 100 for a channel, 10 for HTLCs)")
    p.add_argument("--energy-wh", type=int, default=20000, help="consumer: energy to buy, Wh (default 20000)")
    p.add_argument("--window-min", type=int, default=120,
                   help="consumer: minutes from now to charge in; the power is energy / window (default 120)")
    p.add_argument("--price", type=int, default=300,
                   help="producer: base price per kWh in the smallest unit, also its lowest bid (default 300)")
    p.add_argument("--power-w", type=int, default=11000,
                   help="producer: most power it delivers; bids only on requests that fit (default 11000)")
    p.add_argument("--region", required=True, help="the coarse region of the market, e.g. AT-5020")
    p.add_argument("--position", required=True, metavar="LAT,LON",
                   help="consumer: its own position, used to weigh bids and never published; producer: its "
                   "public site, sent with its bids")
    p.add_argument("--bid-window", type=float, default=3.0, help="consumer: seconds to take bids (default 3)")
    p.add_argument("--bid-blocks", type=int, default=10000,
                   help="consumer: the bid deadline this many blocks past the newest height it knows (default "
                   "10000; the commit closes bidding earlier)")
    p.add_argument("--fund", type=int, metavar="AMOUNT", help="ask the host's faucet for AMOUNT first (test networks)")
    p.add_argument("--keys", type=int, default=64, help="one-time keys to register with the RA when low (default 64)")
    p.add_argument("--refill-below", type=int, default=16,
                   help="register --keys more when fewer than this are left (default 16)")
    p.add_argument("--sessions", type=int, default=1, help="serve this many sessions, one after another (default 1)")
    p.add_argument("--scale", type=float, default=2000.0,
                   help="simulated seconds per real second for the board's energy flow (default 2000)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="give up finding a deal on the market after this many seconds, and on the "
                   "session itself after as many again from the deal (default 120)")
    p.add_argument("--json", action="store_true", help="print one JSON record per session on stdout "
                   "(progress goes to stderr)")
    p.set_defaults(func=run)
    return p


def run(args, board=None):
    """``plugpay session``; ``board`` is real hardware (a ``firmware.board.Board``: a
    Raspberry Pi's relay and meter, ``boards/rpi``) instead of a simulated board."""
    say = _sayer(sys.stderr if args.json else sys.stdout)
    try:
        plan = _Plan(args)
        wallet = _open_wallet(args)
    except (UsageError, WalletError, KeystoreError, RecordCorrupt, DeviceKeyError) as e:
        return _fail(e, 2)
    ok = True
    try:
        for number in range(args.sessions):
            record = _Device(plan, wallet, say, board).serve(fund=args.fund if number == 0 else None)
            if args.json:
                print(json.dumps(record, sort_keys=True), flush=True)
            else:
                _summary(record, say)
            if not (record["finished"] and record["stop_code"] == "OK"):
                ok = False
                _fail("session %s ended with the link %s and %s" % (
                    record["session_id"][:8], record["stop_code"] or "not stopped",
                    "its money settled" if record["finished"] else "its money NOT settled"), 1)
    except (MqttError, GatewayError, SessionFailure, market.MarketError, WalletError, KeystoreError) as e:
        return _fail(e, 1)
    return 0 if ok else 1


def _fail(error, code):
    print("plugpay session: error: %s" % error, file=sys.stderr)
    return code


def _sayer(stream):
    def say(text):
        print(text, file=stream, flush=True)
    return say


class _Plan:
    """The checked options: who this side is and what it sells or buys."""

    def __init__(self, args):
        try:
            self.broker = broker_args.endpoint(args)
        except ValueError as e:
            raise UsageError(str(e))
        self.args = args
        self.producer, self.initiator = sides(args.role, args.scenario, args.produce)
        self.mode = CHANNEL if args.mode == "channel" else HTLC
        self.installments = args.installments or (100 if self.mode == CHANNEL else 10)
        if self.mode == HTLC and self.installments > MAX_HTLCS:
            raise UsageError("an HTLC series has at most %d HTLCs (each is two ledger transactions)" % MAX_HTLCS)
        for name in ("installments", "energy_wh", "window_min", "price", "power_w", "keys", "refill_below",
                     "sessions", "bid_blocks"):
            value = self.installments if name == "installments" else getattr(args, name)
            if value < 1:
                raise UsageError("--%s must be at least 1, got %d" % (name.replace("_", "-"), value))
        if args.fund is not None and args.fund < 1:
            raise UsageError("--fund must be at least 1, got %d" % args.fund)
        if not args.scale > 0 or not args.timeout > 0 or not args.bid_window > 0:
            raise UsageError("--scale, --timeout and --bid-window must be positive")
        if not 0 < len(args.region.encode()) <= 32:
            raise UsageError("--region must be 1 to 32 bytes, e.g. AT-5020")
        self.position = parse_position(args.position)


def _open_wallet(args):
    from plugpay.firmware.devicekey import KeyFile
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet

    if not os.path.isfile(os.path.join(args.wallet, "seed")):
        raise WalletError("no wallet in %s (run plugpay wallet init)" % args.wallet)
    pin = None
    if args.pin_env:
        pin = os.environ.get(args.pin_env)
        if not pin:
            raise UsageError("environment variable %s is not set" % args.pin_env)
    wallet = Wallet.open(Storage(args.wallet), KeyFile(args.device_key).load(), pin)
    if wallet.broken:
        raise WalletError("the wallet cannot be used: %s (see plugpay wallet check)"
                          % "; ".join("%s: %s" % b for b in wallet.broken))
    if wallet.identity_id is None:
        raise WalletError("the wallet has no identity: register its device key with the RA "
                          "(plugpay ra register-identity), then plugpay wallet identity")
    return wallet


class _Device:
    """One session of this device: the market on one MQTT connection, the session on
    another; each a fresh client id."""

    def __init__(self, plan, wallet, say, hardware=None):
        self.hardware = hardware
        self.plan = plan
        self.args = plan.args
        self.wallet = wallet
        self.say = say
        self.gateway = None

    def serve(self, fund=None):
        market = self.plan.broker.device()
        market.connect()
        try:
            self.gateway = GatewayClient(market)
            self._stock_keys()
            self._refresh("before the market")  # what an earlier session left to redeem
            if fund:
                self._fund(fund)
            deadline = time.monotonic() + self.args.timeout
            deal = self._sell(deadline) if self.plan.producer else self._buy()
        finally:
            market.close()
        link = self.plan.broker.device(username=deal.session_id.hex())
        link.connect()
        try:
            record = self._run(deal, link)
            self.gateway = GatewayClient(link)  # what the session gave back, redeemed on its own connection
            self._refresh("after the session")
            record["client_ids"] = [market.client_id, link.client_id]
            return record
        finally:
            link.close()

    # -- wallet upkeep through the gateway --------------------------------------------------

    def _stock_keys(self):
        report = refill(self.wallet, self.gateway, self.args.keys, self.args.refill_below)
        if report.status == REFILLED:
            self.say("registered %d one-time keys with the RA (%d available)" % (report.added, report.available))
        elif report.status != NOT_NEEDED:
            raise SessionFailure("key registration with the RA failed (%s): %s" % (report.status, report.detail))

    def _fund(self, amount):
        result = issuing.fund(self.wallet, self.gateway, amount)
        if not result.ok:
            raise SessionFailure("the faucet refused %d: %s %s" % (amount, L.reason_name(result.reason), result.detail))
        self.say("funded with %d by the faucet, in %d coins" % (amount, len(result.data)))

    def _refresh(self, when):
        """Redeem what sessions gave back, for fresh coins; a redeem not finished waits."""
        report = issuing.refresh(self.wallet, self.gateway)
        if report.redeemed:
            self.say("%s: redeemed %d for fresh coins" % (when, report.redeemed))
        if report.status in (issuing.WAITING, issuing.REFUSED):
            self.say("%s: %s" % (when, report.detail))

    def _ask(self, op):
        result = self.gateway.submit(op)
        if not result.ok:
            raise SessionFailure("the ledger refused the %s: %s %s" % (
                L.decode_request(op).NAME, L.reason_name(result.reason), result.detail))
        return result

    def _view(self, request_key):
        query = market.market_query(request_key)
        return market.read_market(self.gateway.query(query).encode(), query)

    def _open_requests(self):
        """Every open request of the region, oldest first."""
        rows, page = [], 0
        while True:
            query = market.region_query(self.args.region, page)
            found = market.read_open_requests(self.gateway.query(query).encode(), query)
            rows.extend(found)
            if len(found) < L.MARKET_PAGE_ROWS:
                return rows
            page += 1

    # -- consumer: exploration and evaluation ----------------------------------------------

    def _height(self):
        """The ledger's height, asked as every device asks it (nothing of mine named)."""
        return market.read_height(self.gateway.query(market.HEIGHT_QUERY).encode())

    def _buy(self):
        args = self.args
        status = self.wallet.status()
        balance = status["clean_balance"]
        if not balance:
            raise SessionFailure("the wallet holds no money that may fund a session%s: fund it (--fund AMOUNT on a "
                                 "test network)" % (" (%d waits to be redeemed)" % status["balance"]
                                                    if status["balance"] else ""))
        index, _ = self.wallet.new_account()
        secret = self.wallet.keystore.secret(index)
        start = int(time.time()) // 60
        deadline = self._height() + args.bid_blocks
        raw = market.request(secret, args.region, (start, start + args.window_min), args.energy_wh, deadline,
                             L.WINDOW_UNIX_MINUTES)
        self._ask(raw)
        request_key = L.MarketRequest.decode(raw).request_key
        self.say("market: asked for %d Wh in %s within %d min; taking bids for %g s" % (
            args.energy_wh, args.region, args.window_min, args.bid_window))
        time.sleep(args.bid_window)
        for _ in range(COMMIT_TRIES):
            view = self._view(request_key)
            chosen = market.evaluate(view.bids, self.plan.position)
            if chosen is None:
                raise SessionFailure("no bids on the request in %s within the %g s bid window: is a producer "
                                     "running in that region?" % (args.region, args.bid_window))
            params = charge_parameters(view, chosen.unit_price, self.plan.installments)
            sid = market.session_id(secret, chosen.bidder_key, request_key, chosen.digest)
            terms = self._terms(sid, view, params)
            if terms.budget() > balance:
                raise SessionFailure("the wallet holds %d, the chosen bid (%d per kWh) needs %d: fund it "
                                     "(--fund AMOUNT on a test network)" % (balance, chosen.unit_price, terms.budget()))
            result = self.gateway.submit(market.commit(secret, request_key, chosen.digest))
            if result.ok:
                self.say("market: %d bid(s); chose %d per kWh at %.1f km" % (
                    len(view.bids), chosen.unit_price, market.distance_m(self.plan.position, chosen.site()) / 1000))
                return terms
            if result.reason != L.MARKET_UNKNOWN_BID:  # else the producer updated its bid just now
                raise SessionFailure("the ledger refused the commit: %s %s" % (
                    L.reason_name(result.reason), result.detail))
        raise SessionFailure("the bids kept changing: no commit after %d tries" % COMMIT_TRIES)

    # -- producer: bidding -----------------------------------------------------------------

    def _quote(self, row):
        """My price for an open request, or None when it does not fit my power."""
        if row.window_unit != L.WINDOW_UNIX_MINUTES:
            return None
        capacity_wh = self.args.power_w * (row.window_end - row.window_start) // 60
        return market.quote(self.args.price, row.energy_wh, capacity_wh, 0)

    def _sell(self, deadline):
        """Bid on the newest open request that fits until one commits to me."""
        tried = set()
        self.say("market: looking for requests in %s" % self.args.region)
        while time.monotonic() < deadline:
            height = self._height()  # a request whose bidding is over takes no more bids
            offers = [(row, self._quote(row)) for row in self._open_requests()
                      if row.request_key not in tried and row.bid_deadline > height]
            offers = [(row, price) for row, price in offers if price is not None]
            if not offers:
                time.sleep(POLL_S)
                continue
            row, price = offers[-1]
            tried.add(row.request_key)
            terms = self._bid(row, price, min(deadline, time.monotonic() + COMMIT_WAIT_S))
            if terms is not None:
                return terms
        raise SessionFailure("no request in %s chose my bid within %g s" % (self.args.region, self.args.timeout))

    def _bid(self, row, price, until):
        index, _ = self.wallet.new_account()
        secret = self.wallet.keystore.secret(index)
        sent = market.bid(secret, row.request_key, self.plan.position, 1, price)
        result = self.gateway.submit(sent)
        if not result.ok:
            self.say("market: bid refused: %s %s" % (L.reason_name(result.reason), result.detail))
            return None
        self.say("market: bid %d per kWh for %d Wh" % (price, row.energy_wh))
        updated = False
        while time.monotonic() < until:
            view = self._view(row.request_key)
            if view.status == L.STATUS_COMMITTED:
                if not market.is_chosen(view, sent):
                    self.say("market: another bid was chosen")
                    return None
                unit_price = L.MarketBid.decode(sent).unit_price
                self.say("market: my bid of %d per kWh was chosen" % unit_price)
                params = charge_parameters(view, unit_price, self.plan.installments)
                sid = market.session_id(secret, row.request_key, row.request_key, sha256(sent))
                return self._terms(sid, view, params)
            if not updated:
                update = market.maybe_update(secret, sent, view.bids, self.args.price)
                if update is not None:
                    updated = True
                    if self.gateway.submit(update).ok:
                        sent = update
                        self.say("market: undercut to %d per kWh" % L.MarketBid.decode(sent).unit_price)
            time.sleep(POLL_S)
        self.say("market: the request was not committed in time; looking again")
        return None

    # -- the session -----------------------------------------------------------------------

    def _terms(self, sid, view, params):
        plan = self.plan
        return Terms(sid, params, plan.mode, plan.producer, plan.initiator, window=DISPUTE_WINDOW_BLOCKS,
                     htlc_timeout=view.height + HTLC_TIMEOUT_BLOCKS)

    def _board(self, params):
        """The simulated hardware, sized by the terms: the agreed power, a vehicle's battery
        with room for (or holding) the energy, the responder's meter with a fresh key; or
        the real board this side runs on."""
        if self.hardware is not None:
            return self.hardware
        power = params.max_power_w
        battery = None
        if self.args.role == "vehicle":
            capacity = params.energy_wh + 2 * BATTERY_MARGIN_WH
            soc = capacity - BATTERY_MARGIN_WH if self.plan.producer else BATTERY_MARGIN_WH
            rate = max(150000, power)
            battery = Battery(capacity, soc, rate, rate)
        meter = None if self.plan.initiator else Meter(urandom(32))
        return SimBoard(self.args.role, ScaledClock(self.args.scale), power, battery=battery, meter=meter)

    def _run(self, terms, mqtt):
        board = self._board(terms.parameters)
        clock = _Millis()
        session = Session(self.wallet, board, terms, clock(), timestamp=int(time.time()))
        shown = [0]

        def show(s, now):
            for at, text in s.log[shown[0]:]:
                self.say("  %6.2f s  %s" % (at / 1000, text))
            shown[0] = len(s.log)

        runner = SessionRunner(session, mqtt, now=clock, on_step=show)
        self.say("session %s: %s as %s" % (terms.session_id.hex()[:8], "producer" if terms.producer else "consumer",
                                          "initiator" if terms.initiator else "responder"))
        runner.run(int(self.args.timeout * 1000))  # from the deal: a late deal still gets its whole session
        show(session, clock())
        return _record(self.args, terms, session, board)


class _Millis:
    def __init__(self):
        self.start = time.monotonic()

    def __call__(self):
        return int((time.monotonic() - self.start) * 1000)


def _record(args, terms, session, board):
    p = terms.parameters
    return {
        "role": args.role,
        "scenario": args.scenario,
        "mode": args.mode,
        "producer": terms.producer,
        "initiator": terms.initiator,
        "session_id": terms.session_id.hex(),
        "unit_price": p.unit_price,
        "installments": p.installments,
        "energy_wh": p.energy_wh,
        "metered_wh": board.measured_wh,
        "installments_paid": session.installments_paid,
        "budget": terms.budget(),
        "max_exposure": session.max_exposure,
        "exposure_bound": terms.budget() // p.installments if not terms.producer else 0,
        "payout": session.payout,
        "onchain": [sha256(raw).hex() for raw in session.onchain],
        "stop_code": None if session.stop_code is None else M.code_name(session.stop_code),
        "finished": session.finished,
    }


def _summary(record, say):
    say("summary: %s (%s), link %s, %s" % (record["role"], "producer" if record["producer"] else "consumer",
                                         record["stop_code"] or "not stopped",
                                         "settled" if record["finished"] else "NOT settled"))
    say("  %d Wh agreed at %d per kWh, %d Wh %s; %d of %d installments" % (
        record["energy_wh"], record["unit_price"], record["metered_wh"],
        "delivered" if record["producer"] else "measured", record["installments_paid"], record["installments"]))
    say("  budget %d, payout to me %s, max exposure %d (bound %d)" % (
        record["budget"], "-" if record["payout"] is None else record["payout"], record["max_exposure"],
        record["exposure_bound"]))
    say("  on-chain requests I got applied: %d" % len(record["onchain"]))
