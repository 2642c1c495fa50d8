"""A broker restart in the middle of a session: the link pauses, resumes with the latest
co-signed balance, and the session ends with every installment paid and nothing lost.

Real parts: Mosquitto (stopped and started again on the same port), a 4-replica ledger,
the gateway and two devices, each with its own connection."""
import argparse
import threading
import time

from plugpay.firmware.session import CHANNEL, Terms
from plugpay.host.broker import MosquittoProcess
from plugpay.host.stack import HostStack
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.tools.demo import Device


def test_a_broker_restart_mid_session_is_resumed_and_loses_nothing(tmp_path):
    n = 20
    params = M.ChargeParameters(2000, 1790000000, 1790007200, 11000, 300, n, 5)
    args = argparse.Namespace(scale=2000.0, power_w=11000)  # 100 Wh per installment: ~16 ms each
    with MosquittoProcess(str(tmp_path)) as mosquitto, \
            HostStack(str(tmp_path / "host"), broker_url=mosquitto.url) as host:
        vehicle = Device("vehicle", True, False, host, str(tmp_path), params, args)
        charger = Device("charger", False, True, host, str(tmp_path), params, args)
        vehicle.board.connect(charger.board)
        charger.board.clock = vehicle.board.clock
        vehicle.board.cable.lock = vehicle.board.clock.lock = threading.Lock()
        vehicle.fund(1000)
        session_id = link.new_session_id()
        for device in (vehicle, charger):
            device.start(Terms(session_id, params, CHANNEL, device is charger, device is vehicle))
        deadline = time.monotonic() + 20
        while vehicle.session.machine.installments_paid < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        paid_before = vehicle.session.machine.installments_paid
        assert 5 <= paid_before < n
        mosquitto.__exit__()  # the broker goes away mid-session ...
        time.sleep(0.5)
        mosquitto.__enter__()  # ... and comes back on the same port
        done = [vehicle.wait(40), charger.wait(40)]  # both, before any assertion: no thread left behind
        c, p = vehicle.session, charger.session
        if done != [True, True]:
            for side in (c, p):
                print("producer" if side.producer else "consumer", side.machine.state, side.log)
        assert done == [True, True]
        assert c.stop_code == M.OK and p.stop_code == M.OK
        assert p.payout == c.terms.budget() and c.payout == 0
        assert c.max_exposure <= c.terms.budget() // n and p.max_exposure <= 0
        assert vehicle.session_mqtt.connects >= 2 and charger.session_mqtt.connects >= 2  # both saw the drop
        assert [text for _, text in c.log if text == "resumed"] == ["resumed"]  # one pause, one resume
        vehicle.close()
        charger.close()
