"""``plugpay bench session``: issue 5's figures for charging sessions, with Table I of
Unterweger et al. beside them.

Everything real: a fresh RA, a ledger of 4 replica processes, a throw-away Mosquitto
(``host.broker.MosquittoProcess``) and the gateway (``host.stack``), device wallets on files
(every state fsynced before its signature leaves, ``firmware/storage.py``) provisioned over
MQTT (``tools/fleet.py``), sessions of ``firmware.session`` over ``firmware.runner``.

* On-chain transactions per session: the distinct applied ledger requests of both sides,
  the faucet funding excluded, by operation; for every channel session of the run (every
  N, every misbehaviour) and for an HTLC series of N.
* Installments of one channel between two CPython wallets (two threads, two MQTT
  connections, boards so fast that energy is instantaneous: the payment loop alone). The
  round trip of installment k runs from its publish (the consumer signed and stored the
  state of seq k before) to the moment InstallmentAccepted(k) is in: one MQTT round trip,
  with the producer's verify, countersign and store between. Reported beside it: from the
  moment the consumer takes up reading k (it checks it, signs the receipt, signs and
  stores the state) to the same acceptance. The consumer's acceptance of the previous
  answer goes into the same write as its proposal when both came in one poll. Timed with
  ``perf_counter``.
  ``installments_per_s`` is the whole loop's rate, reading and receipt included.
  Over Mosquitto, then the same under the embedded amqtt broker. Baseline of the same run:
  an fsynced small write (``Storage.overwrite``, as a record copy is written), back to back
  and after 2 ms idle as in the loop, and a QoS 1 echo round trip through the same broker
  with ``firmware/mqtt.py``; the bound they imply: one round trip plus the installment's
  durable writes (idle figure), back to back.
* Exposure: every scenario (g2v, v2g, v2v) with every misbehaviour (none, producer stops,
  consumer stops, stale close) in both modes, all at once through the same broker and
  ledger; the consumer's measured maximum over b/N, the producer's maximum.
* One link step (``tools/link_step.py``), signatures apart, on CPython and under the real
  MicroPython (WebAssembly port).
* ``--sessions`` concurrent sessions (default 100: 200 wallets) through one broker and one
  4-replica ledger, multiplexed on a few threads; each must settle with the producer paid b
  and the consumer's change intact. Sessions per minute: from the first connection to the
  last settlement.

Figures are reported, never asserted: a slow machine gives slower figures, not a failure.
"""
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.session import CHANNEL, HTLC
from plugpay.firmware.storage import Storage
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.protocol import signing
from plugpay.protocol.port import urandom
from plugpay.tools import fleet, link_step
from plugpay.tools.demo import MISBEHAVIOURS, SCENARIOS
from plugpay.tools.load import percentile

PAPER = {"onchain_tx_channel": 4, "onchain_tx_htlc": "N", "offchain_tx_channel": "N-1", "consumer_risk": "b/N",
         "producer_risk": 0}
TARGETS = {"installments_per_s": 500, "p99_ms": 5.0, "link_step_ms_cpython": 0.1, "link_step_ms_micropython": 2.0}
ISSUE_ESTIMATE_MS = {"durable_write": 0.37, "mqtt_round_trip": 0.6}
PRICE = 300
POWER_W = 11000
SCENARIO_N = 10  # installments of the exposure scenarios and of the concurrent sessions
SCENARIO_WH = 2000
CHANGE = 1000  # the consumer gets this much more than the budget: its change after the open
INSTANT = 1e9  # board time scale: a chunk of energy flows in well under a microsecond
DEMO_SCALE = 2000.0  # the demo's: a 200 Wh chunk at 11 kW in about 30 ms
SCENARIO_WINDOW = 40  # blocks to answer a stale close: 21 sessions at once make blocks fast
# Misbehaving sessions end on a timeout: short ones, so the exposure phase takes seconds; the
# payment timeout also covers funding N HTLCs one after the other while 20 other sessions
# keep the ledger busy.
SCENARIO_TIMEOUTS = link.Timeouts(response=5000, retransmit=500, sequence=4000, payment=10000, pause=60000)
# Many sessions at once wait on one ledger: no honest session may time out while it queues.
CONCURRENT_TIMEOUTS = link.Timeouts(response=60000, retransmit=2000, sequence=120000, payment=120000, pause=120000)
MPY_HEADER = "CONFIG = %s\n"
WRITE_IDLE_S = 0.002  # about what a wallet waits for its peer between two of its writes


def _stderr(text):
    print(text, file=sys.stderr, flush=True)


def params(n, energy_wh):
    return M.ChargeParameters(energy_wh, 1790000000, 1790007200, POWER_W, PRICE, n, 5)


# ---- baselines --------------------------------------------------------------------------

class TimedStorage(Storage):
    """The wallet's own storage, adding up the time its durable writes take (``write_s``)."""

    def __init__(self, root):
        Storage.__init__(self, root)
        self.write_s = 0.0

    def _timed(self, write, *args):
        t = time.perf_counter()
        try:
            write(self, *args)
        finally:
            self.write_s += time.perf_counter() - t

    def replace(self, name, data):
        self._timed(Storage.replace, name, data)

    def overwrite(self, name, data):
        self._timed(Storage.overwrite, name, data)

    def write_at(self, name, offset, data):
        self._timed(Storage.write_at, name, offset, data)

    def remove(self, name):
        self._timed(Storage.remove, name)


def durable_write_ms(directory, repeat=300, size=200, idle_s=0.0):
    """(mean, median, p99) ms of one fsynced small write as the wallet makes a record copy
    (``Storage.overwrite``: the file rewritten in place, one fsync). ``idle_s``: sleep that
    long before each write, as a wallet waits for its peer between writes; on a virtual
    machine the idle CPU then takes longer to wake for the disk's answer."""
    storage = Storage(directory)
    data = bytes(size)
    storage.replace("probe", data)
    times = []
    for _ in range(repeat):
        if idle_s:
            time.sleep(idle_s)
        t = time.perf_counter()
        storage.overwrite("probe", data)
        times.append((time.perf_counter() - t) * 1000)
    storage.remove("probe")
    return sum(times) / len(times), percentile(times, 50), percentile(times, 99)


def mqtt_echo_ms(host, port, repeat=500, size=256):
    """(mean, median, p99) ms of a QoS 1 round trip A -> broker -> B -> broker -> A, B echoing in a
    thread of its own, both with ``firmware/mqtt.py`` (two wallets' hops of one installment)."""
    prefix = "plugpay/bench/" + urandom(8).hex()
    a, b = Mqtt(host, port), Mqtt(host, port)
    a.connect()
    b.connect()
    a.subscribe(prefix + "/pong", 1)
    b.subscribe(prefix + "/ping", 1)
    stop = threading.Event()

    def echo():
        while not stop.is_set():
            for _, payload in b.poll(20):
                b.publish(prefix + "/pong", payload, 1)

    thread = threading.Thread(target=echo, daemon=True, name="plugpay-echo")
    thread.start()
    times = []
    try:
        for i in range(repeat + 20):  # the first 20 warm up
            payload = i.to_bytes(4, "big") + bytes(size - 4)
            t = time.perf_counter()
            a.publish(prefix + "/ping", payload, 1)
            while True:
                got = [p for _, p in a.poll(2000) if p[:4] == payload[:4]]
                if got:
                    break
                if time.perf_counter() - t > 10:
                    raise RuntimeError("no echo through %s within 10 s" % a.url)
            if i >= 20:
                times.append((time.perf_counter() - t) * 1000)
    finally:
        stop.set()
        thread.join(2)
        a.close()
        b.close()
    return sum(times) / len(times), percentile(times, 50), percentile(times, 99)


# ---- installments of one channel ----------------------------------------------------------

class StampedMqtt:
    """A ``firmware.mqtt.Mqtt`` that notes when each poll returned (``polled``, perf_counter
    seconds): the session's own clock counts whole milliseconds, too coarse for a round trip."""

    def __init__(self, mqtt):
        self._mqtt = mqtt
        self.polled = None

    def poll(self, timeout_ms):
        got = self._mqtt.poll(timeout_ms)
        self.polled = time.perf_counter()
        return got

    def __getattr__(self, name):
        return getattr(self._mqtt, name)


def installment_loop(host, directory, n, broker, progress=_stderr, scenario="g2v"):
    """One channel of ``n`` installments between two fresh wallets, each side in its own
    thread; the per-installment round trips and the loop's rate. In V2G the charger, who
    meters, pays: its reading goes out and the receipt comes back before it pays, one hop
    more per installment than G2V."""
    label = broker if scenario == "g2v" else scenario  # wallet names (the V2G loop runs once, on Mosquitto)
    progress("[%s] one %s channel of %d installments between two wallets ..." % (broker, scenario, n))
    wallets = fleet.provision(host, directory, ["consumer-" + label, "producer-" + label], 8, storage=TimedStorage)
    consumer, producer = wallets["consumer-" + label], wallets["producer-" + label]
    budget = 20 * n * PRICE // 1000
    fleet.fund(host, [(consumer, budget + CHANGE)])
    pair = fleet.Pair(consumer, producer, params(n, 20 * n), CHANNEL, scenario, scale=INSTANT)
    times = []  # (k, taken up, sent, accepted): perf_counter seconds
    sent = {}  # k -> (when the poll that brought reading k returned, when installment k was out)
    writes = {}

    def on_step(session, now):
        mqtt = pair.consumer.runner.mqtt
        if session.installment_sent is not None and session.installment_sent[0] not in sent:
            sent[session.installment_sent[0]] = (mqtt.polled, time.perf_counter())  # called after the publish
        last = session.last_installment
        if last is not None and last[0] >= 1 and (not times or times[-1][0] != last[0]):
            times.append((last[0],) + sent[last[0]] + (mqtt.polled,))
            if last[0] in (1, n - 1):
                writes[last[0]] = (consumer.storage.writes, producer.storage.writes,
                                   consumer.storage.write_s + producer.storage.write_s)

    try:
        pair.start(host, on_consumer_step=on_step)
        pair.consumer.runner.mqtt = StampedMqtt(pair.consumer.runner.mqtt)
        errors = fleet.drive([[pair.consumer.runner], [pair.producer.runner]], timeout_s=60 + n * 0.1)
    finally:
        pair.close()
    if errors:
        raise errors[0]
    if not pair.finished or len(times) != n - 1:
        raise RuntimeError("the %d-installment channel over %s did not complete (%d installments accepted)"
                           % (n, broker, len(times)))
    rtts = [(accepted - out) * 1000 for _, _, out, accepted in times]
    cycles = [(accepted - taken) * 1000 for _, taken, _, accepted in times]
    span_ms = (times[-1][3] - times[0][1]) * 1000
    counted = n - 2 if n > 2 else 1
    return {
        "broker": broker,
        "scenario": scenario,
        "installments": n,
        "installments_per_s": (n - 1) * 1000.0 / span_ms,
        "p50_ms": percentile(rtts, 50),
        "p99_ms": percentile(rtts, 99),
        "max_ms": max(rtts),
        "cycle_p50_ms": percentile(cycles, 50),
        "cycle_p99_ms": percentile(cycles, 99),
        "consumer_writes_per_installment": (writes[n - 1][0] - writes[1][0]) / counted,
        "producer_writes_per_installment": (writes[n - 1][1] - writes[1][1]) / counted,
        "write_ms_per_installment": (writes[n - 1][2] - writes[1][2]) * 1000 / counted,
        "onchain_tx": len(pair.onchain()),
        "onchain_by_op": pair.onchain_by_op(),
        "payout_ok": pair.producer.session.payout == pair.budget(),
    }


def broker_figures(host, directory, n, broker, progress=_stderr):
    """The installment loop and its baseline, measured through one broker."""
    progress("[%s] baseline: fsynced small writes, QoS 1 echo round trips ..." % broker)
    write_mean, write_p50, write_p99 = durable_write_ms(directory)
    idle_mean, idle_p50, _ = durable_write_ms(directory, idle_s=WRITE_IDLE_S)
    rtt_mean, rtt_p50, rtt_p99 = mqtt_echo_ms(host.broker_host, host.broker_port)
    loop = installment_loop(host, directory, n, broker, progress)
    writes = loop["consumer_writes_per_installment"] + loop["producer_writes_per_installment"]
    bound_ms = rtt_mean + writes * idle_mean  # means: a rate is set by the mean, not the median
    loop.update({
        "durable_write_ms": write_p50,
        "durable_write_mean_ms": write_mean,
        "durable_write_p99_ms": write_p99,
        "durable_write_after_idle_ms": idle_p50,
        "durable_write_after_idle_mean_ms": idle_mean,
        "mqtt_round_trip_ms": rtt_p50,
        "mqtt_round_trip_mean_ms": rtt_mean,
        "mqtt_round_trip_p99_ms": rtt_p99,
        "bound_installment_ms": bound_ms,
        "bound_installments_per_s": 1000.0 / bound_ms,
        "issue_estimate_ms": ISSUE_ESTIMATE_MS["durable_write"] + ISSUE_ESTIMATE_MS["mqtt_round_trip"],
    })
    return loop


# ---- exposure in every scenario -------------------------------------------------------------

def scenario_specs():
    """(mode, scenario, misbehaviour) of every exposure run: a stale close needs a channel."""
    specs = []
    for mode in (CHANNEL, HTLC):
        for scenario in sorted(SCENARIOS):
            for misbehave in sorted(MISBEHAVIOURS):
                if mode == HTLC and misbehave == "stale-close":
                    continue
                specs.append((mode, scenario, misbehave))
    return specs


def exposures(host, directory, progress=_stderr):
    specs = scenario_specs()
    progress("exposure: %d sessions (every scenario, misbehaviour and mode) at once ..." % len(specs))
    names = []
    for i in range(len(specs)):
        names += ["c%d" % i, "p%d" % i]
    wallets = fleet.provision(host, directory, names, 32)
    p = params(SCENARIO_N, SCENARIO_WH)
    budget = SCENARIO_WH * PRICE // 1000
    fleet.fund(host, [(wallets["c%d" % i], budget + CHANGE) for i in range(len(specs))])
    pairs = [fleet.Pair(wallets["c%d" % i], wallets["p%d" % i], p, mode, scenario, misbehave, DEMO_SCALE,
                        SCENARIO_TIMEOUTS, SCENARIO_WINDOW) for i, (mode, scenario, misbehave) in enumerate(specs)]
    try:
        for pair in pairs:
            pair.start(host)
        errors = fleet.drive([pair.runners for pair in pairs], timeout_s=120)
    finally:
        for pair in pairs:
            pair.close()
    if errors:
        raise errors[0]
    return [_exposure_row(pair) for pair in pairs]


def _exposure_row(pair):
    """What one session risked: the most each side had at stake during it (``max_exposure``)
    and what each holds after the ledger settled it (the producer's payout against the
    energy its meter counted; the same payout against the energy the consumer measured)."""
    c, s = pair.consumer.session, pair.producer.session
    price = pair.params.unit_price
    payout = s.payout or 0
    settled_producer = pair.producer.board.measured_wh * price // 1000 - payout
    settled_consumer = payout - pair.consumer.board.measured_wh * price // 1000
    consumer_max = max(c.max_exposure, settled_consumer)
    return {
        "session": pair.label,
        "mode": "htlc" if pair.mode == HTLC else "channel",
        "settled": pair.finished,
        "stop_codes": [M.code_name(x.session.stop_code) if x.session.stop_code is not None else None
                       for x in (pair.consumer, pair.producer)],
        "onchain_tx": len(pair.onchain()),
        "onchain_by_op": pair.onchain_by_op(),
        "offchain_updates": s.channel.latest().seq if s.channel is not None else 0,
        "payout": payout,
        "producer_holds": s.paid_signed,
        "paid_as_signed": payout == s.paid_signed,
        "consumer_max_exposure": consumer_max,
        "consumer_settled_exposure": settled_consumer,
        "bound": pair.per_installment(),
        "consumer_exposure_ratio": consumer_max / pair.per_installment(),
        "producer_max_exposure": max(s.max_exposure, settled_producer),
        "producer_settled_exposure": settled_producer,
    }


# ---- many sessions at once ----------------------------------------------------------------

def concurrent(host, directory, sessions, progress=_stderr):
    progress("concurrent: provisioning %d wallets (registration batches over MQTT, faucet) ..." % (2 * sessions))
    started = time.monotonic()
    names = []
    for i in range(sessions):
        names += ["cc%d" % i, "cp%d" % i]
    wallets = fleet.provision(host, directory, names, 8, progress=progress)
    p = params(SCENARIO_N, SCENARIO_WH)
    budget = SCENARIO_WH * PRICE // 1000
    consumers = [wallets["cc%d" % i] for i in range(sessions)]
    fleet.fund(host, [(w, budget + CHANGE) for w in consumers])
    provision_s = time.monotonic() - started
    pairs = [fleet.Pair(consumers[i], wallets["cp%d" % i], p, CHANNEL, scale=INSTANT, timeouts=CONCURRENT_TIMEOUTS)
             for i in range(sessions)]
    threads = min(8, sessions)
    progress("concurrent: %d sessions through one broker and one 4-replica ledger on %d threads ..."
             % (sessions, threads))
    started = time.monotonic()
    try:
        for pair in pairs:
            pair.start(host)
        groups = [sum((pair.runners for pair in pairs[t::threads]), []) for t in range(threads)]
        errors = fleet.drive(groups, timeout_s=120 + 2 * sessions)
    finally:
        for pair in pairs:
            pair.close()
    elapsed = time.monotonic() - started
    if errors:
        raise errors[0]
    ok = sum(1 for pair in pairs if _settled_correctly(pair, budget))
    return {
        "concurrent_sessions": sessions,
        "concurrent_sessions_ok": ok,
        "concurrent_elapsed_s": elapsed,
        "sessions_per_minute": sessions * 60.0 / elapsed,
        "concurrent_threads": threads,
        "provision_s": provision_s,
        "onchain_tx_max": max(len(pair.onchain()) for pair in pairs),
    }


def _settled_correctly(pair, budget):
    c, s = pair.consumer.session, pair.producer.session
    return (pair.finished and c.stop_code == M.OK and s.stop_code == M.OK and s.payout == budget and c.payout == 0
            and pair.producer.wallet.status()["balance"] == budget
            and pair.consumer.wallet.status()["balance"] == CHANGE)


# ---- the link step ----------------------------------------------------------------------------

def link_step_figures(n, rounds, micropython, progress=_stderr):
    progress("link step: %d installments x %d rounds on CPython ..." % (n, rounds))
    step_us, verify_us, messages = link_step.step_times(n, rounds)
    out = {
        "link_step_ms": step_us / 1000,
        "link_verify_ms": verify_us / 1000,
        "link_codec_baseline_ms": link_step.codec_baseline_us(2000) / 1000,
        "link_messages_per_round": messages,
        "link_backends": {"ecdsa": signing.BACKEND},
    }
    if micropython:
        out.update(_micropython_step(n, max(1, rounds // 2), progress))
    return out


def _micropython_step(n, rounds, progress):
    from plugpay.tools import micropython as mpy

    reason = mpy.unavailable_reason()
    if reason:
        return {"link_step_ms_micropython": None, "micropython_unavailable": reason}
    progress("link step under MicroPython (WebAssembly) ...")
    root = mpy.ROOT
    files = dict(("/lib/plugpay/" + name, (root / name).read_bytes())
                 for name in ("boards/__init__.py", "boards/sim/__init__.py", "boards/sim/power.py"))
    config = {"installments": n, "rounds": rounds, "baseline_repeat": 50}
    source = MPY_HEADER % json.dumps(config) + Path(link_step.__file__).read_text()
    record = mpy.run(source, files=files, timeout=600).check().records[-1]
    return {
        "link_step_ms_micropython": record["step_us"] / 1000,
        "link_verify_ms_micropython": record["verify_us"] / 1000,
        "link_codec_baseline_ms_micropython": record["baseline_us"] / 1000,
    }


# ---- the whole run ----------------------------------------------------------------------------

def run(sessions=100, installments=1000, quick=False, micropython=True, progress=_stderr):
    from plugpay.host.broker import MosquittoProcess
    from plugpay.host.stack import HostStack

    if sessions < 1 or installments < 3:
        raise ValueError("the benchmark needs at least 1 session and 3 installments")
    report = {"sessions_requested": sessions, "cores": os.cpu_count() or 1}
    report.update(link_step_figures(3 if quick else 20, 1 if quick else 5, micropython, progress))
    with tempfile.TemporaryDirectory(prefix="plugpay-bench-session-") as tmp:
        progress("starting Mosquitto, the RA, 4 replicas and the gateway ...")
        with MosquittoProcess(tmp) as mosquitto, \
                HostStack(os.path.join(tmp, "mosquitto-run"), broker_url=mosquitto.url) as host:
            mosq = broker_figures(host, host.directory, installments, "mosquitto", progress)
            v2g = installment_loop(host, host.directory, installments, "mosquitto", progress, "v2g")
            rows = exposures(host, host.directory, progress)
            report.update(concurrent(host, host.directory, sessions, progress))
        progress("starting the RA, 4 replicas, the embedded amqtt broker and the gateway ...")
        with HostStack(os.path.join(tmp, "amqtt-run")) as host:
            amqtt = broker_figures(host, host.directory, installments, "amqtt", progress)
    channel_rows = [r for r in rows if r["mode"] == "channel"]
    honest_htlc = [r for r in rows if r["mode"] == "htlc" and r["session"] == "g2v htlc none"][0]
    honest_channel = [r for r in channel_rows if r["session"] == "g2v channel none"][0]
    report.update({
        "onchain_tx_channel": max([r["onchain_tx"] for r in channel_rows]
                                  + [mosq["onchain_tx"], amqtt["onchain_tx"], report["onchain_tx_max"]]),
        "onchain_tx_channel_honest": honest_channel["onchain_tx"],
        "onchain_by_op_channel_honest": honest_channel["onchain_by_op"],
        "offchain_updates_channel": honest_channel["offchain_updates"],
        "onchain_tx_htlc": honest_htlc["onchain_tx"],
        "onchain_by_op_htlc": honest_htlc["onchain_by_op"],
        "htlc_installments": SCENARIO_N,
        "installments_per_s": mosq["installments_per_s"],
        "p99_ms": mosq["p99_ms"],
        "installments_per_s_v2g": v2g["installments_per_s"],
        "p99_ms_v2g": v2g["p99_ms"],
        "v2g": v2g,
        "installments_per_s_amqtt": amqtt["installments_per_s"],
        "p99_ms_amqtt": amqtt["p99_ms"],
        "mosquitto": mosq,
        "amqtt": amqtt,
        "max_consumer_exposure_ratio": max(r["consumer_exposure_ratio"] for r in rows),
        "max_producer_exposure": max(r["producer_max_exposure"] for r in rows),
        "scenarios": rows,
        "scenarios_settled": sum(1 for r in rows if r["settled"]),
        "scenarios_paid_as_signed": sum(1 for r in rows if r["paid_as_signed"]),
        "paper": PAPER,
        "targets": TARGETS,
    })
    return report


def _verdict(ok):
    return "meets" if ok else "MISSES"


def table(r):
    mq, aq = r["mosquitto"], r["amqtt"]
    lines = ["session benchmark: RA, 4 replica processes, gateway; %d cores; ECDSA %s" % (
        r["cores"], r["link_backends"]["ecdsa"]), ""]
    lines.append("%-50s %14s %18s" % ("Table I (Unterweger et al.)", "measured", "paper / target"))
    lines.append("%-50s %14d %18s" % ("on-chain tx, HTLC series (N = %d)" % r["htlc_installments"],
                                      r["onchain_tx_htlc"], "N = %d" % r["htlc_installments"]))
    lines.append("    %s (the paper counts one per HTLC; each is created and claimed)" % ", ".join(
        "%d %s" % (v, k) for k, v in sorted(r["onchain_by_op_htlc"].items())))
    lines.append("%-50s %14d %18s  %s" % ("on-chain tx, state channel (most of any session)", r["onchain_tx_channel"],
                                          "<= 4", _verdict(r["onchain_tx_channel"] <= 4)))
    lines.append("%-50s %14d %18s" % ("  honest channel session", r["onchain_tx_channel_honest"], "-"))
    lines.append("%-50s %14d %18s" % ("off-chain updates, channel (N = %d)" % r["htlc_installments"],
                                      r["offchain_updates_channel"], "N-1 = %d" % (r["htlc_installments"] - 1)))
    lines.append("%-50s %14.2f %18s  %s" % ("max consumer exposure / (b/N), every scenario",
                                            r["max_consumer_exposure_ratio"], "<= 1",
                                            _verdict(r["max_consumer_exposure_ratio"] <= 1)))
    lines.append("%-50s %14d %18s  %s" % ("max producer exposure, every scenario", r["max_producer_exposure"], "<= 0",
                                          _verdict(r["max_producer_exposure"] <= 0)))
    lines.append("")
    lines.append("%-50s %14s %18s" % ("installments of one channel (N = %d)" % mq["installments"], "Mosquitto", "amqtt"))
    lines.append("%-50s %14.0f %18.0f  target >= %d" % ("installments per second", mq["installments_per_s"],
                                                         aq["installments_per_s"], TARGETS["installments_per_s"]))
    for label, key in (("round trip p50 ms", "p50_ms"), ("round trip p99 ms", "p99_ms"), ("round trip max ms", "max_ms"),
                       ("reading taken up -> accepted, p50 ms", "cycle_p50_ms"),
                       ("reading taken up -> accepted, p99 ms", "cycle_p99_ms")):
        lines.append("%-50s %14.2f %18.2f%s" % (label, mq[key], aq[key],
                                                "  target < %.0f" % TARGETS["p99_ms"] if key == "p99_ms" else ""))
    v2g = r["v2g"]
    lines.append("%-50s %14.0f %18s" % ("V2G (the paying charger meters): installments/s", v2g["installments_per_s"],
                                        "-"))
    lines.append("%-50s %14.2f %18s" % ("V2G round trip p99 ms", v2g["p99_ms"], "-"))
    lines.append("%-50s %14.3f %18.3f  issue: %.2f" % ("baseline: fsynced small write ms (p50)", mq["durable_write_ms"],
                                                       aq["durable_write_ms"], ISSUE_ESTIMATE_MS["durable_write"]))
    lines.append("%-50s %14.3f %18.3f" % ("  the same after %.0f ms idle, as in the loop" % (WRITE_IDLE_S * 1000),
                                          mq["durable_write_after_idle_ms"], aq["durable_write_after_idle_ms"]))
    lines.append("%-50s %14.3f %18.3f  issue: %.2f" % ("baseline: QoS 1 echo round trip ms (p50)",
                                                       mq["mqtt_round_trip_ms"], aq["mqtt_round_trip_ms"],
                                                       ISSUE_ESTIMATE_MS["mqtt_round_trip"]))
    lines.append("%-50s %14.1f %18.1f" % ("durable writes per installment (both wallets)",
                                          mq["consumer_writes_per_installment"] + mq["producer_writes_per_installment"],
                                          aq["consumer_writes_per_installment"] + aq["producer_writes_per_installment"]))
    lines.append("%-50s %14.2f %18.2f" % ("those writes inside the loop, ms per installment",
                                          mq["write_ms_per_installment"], aq["write_ms_per_installment"]))
    lines.append("%-50s %14.2f %18.2f" % ("bound: round trip + those writes (idle means), ms", mq["bound_installment_ms"],
                                          aq["bound_installment_ms"]))
    lines.append("%-50s %14.0f %18.0f" % ("bound: installments per second", mq["bound_installments_per_s"],
                                          aq["bound_installments_per_s"]))
    lines.append("%-50s %13.0f%% %17.0f%%" % ("measured rate / bound", 100 * mq["installments_per_s"]
                                             / mq["bound_installments_per_s"],
                                             100 * aq["installments_per_s"] / aq["bound_installments_per_s"]))
    lines.append("")
    lines.append("%-50s %14.4f %18s  %s" % ("link step ms, CPython (signatures apart)", r["link_step_ms"],
                                            "< %.1f" % TARGETS["link_step_ms_cpython"],
                                            _verdict(r["link_step_ms"] < TARGETS["link_step_ms_cpython"])))
    if r.get("link_step_ms_micropython") is not None:
        lines.append("%-50s %14.3f %18s  %s" % ("link step ms, MicroPython (WebAssembly)", r["link_step_ms_micropython"],
                                                "< %.1f" % TARGETS["link_step_ms_micropython"],
                                                _verdict(r["link_step_ms_micropython"] < 2.0)))
    elif r.get("micropython_unavailable"):
        lines.append("link step, MicroPython: %s" % r["micropython_unavailable"])
    lines.append("    bare codec round trip of one message %.4f ms; one signature verification %.3f ms (apart)" % (
        r["link_codec_baseline_ms"], r["link_verify_ms"]))
    lines.append("")
    lines.append("%-50s %14s %18s  %s" % ("concurrent sessions settled correctly", "%d of %d" % (
        r["concurrent_sessions_ok"], r["concurrent_sessions"]), "all", _verdict(
        r["concurrent_sessions_ok"] == r["concurrent_sessions"])))
    lines.append("%-50s %14.0f %18s" % ("sessions per minute (%d threads)" % r["concurrent_threads"],
                                        r["sessions_per_minute"], "-"))
    lines.append("    provisioning %d wallets took %.1f s; the sessions %.1f s" % (
        2 * r["concurrent_sessions"], r["provision_s"], r["concurrent_elapsed_s"]))
    lines.append("")
    lines.append("exposure: the most at stake during the session or after the ledger settled it; paid: the"
                 " producer's payout / what the co-signed state or accepted preimages give it")
    lines.append("%-27s %-7s %-44s %6s %9s %9s %9s" % ("session", "settled", "stop codes (consumer, producer)",
                                                       "on-ch.", "consumer", "producer", "paid"))
    for row in r["scenarios"]:
        lines.append("%-27s %-7s %-44s %6d %4d/%-4d %9d %4d/%-4d" % (
            row["session"], "yes" if row["settled"] else "NO", ", ".join(str(c) for c in row["stop_codes"]),
            row["onchain_tx"], row["consumer_max_exposure"], row["bound"], row["producer_max_exposure"],
            row["payout"], row["producer_holds"]))
    return "\n".join(lines)


def main(args):
    quick = args.quick
    sessions = args.sessions if args.sessions is not None else (10 if quick else 100)
    installments = args.installments if args.installments is not None else (100 if quick else 1000)
    report = run(sessions, installments, quick, not args.no_micropython)
    print(json.dumps(report) if args.json else table(report))
    return 0
