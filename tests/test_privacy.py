"""Twenty sessions of one vehicle: nothing on the ledger or the broker repeats, the RA links them all.

Real parts: a 4-replica ledger, the embedded broker, the gateway, two devices over MQTT.
What the broker sees of a session is the client id of each connection and the topics
(the link's, named by the session id, and the gateway's, named by a client id); what the
ledger sees is the accounts in the requests. None of these may appear in two sessions,
while the RA, and only it, names the vehicle behind every one of its accounts.
"""
import argparse
import threading

from plugpay.firmware.session import CHANNEL, Terms
from plugpay.host import ra
from plugpay.host.stack import HostStack
from plugpay.protocol import ledger_ops as L
from plugpay.protocol import link
from plugpay.protocol import link_messages as M
from plugpay.tools.demo import Device

SESSIONS = 20


def test_twenty_sessions_share_no_account_key_client_id_or_topic(tmp_path):
    args = argparse.Namespace(scale=10 ** 6, power_w=11000)
    params = M.ChargeParameters(400, 1790000000, 1790007200, 11000, 300, 4, 5)
    with HostStack(str(tmp_path / "host")) as host:
        vehicle = Device("vehicle", True, False, host, str(tmp_path), params, args, keys=4 * SESSIONS + 8)
        charger = Device("charger", False, True, host, str(tmp_path), params, args, keys=SESSIONS + 8)
        vehicle.board.connect(charger.board)
        charger.board.clock = vehicle.board.clock
        vehicle.board.cable.lock = vehicle.board.clock.lock = threading.Lock()
        vehicle.fund(SESSIONS * 150)
        seen = {"client id": [], "topic": [], "account": [], "session key": []}
        everything, consumers, producers = [], [], []
        for _ in range(SESSIONS):
            session_id = link.new_session_id()
            for device in (vehicle, charger):
                device.start(Terms(session_id, params, CHANNEL, device is charger, device is vehicle))
            assert vehicle.wait(30) and charger.wait(30)
            requests = list(dict.fromkeys(vehicle.session.onchain + charger.session.onchain))
            assert [L.decode_request(r).NAME for r in requests] == ["channel_open", "channel_close"]
            everything += requests
            open_op = L.decode_request(requests[0])
            consumers.append(open_op.consumer.address())
            producers.append(open_op.producer.address())
            for device in (vehicle, charger):
                runner = device.runner
                assert runner.requests.cid == device.session_mqtt.client_id  # what a deployment broker's ACL needs
                seen["client id"].append(runner.requests.cid)
                seen["topic"] += runner.requests.subscriptions()
                seen["session key"].append(device.session.account.pubkey)
            seen["topic"] += [vehicle.runner.incoming, vehicle.runner.outgoing]  # the link's: both sides use them
            seen["account"] += sorted(set(a.address() for a in ra.accounts_in(requests)))
        for what, values in seen.items():
            assert len(values) == len(set(values)), "a %s repeats across sessions" % what
        # Only the RA names who is behind the accounts: the vehicle in all twenty sessions.
        names = host.authority.audit(everything)
        assert {names[a].name for a in consumers} == {"Demo vehicle"}
        assert {names[a].name for a in producers} == {"Demo charger"}
        assert None not in names.values()
        vehicle.close()
        charger.close()
