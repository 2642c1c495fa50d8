"""The simulated board (boards/sim): exact energy, contactor, battery limits, the signing
meter's chain, a meter's error, the clocks, and a 20 kWh session in 100 installments."""
import time
from pathlib import Path

import pytest

from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ManualClock, ScaledClock
from plugpay.boards.sim.power import MJ_PER_WH, Battery, Meter
from plugpay.firmware.board import Contactor
from plugpay.protocol import signing
from plugpay.protocol.port import sha256
from plugpay.protocol.structures import MeterReading
from plugpay.tools import micropython

BOARDS = Path(__file__).resolve().parent.parent / "boards"

SESSION = sha256(b"sim board session")[:16]
METER_KEY = sha256(b"sim board meter")
HOUR_MS = 3600000


def charger(clock, power_w=11000, error_ppm=0, battery=None):
    meter = Meter(METER_KEY, error_ppm=error_ppm)
    meter.start(SESSION, 300)
    return SimBoard("charger", clock, power_w, battery=battery, meter=meter)


def cable(clock, producer_w=11000, consumer_w=11000, producer_battery=None, consumer_battery=None, error_ppm=0,
          measure_error_ppm=0):
    """A producer and a consumer on one cable, contactors open."""
    producer = charger(clock, producer_w, error_ppm, producer_battery)
    consumer = SimBoard("vehicle", clock, consumer_w, battery=consumer_battery, measure_error_ppm=measure_error_ppm)
    consumer.connect(producer)
    return producer, consumer


def start(*boards):
    for board in boards:
        board.start_delivery()


def test_energy_is_power_times_time_exactly():
    clock = ManualClock()
    producer, consumer = cable(clock)
    start(producer, consumer)
    clock.advance(HOUR_MS)
    producer.update()
    assert producer.measured_wh == 11000 and consumer.measured_wh == 11000


def test_many_small_steps_add_up_to_the_same_energy_as_one():
    # 3600 W for 1 ms is 1/1000 Wh: a thousand 1 ms steps are 1 Wh, with nothing lost.
    clock = ManualClock()
    producer, consumer = cable(clock, 3600, 3600)
    start(producer, consumer)
    for t in range(1, 1000):
        clock.advance(1)
        (producer if t % 2 else consumer).update()
        assert producer.measured_wh == 0
    clock.advance(1)
    consumer.update()
    assert producer.measured_wh == consumer.measured_wh == 1
    assert producer.meter.session_mj == consumer.flowed_mj == MJ_PER_WH


def test_a_standalone_board_trades_with_the_grid():
    clock = ManualClock()
    producer = charger(clock, 7)
    consumer = SimBoard("vehicle", clock, 5, battery=Battery(100, 0, 50, 50))
    start(producer, consumer)
    clock.advance(HOUR_MS)
    producer.update()
    consumer.update()
    assert producer.measured_wh == 7
    assert consumer.measured_wh == 5 and consumer.battery.soc_wh == 5


def test_the_flow_runs_at_the_lowest_power_on_the_cable():
    clock = ManualClock()
    battery = Battery(80000, 60000, 50000, 3000)  # a vehicle that gives at most 3 kW
    producer, consumer = cable(clock, 11000, 7400, producer_battery=battery)
    start(producer, consumer)
    clock.advance(HOUR_MS)
    consumer.update()
    assert producer.measured_wh == consumer.measured_wh == 3000
    assert battery.soc_wh == 57000


def test_an_open_contactor_on_either_end_stops_the_flow():
    clock = ManualClock()
    producer, consumer = cable(clock)
    producer.start_delivery()
    clock.advance(HOUR_MS)
    producer.update()  # the vehicle has not closed yet
    assert producer.measured_wh == 0
    consumer.start_delivery()
    clock.advance(HOUR_MS // 2)
    consumer.stop_delivery()
    clock.advance(HOUR_MS + HOUR_MS // 2)
    producer.update()
    assert producer.measured_wh == consumer.measured_wh == 5500
    assert producer.contactor.closed and not consumer.contactor.closed
    assert consumer.contactor.switches == 2 and consumer.contactor.changed_ms == HOUR_MS + HOUR_MS // 2


def test_a_contactor_counts_switches_not_commands():
    c = Contactor()
    c.close(1)
    c.close(2)
    c.open(3)
    c.open(4)
    assert c.switches == 2 and not c.closed and c.changed_ms == 3


def test_boards_connect_only_with_contactors_open():
    clock = ManualClock()
    producer = charger(clock)
    consumer = SimBoard("vehicle", clock, 11000)
    producer.start_delivery()
    with pytest.raises(ValueError, match="contactors open"):
        consumer.connect(producer)


def test_a_full_battery_absorbs_no_more():
    clock = ManualClock()
    battery = Battery(20000, 19990, 50000, 50000)
    producer, consumer = cable(clock, consumer_battery=battery)
    start(producer, consumer)
    clock.advance(HOUR_MS)
    consumer.update()
    assert battery.soc_wh == 20000 and battery.room_mj() == 0
    assert producer.measured_wh == consumer.measured_wh == 10  # the meter counts only what flowed
    assert producer.time_to_reach_ms(11) is None
    assert battery.absorb_mj(MJ_PER_WH) == 0


def test_an_empty_battery_supplies_no_more():
    clock = ManualClock()
    battery = Battery(80000, 5, 50000, 50000)
    producer, consumer = cable(clock, producer_battery=battery)
    start(producer, consumer)
    clock.advance(HOUR_MS)
    producer.update()
    assert battery.stored_mj == 0 and producer.measured_wh == consumer.measured_wh == 5
    assert battery.supply_mj(MJ_PER_WH) == 0


def test_a_battery_takes_and_gives_what_it_can():
    battery = Battery(10, 4, 1000, 1000)
    assert battery.absorb_mj(10 * MJ_PER_WH) == 6 * MJ_PER_WH and battery.soc_wh == 10
    assert battery.supply_mj(3 * MJ_PER_WH + 1) == 3 * MJ_PER_WH + 1 and battery.soc_wh == 6


@pytest.mark.parametrize("args", [(10, 11, 1, 1), (10, -1, 1, 1), (10, 5, -1, 1), (10.0, 5, 1, 1)])
def test_a_battery_refuses_impossible_settings(args):
    with pytest.raises(ValueError, match="battery"):
        Battery(*args)


def test_bad_board_and_meter_settings_are_refused():
    clock = ManualClock()
    with pytest.raises(ValueError, match="power"):
        SimBoard("x", clock, -1)
    with pytest.raises(ValueError, match="ppm"):
        SimBoard("x", clock, 1, measure_error_ppm=-1000000)
    with pytest.raises(ValueError, match="ppm"):
        Meter(METER_KEY, error_ppm=0.5)
    producer, consumer = cable(clock)
    with pytest.raises(ValueError, match="connected as the consumer"):
        consumer.reset_session(True)


def test_meter_readings_are_signed_chained_and_verifiable():
    clock = ManualClock()
    producer = charger(clock, 3600)
    producer.start_delivery()
    readings = []
    for k in range(1, 4):
        clock.advance(HOUR_MS)
        producer.update()
        readings.append(producer.meter.read(k, 1790000000 + k))
    prev = bytes(32)
    for k, r in enumerate(readings, 1):
        assert (r.session_id, r.index, r.installment, r.cumulative_wh, r.unit_price, r.prev_digest) == \
            (SESSION, k, k, 3600 * k, 300, prev)
        assert signing.verify(producer.meter.pubkey, r, r.meter_sig)
        again = MeterReading.decode(r.encode())  # what the vehicle gets off the wire
        assert signing.verify(producer.meter.pubkey, again, again.meter_sig)
        prev = r.digest()
    forged = MeterReading.decode(readings[1].encode())
    forged.cumulative_wh += 1
    assert not signing.verify(producer.meter.pubkey, forged, forged.meter_sig)
    other = Meter(sha256(b"another meter"))
    assert not signing.verify(other.pubkey, readings[0], readings[0].meter_sig)


def test_a_new_session_starts_a_new_chain_and_register():
    clock = ManualClock()
    producer, consumer = cable(clock, 3600, 3600)
    start(producer, consumer)
    clock.advance(HOUR_MS)
    producer.reset_session(True)  # the hour flowed in the old session: integrated up to the clock first
    consumer.reset_session(False)
    assert producer.measured_wh == consumer.measured_wh == 0
    producer.meter.start(sha256(b"next")[:16], 250)
    clock.advance(HOUR_MS)
    consumer.update()
    r = producer.meter.read(1, 2)
    assert (r.index, r.prev_digest, r.cumulative_wh, r.unit_price) == (1, bytes(32), 3600, 250)
    assert consumer.measured_wh == 3600


def test_a_meter_reads_only_within_a_session():
    with pytest.raises(ValueError, match="start"):
        Meter(METER_KEY).read(1, 1)


def test_an_over_counting_meter_shows_its_error_and_the_vehicle_measures_the_truth():
    clock = ManualClock()
    producer, consumer = cable(clock, error_ppm=20000)  # 2 %
    start(producer, consumer)
    t = producer.time_to_reach_ms(204)
    clock.advance(t)
    producer.stop_delivery()
    assert producer.measured_wh == 204 and consumer.measured_wh == 200
    assert producer.meter.read(1, 1).cumulative_wh == 204


def test_a_measuring_error_on_the_consumer_side():
    clock = ManualClock()
    producer, consumer = cable(clock, measure_error_ppm=-10000)  # reads 1 % low
    start(producer, consumer)
    clock.advance(HOUR_MS)
    producer.update()
    assert producer.measured_wh == 11000 and consumer.measured_wh == 10890


def test_time_to_reach_is_exact_and_none_when_nothing_flows():
    clock = ManualClock()
    producer, consumer = cable(clock)
    assert producer.time_to_reach_ms(0) == 0
    producer.start_delivery()
    assert producer.time_to_reach_ms(1) is None  # the vehicle's contactor is still open
    consumer.start_delivery()
    t = producer.time_to_reach_ms(1)
    assert t == 328  # 3 600 000 mJ at 11 000 W is 327.27 ms
    clock.advance(t - 1)
    producer.update()
    assert producer.measured_wh == 0
    clock.advance(1)
    assert producer.time_to_reach_ms(1) == 0 and producer.measured_wh == 1


def deliver(clock, producer, consumer, energy_wh, n):
    """Drive a session as a producer does: close, sleep until the meter reaches e/N, open,
    read; the consumer checks each reading against its own measurement. The board answers
    in the caller's time: ``scale`` of its ms pass in each."""
    readings = []
    for k in range(1, n + 1):
        due = k * energy_wh // n
        start(producer, consumer)
        clock.sleep_ms(producer.time_to_reach_ms(due) * clock.scale)
        producer.stop_delivery()
        consumer.stop_delivery()
        readings.append((producer.meter.read(k, 1790000000 + k), consumer.measured_wh, due))
    return readings


def test_20_kwh_in_100_installments_reaches_exactly_the_due_energy_each_step():
    runs = []
    for _ in range(2):
        clock = ManualClock()
        producer, consumer = cable(clock, consumer_battery=Battery(80000, 20000, 50000, 50000))
        readings = deliver(clock, producer, consumer, 20000, 100)
        assert [(r.cumulative_wh, measured) for r, measured, _ in readings] == [(due, due) for _, _, due in readings]
        assert consumer.battery.soc_wh == 40000
        assert producer.contactor.switches == consumer.contactor.switches == 200
        assert clock.now_ms() < 20000 * MJ_PER_WH // 11000 + 100  # under 1 ms rounding per step
        runs.append([r.digest() for r, _, _ in readings])
    assert runs[0] == runs[1]  # deterministic to the byte


DEVICE = """
import json
from plugpay.boards.sim.board import SimBoard
from plugpay.boards.sim.clock import ManualClock
from plugpay.boards.sim.power import Battery, Meter
clock = ManualClock()
meter = Meter(bytes.fromhex(KEY), 20000)
meter.start(bytes.fromhex(SESSION), 300)
producer = SimBoard("charger", clock, 11000, meter=meter)
consumer = SimBoard("vehicle", clock, 11000, battery=Battery(80000, 20000, 50000, 50000))
consumer.connect(producer)
out = []
for k in range(1, 101):
    producer.start_delivery()
    consumer.start_delivery()
    clock.sleep_ms(producer.time_to_reach_ms(k * 200))
    producer.stop_delivery()
    consumer.stop_delivery()
    out.append([meter.read(k, 1790000000 + k).digest().hex(), consumer.measured_wh])
print("@@ " + json.dumps({"readings": out, "now": clock.now_ms(), "soc": consumer.battery.soc_wh}))
"""


def test_micropython_runs_the_same_session_to_the_byte():
    files = {"/lib/plugpay/boards/__init__.py": (BOARDS / "__init__.py").read_bytes()}
    for path in sorted((BOARDS / "sim").glob("*.py")):
        files["/lib/plugpay/boards/sim/" + path.name] = path.read_bytes()
    script = "KEY = %r\nSESSION = %r\n" % (METER_KEY.hex(), SESSION.hex()) + DEVICE
    rec = micropython.run(script, files, timeout=600).check().records[-1]
    clock = ManualClock()
    producer, consumer = cable(clock, error_ppm=20000, consumer_battery=Battery(80000, 20000, 50000, 50000))
    readings = deliver(clock, producer, consumer, 20000, 100)
    assert rec["readings"] == [[r.digest().hex(), measured] for r, measured, _ in readings]
    assert (rec["now"], rec["soc"]) == (clock.now_ms(), consumer.battery.soc_wh)


def test_a_scaled_clock_session_reaches_at_least_the_due_energy_each_step():
    # 20 kWh at 11 kW is 6545 s; at x100000 it is about 65 ms of real sleep.
    clock = ScaledClock(100000)
    producer, consumer = cable(clock)
    for reading, measured, due in deliver(clock, producer, consumer, 20000, 100):
        assert reading.cumulative_wh >= due and measured == reading.cumulative_wh


def test_the_scaled_clock_runs_scale_times_real_time():
    scale = 1000
    clock = ScaledClock(scale)
    r0 = time.monotonic_ns()
    c0 = clock.now_ms()
    r1 = time.monotonic_ns()
    clock.sleep_ms(20000)  # 20 real ms
    r2 = time.monotonic_ns()
    c1 = clock.now_ms()
    r3 = time.monotonic_ns()
    slack = 2  # microsecond ticks and flooring to whole simulated ms, at each read
    assert (r2 - r1) * scale // 1000000 - slack <= c1 - c0 <= (r3 - r0) * scale // 1000000 + slack
    assert c1 - c0 >= 20000


def test_a_manual_clock_moves_only_when_told():
    clock = ManualClock(5)
    clock.advance(10)
    clock.sleep_ms(7)
    assert clock.now_ms() == 22
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(0)


def test_v2g_the_consuming_charger_meters_and_either_end_limits_the_flow():
    clock = ManualClock()
    meter = Meter(METER_KEY)
    charger_board = SimBoard("charger", clock, 11000, meter=meter)
    vehicle = SimBoard("vehicle", clock, 11000, battery=Battery(80000, 60000, 50000, 50000), measure_error_ppm=-10000)
    charger_board.connect(vehicle)  # the charger takes what the vehicle gives
    charger_board.reset_session(False)
    vehicle.reset_session(True)
    meter.start(SESSION, 300)
    vehicle.start_delivery(1000)  # the vehicle gives at most 1000 Wh by its own (1 % low) measurement
    charger_board.start_delivery(500)  # the charger's meter stops the flow at 500 Wh
    clock.advance(HOUR_MS)
    charger_board.update()
    assert charger_board.measured_wh == meter.read(1, 1).cumulative_wh == 500
    assert vehicle.measured_wh == 495 and vehicle.battery.soc_wh == 59500
    assert charger_board.time_to_reach_ms(501) is None  # its own limit holds the flow
    charger_board.start_delivery(2000)
    clock.advance(HOUR_MS)
    vehicle.update()
    assert vehicle.measured_wh == 1000 and charger_board.measured_wh == 1010  # the vehicle's limit holds now


def test_a_board_alone_takes_or_gives_to_the_grid_as_its_session_says():
    clock = ManualClock()
    board = charger(clock, 3600)
    board.reset_session(False)  # a charger that buys (V2G) consumes from its vehicle's side
    board.start_delivery()
    clock.advance(HOUR_MS)
    board.update()
    assert board.measured_wh == board.meter.session_wh == 3600 and board.cable.consumer is board
    board.stop_delivery()
    board.reset_session(True)
    assert board.cable.producer is board and board.measured_wh == 0
