"""Records the session ``plugpay bench memory`` replays under MicroPython (CPython only).

The vehicle runs as a device runs it (``firmware.session.Session`` under
``firmware.runner.SessionRunner``); its MQTT connection is ``RecordingLink``, which carries
what it publishes to the charger (a ``Session`` of its own, in this process) and to the
ledger (the real state machine, a block per request), hands back what they answer at the
runner's next poll, and writes every poll, message in and message out to the transcript
(``memory_bench_mpy.write_record``). Time is simulated: a poll with nothing to deliver moves
the clock to the charger's next deadline or by the runner's wait, whichever comes first, so
the recording is the same however fast this machine is.
"""
from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ScaledView
from plugpay.boards.sim.power import Meter
from plugpay.firmware.runner import SessionRunner
from plugpay.firmware.session import Session
from plugpay.protocol import signing, topics
from plugpay.tools.memory_bench_mpy import IN, OUT, POLL, ReplayClock, board_of, write_record

LIMIT_MS = 3600000  # simulated: a session still running after an hour is stuck
STILL_POLLS = 100000  # polls in a row that deliver nothing and move no clock: stuck too


class RecordingLink:
    """The vehicle's ``Mqtt`` stand-in: the charger's session and the ledger behind it."""

    connects = 1
    connected = True

    def __init__(self, f, client_id, clock, charger, ledger, incoming):
        self.f = f
        self.client_id = client_id
        self.clock = clock
        self.charger = charger
        self.ledger = ledger  # ``bench_wallet.Bench``: ``execute`` and ``ledger.query``
        self.incoming = incoming
        self.result_topic = topics.topic(topics.LEDGER_RESULT, client_id)
        self.queue = []
        self.still = 0

    def subscribe(self, topic, qos):
        pass

    def publish(self, topic, payload, qos):
        payload = bytes(payload)
        write_record(self.f, OUT, topic, payload)
        parsed = topics.parse(topic)
        if parsed is None:  # the link, towards the charger
            self.charger.link_received(payload, self.clock.t)
        elif parsed[0] == topics.LEDGER_SUBMIT:
            self.queue.append((self.result_topic, self.ledger.execute(payload)))
        else:
            self.queue.append((self.result_topic, self.ledger.ledger.query(payload)))
        self._pump()
        return True

    def _pump(self):
        """The charger's output: ledger requests answered at once, link messages queued."""
        c, now = self.charger, self.clock.t
        while True:
            requests = c.ledger_requests()
            for kind, raw in requests:
                c.ledger_answer(self.ledger.execute(raw) if kind == "submit" else self.ledger.ledger.query(raw), now)
            for data in c.link_messages():
                self.queue.append((self.incoming, data))
            if not requests:
                return

    def poll(self, timeout_ms):
        if not self.queue:
            t = self.clock.t + timeout_ms
            due = self.charger.next_deadline()
            if due is not None and due < t:
                t = max(self.clock.t, due)
            self.still = self.still + 1 if t == self.clock.t else 0
            if t > LIMIT_MS or self.still > STILL_POLLS:
                raise RuntimeError("the recorded session is stuck at %d ms" % self.clock.t)
            self.clock.t = t
            self.charger.tick(t)
            self._pump()
        out, self.queue = self.queue, []
        write_record(self.f, POLL, self.clock.t, len(out))
        for topic, payload in out:
            write_record(self.f, IN, topic, payload)
        return out


def record(vehicle, charger, vehicle_terms, charger_terms, config, ledger, path):
    """Run the session between two open wallets over ``ledger`` (a ``bench_wallet.Bench``);
    the vehicle's transcript goes to ``path``; returns the vehicle's finished ``Session``."""
    clock = ReplayClock()
    meter = Meter(signing.new_secret())
    charger_board = SimBoard("charger", ScaledView(clock, config["scale"]), config["power_w"], meter=meter)
    charger_side = Session(charger, charger_board, charger_terms, clock(), timestamp=config["timestamp"])
    vehicle_side = Session(vehicle, board_of(config, clock), vehicle_terms, clock(), timestamp=config["timestamp"])
    incoming = topics.link_topics(vehicle_terms.session_id)[1]
    with open(path, "wb") as f:
        transport = RecordingLink(f, config["client_id"], clock, charger_side, ledger, incoming)
        runner = SessionRunner(vehicle_side, transport, now=clock)
        runner.flush()
        while not vehicle_side.finished:
            runner.step()
    return vehicle_side
