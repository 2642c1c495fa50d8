"""The whole life of a device, the same on every runtime: one portable role.

A vehicle or a charger does, again and again: top up its RA-signed one-time keys, redeem
what earlier sessions gave back and, on a test network, fund itself (upkeep, sealed to the
host); meet a peer in the market (the consumer posts a request under a one-time key, takes
bids for a while, picks the best for its private position and commits, retrying when a
bid changed under it; the producer pages through the region's open requests, quotes,
bids, undercuts once, and waits for a commitment); run the session on a connection of its
own, named by the session id; redeem what the session gave back; and finish what a dead
session left open. ``plugpay session`` (CPython), a Raspberry Pi's service, an ESP32's
``main.py`` and a MicroPython unix-port process are thin adapters: each builds a wallet, a
``Plan``, a way to connect to the broker, a board factory and a clock, and calls
``Device.serve``.

What both peers must compute alike from the market lives here (``sides``,
``charge_parameters``), so they cannot drift apart. The two sides of the market are
modules of their own (``role_consumer``, ``role_producer``): a device loads the one its
plan makes it, and collects garbage between upkeep, the market and the session.

Errors: ``PlanError`` (a value in the plan that cannot work: the adapter's usage error),
``RoleFailure`` (the market or a session could not be made: the text says why), and the
transports' own (``MqttError``, ``GatewayError``) pass through.
"""
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link_messages as M
from plugpay.protocol.codec import DecodeError
from plugpay.protocol.port import collect, ticks_diff, ticks_ms

from . import issuing, market, position
from .refill import NOT_NEEDED, REFILLED, refill
from .session import CHANNEL, HTLC, Session, Terms

POLL_MS = 250  # a producer looks at the market this often: well inside the link's 2 s response timeout
COMMIT_WAIT_MS = 30000  # a producer gives up on a request not committed this long after its bid
COMMIT_TRIES = 3  # a commit races a producer's update: read the bids again this often
DISPUTE_WINDOW_BLOCKS = 10
HTLC_TIMEOUT_BLOCKS = 100000  # after the request's block: far beyond any session
MAX_HTLCS = 64
ROLES = ("vehicle", "charger")
SCENARIOS = ("g2v", "v2g", "v2v")
MODES = ("channel", "htlc")


class PlanError(ValueError):
    """A value in the plan that cannot work; the text names it."""


class RoleFailure(Exception):
    """A market deal or a session could not be made; the text says why."""


# -- what both sides derive alike ----------------------------------------------------------

def parse_position(text):
    """``(lat_e6, lon_e6)`` micro-degrees of ``"LAT,LON"`` in decimal degrees, exactly (no
    floats: a position is compared on both sides of a market)."""
    try:
        return position.parse_position(text)
    except ValueError as e:
        raise PlanError("position %s" % e)


def charge_parameters(request, unit_price, installments):
    """The link's ``ChargeParameters`` from a market request (a ``MarketView`` or an
    ``OpenRequest``: energy and window in Unix minutes) and the chosen bid's price, so both
    sides compute the same: the power is what delivers the energy within the window
    (rounded up), the metering tolerance 1 % of an installment's energy (at least 1 Wh)."""
    if request.window_unit != L.WINDOW_UNIX_MINUTES:
        raise RoleFailure("the request's window is in block heights; devices serve Unix-minute windows")
    start, end = request.window_start * 60, request.window_end * 60
    power_w = -(-request.energy_wh * 3600 // (end - start))
    tolerance = max(1, request.energy_wh // installments // 100)
    try:
        return M.ChargeParameters(request.energy_wh, start, end, power_w, unit_price, installments, tolerance)
    except DecodeError as e:
        raise RoleFailure("the request and bid give no valid terms: %s" % e)


def sides(role, scenario, produce):
    """``(producer, initiator)`` of this side: the charger is always the responder; the
    vehicle initiates and consumes in G2V, produces in V2G; in V2V the producing vehicle
    (``produce``) responds."""
    if role == "charger":
        if scenario == "v2v" or produce:
            raise PlanError("a charger takes no part in v2v and produces by scenario, not by produce: "
                            "v2v is two vehicles, one producing")
        return scenario == "g2v", False
    if scenario == "v2v":
        return produce, not produce
    if produce:
        raise PlanError("produce is for v2v; in %s the scenario decides who produces" % scenario)
    return scenario == "v2g", True


class Plan:
    """What this device does, checked before anything starts. ``timeout_ms`` bounds the
    search for a deal, and the session itself again from the deal; ``fund`` (test
    networks) is asked of the faucet before the first session."""

    def __init__(self, role, region, position, scenario="g2v", mode="channel", installments=None, energy_wh=20000,
                 window_min=120, price=300, power_w=11000, produce=False, keys=64, refill_below=16,
                 bid_window_ms=3000, bid_blocks=10000, timeout_ms=120000, fund=None):
        for name, value, choices in (("role", role, ROLES), ("scenario", scenario, SCENARIOS), ("mode", mode, MODES)):
            if value not in choices:
                raise PlanError("%s must be one of %s, got %r" % (name, ", ".join(choices), value))
        self.role = role
        self.producer, self.initiator = sides(role, scenario, produce)
        self.scenario = scenario
        self.mode = CHANNEL if mode == "channel" else HTLC
        self.installments = installments if installments is not None else (100 if self.mode == CHANNEL else 10)
        if self.mode == HTLC and self.installments > MAX_HTLCS:
            raise PlanError("an HTLC series has at most %d HTLCs (each is two ledger transactions)" % MAX_HTLCS)
        for name, value in (("installments", self.installments), ("energy_wh", energy_wh),
                            ("window_min", window_min), ("price", price), ("power_w", power_w), ("keys", keys),
                            ("refill_below", refill_below), ("bid_blocks", bid_blocks),
                            ("bid_window_ms", bid_window_ms), ("timeout_ms", timeout_ms)):
            if type(value) is not int or value < 1:
                raise PlanError("%s must be an integer of at least 1, got %r" % (name, value))
        if fund is not None and (type(fund) is not int or fund < 1):
            raise PlanError("fund must be an integer of at least 1, got %r" % (fund,))
        if not isinstance(region, str) or not 0 < len(region.encode()) <= 32:
            raise PlanError("region must be 1 to 32 bytes, e.g. AT-5020, got %r" % (region,))
        self.region = region
        self.position = parse_position(position)
        self.energy_wh, self.window_min, self.price, self.power_w = energy_wh, window_min, price, power_w
        self.keys, self.refill_below = keys, refill_below
        self.bid_window_ms, self.bid_blocks, self.timeout_ms = bid_window_ms, bid_blocks, timeout_ms
        self.fund = fund

    @classmethod
    def from_profile(cls, profile, **more):
        """The plan a board's checked profile (its ``config.json``) sets; ``more`` adds what
        a profile has no field for (``fund``, ``timeout_ms``, ``bid_window_ms`` ...)."""
        s = profile["session"]
        options = {"bid_window_ms": s.get("bid_window_ms", 3000), "timeout_ms": s.get("timeout_ms", 120000),
                   "fund": s.get("fund") or None}
        options.update(more)
        return cls(profile["role"], s["region"], s["position"], scenario=s["scenario"], mode=s["mode"],
                   installments=s["installments"], energy_wh=s["energy_wh"], window_min=s["window_min"],
                   price=s["price"], power_w=profile["power_w"], produce=s["produce"], **options)


class Device:
    """One device serving sessions. Adapters give: ``wallet`` (open), ``plan``,
    ``connect(username)`` (a connected ``firmware.mqtt.Mqtt``-like object, a fresh client
    id each time), ``make_board(terms, role)`` (the hardware, or a simulated board sized by
    the terms), ``unix_s()`` (wall-clock seconds: market windows are in Unix minutes, the
    meter stamps its readings), ``say(text)`` (progress) and ``on_step(session, now)``
    (each step of a running session, for live progress; optional)."""

    def __init__(self, wallet, plan, connect, make_board, unix_s, say, on_step=None):
        self.wallet = wallet
        self.plan = plan
        self.connect = connect
        self.make_board = make_board
        self.unix_s = unix_s
        self.say = say
        self.on_step = on_step
        self.gateway = None
        self.funded = False
        # A device is a consumer or a producer for its whole life: it loads that side of
        # the market only (``role_consumer``, ``role_producer``).
        if plan.producer:
            from .role_producer import sell as deal
        else:
            from .role_consumer import buy as deal
        self._deal = deal

    def serve(self, sessions=None):
        """Serve ``sessions`` sessions (None: forever); yields each session's record."""
        served = 0
        while sessions is None or served < sessions:
            yield self.serve_one()
            served += 1

    def serve_one(self):
        """Upkeep and the market on one connection, the session on another; its record."""
        from .gateway_client import GatewayClient

        upkeep = self.connect(None)
        try:
            self.gateway = GatewayClient(upkeep)
            self._upkeep()
            collect()  # each phase's garbage goes before the next phase allocates what it keeps
            terms = self._deal(self)
        finally:
            upkeep.close()
        collect()
        link = self.connect(terms.session_id.hex())
        try:
            record = self._run(terms, link)
            collect()
            self.gateway = GatewayClient(link)  # what the session gave back, redeemed on its own connection
            self._refresh("after the session")
            record["client_ids"] = [upkeep.client_id, link.client_id]
            return record
        finally:
            link.close()

    # -- upkeep through the gateway ---------------------------------------------------------

    def _upkeep(self):
        report = refill(self.wallet, self.gateway, self.plan.keys, self.plan.refill_below)
        if report.status == REFILLED:
            self.say("registered %d one-time keys with the RA (%d available)" % (report.added, report.available))
        elif report.status != NOT_NEEDED:
            raise RoleFailure("key registration with the RA failed (%s): %s" % (report.status, report.detail))
        self._settle_leftovers()
        self._refresh("before the market")  # what an earlier session left to redeem
        if self.plan.fund and not self.funded:
            result = issuing.fund(self.wallet, self.gateway, self.plan.fund)
            if not result.ok:
                raise RoleFailure("the faucet refused %d: %s %s" % (
                    self.plan.fund, L.reason_name(result.reason), result.detail))
            self.funded = True
            self.say("funded with %d by the faucet, in %d coins" % (self.plan.fund, len(result.data)))

    def _settle_leftovers(self):
        """Finish what a dead session left open: re-send unanswered requests, close
        channels alone, claim or refund HTLCs (``firmware.settle``)."""
        w = self.wallet
        if not (w.channels or w.htlcs or w.pending_requests()):
            return
        from .settle import settle

        for line in settle(w, self.gateway):
            self.say("left open by an earlier session: " + line)

    def _refresh(self, when):
        report = issuing.refresh(self.wallet, self.gateway)
        if report.redeemed:
            self.say("%s: redeemed %d for fresh coins" % (when, report.redeemed))
        if report.status in (issuing.WAITING, issuing.REFUSED):
            self.say("%s: %s" % (when, report.detail))

    # -- the market: what ``role_consumer`` and ``role_producer`` ask through the gateway ---

    def ask(self, op):
        """Submit ``op``; its ``Result``, or ``RoleFailure`` naming the refusal."""
        result = self.gateway.submit(op)
        if not result.ok:
            raise RoleFailure("the ledger refused the %s: %s %s" % (
                L.decode_request(op).NAME, L.reason_name(result.reason), result.detail))
        return result

    def height(self):
        """The ledger's height, asked as every device asks it (nothing of mine named)."""
        return market.read_height(self.gateway.query(market.HEIGHT_QUERY).encode())

    def view(self, request_key):
        """The ledger's ``MarketView`` of a request and its bids."""
        query = market.market_query(request_key)
        return market.read_market(self.gateway.query(query).encode(), query)

    # -- the session -----------------------------------------------------------------------

    def terms_for(self, sid, view, params):
        """The session's ``Terms`` from the deal: its id, the request's view, the parameters."""
        plan = self.plan
        return Terms(sid, params, plan.mode, plan.producer, plan.initiator, window=DISPUTE_WINDOW_BLOCKS,
                     htlc_timeout=view.height + HTLC_TIMEOUT_BLOCKS)

    def session(self, terms, mqtt, now):
        """The session of ``terms`` on a board made for it, and its runner over ``mqtt``
        (connected); ``now()`` is the session's clock in ms."""
        from .runner import SessionRunner

        board = self.make_board(terms, self.plan.role)
        session = Session(self.wallet, board, terms, now(), timestamp=self.unix_s(), history=False)
        self.say("session %s: %s as %s" % (terms.session_id.hex()[:8], "producer" if terms.producer else "consumer",
                                          "initiator" if terms.initiator else "responder"))
        return SessionRunner(session, mqtt, now=now, on_step=self.on_step)

    def _run(self, terms, mqtt):
        started = ticks_ms()

        def now():
            return ticks_diff(ticks_ms(), started)

        runner = self.session(terms, mqtt, now)
        runner.run(self.plan.timeout_ms)  # from the deal: a late deal still gets its whole session
        session = runner.session
        if self.on_step is not None:
            self.on_step(session, now())
        return record(self.plan, terms, session, session.board)


def reporter(say, unix_s=None, every_ms=10000):
    """An ``on_step`` for ``Device`` that says what a running session does: each of its
    log lines as it comes, its progress (energy, installments, exposure against its bound)
    at a steady pace and on each installment, and each wait that holds it up with when it
    gives up on the wall clock (``unix_s()``: Unix seconds, ``time.time`` unless given),
    once (``firmware.progress``)."""
    import time

    from .progress import PROGRESS, WAIT, Progress

    unix_s = unix_s or time.time

    progress = Progress(every_ms)
    state = {"session": None, "shown": 0}

    def step(session, now):
        if state["session"] is not session:
            state["session"], state["shown"] = session, 0
        if len(session.log) > state["shown"]:
            for at, text in session.log[state["shown"]:]:
                say("  %6.2f s  %s" % (at / 1000, text))
            state["shown"] = len(session.log)
        due = progress.step(session, now)
        if due:
            at = (now - session.started) / 1000
            if due & WAIT:
                say("  %6.2f s  %s" % (at, progress.announcement(now, unix_s())))
            if due & PROGRESS:
                say("  %6.2f s  progress: %s" % (at, progress.line(session, now)))
    return step


def record(plan, terms, session, board):
    """What a session came to, as plain values (``plugpay session --json``, a board's
    console): the terms, the energy, the money, the exposure against the bound the code
    enforces, the ledger requests applied, and how the link stopped."""
    p = terms.parameters
    return {
        "role": plan.role,
        "scenario": plan.scenario,
        "mode": "channel" if plan.mode == CHANNEL else "htlc",
        "producer": terms.producer,
        "initiator": terms.initiator,
        "session_id": terms.session_id.hex(),
        "unit_price": p.unit_price,
        "installments": p.installments,
        "energy_wh": p.energy_wh,
        # What this side's board measured through its end: the signing meter's register on
        # the responder (which meters), the board's own measurement on the initiator (which
        # takes or gives each paid chunk up to the tolerance past it: within tolerance_wh).
        "measured_wh": board.measured_wh,
        "installments_paid": session.installments_paid,
        "budget": terms.budget(),
        "max_exposure": session.max_exposure,
        # The largest installment: what the consumer may have paid ahead (b/N, rounded up).
        "exposure_bound": session.exposure_bound(),
        "payout": session.payout,
        "onchain": [L.request_id(L.decode_request(raw), raw).hex() for raw in session.onchain],
        "stop_code": None if session.stop_code is None else M.code_name(session.stop_code),
        "finished": session.finished,
        # The consumer's installment round trips (sent to accepted, ms), for figures.
        "installment_ms": sorted(session.round_trips),
    }
