"""A MicroPython device process that uses the host through the gateway as a board does
(tests/test_device_mqtt_unix.py): its wallet and device key are files, its connection
``firmware.mqtt`` over the broker given.

    micropython gateway_device.py WALLET_DIR DEVICE_KEY_FILE URL CA|- PAYEE_ACCOUNT_HEX AMOUNT

It registers one-time keys with the RA (sealed), asks the faucet for 300 as fresh coins,
pays ``AMOUNT`` to the payee's account in a transaction it submits, and prints one ``@@``
JSON record per step (``refill``, ``funded``, ``paid``).
"""
import json
import sys

from plugpay.firmware import issuing, mqtt_tls
from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.gateway_client import GatewayClient
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.refill import refill
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet
from plugpay.protocol import structures as S


def emit(event, **fields):
    fields["event"] = event
    print("@@ " + json.dumps(fields))


def main(wallet_dir, key_file, url, ca, payee_hex, amount):
    wallet = Wallet.open(Storage(wallet_dir), KeyFile(key_file).load())
    scheme, rest = url.split("://")
    host, port = rest.rsplit(":", 1)
    mqtt = Mqtt(host, int(port), tls=mqtt_tls.context(ca) if scheme == "mqtts" else None)
    mqtt.connect()
    client = GatewayClient(mqtt)
    report = refill(wallet, client, count=8, threshold=1)
    emit("refill", status=report.status, added=report.added, available=report.available, detail=report.detail)
    result = issuing.fund(wallet, client, 300)
    emit("funded", ok=result.ok, balance=wallet.status()["balance"])
    raw = wallet.pay([(S.Account.decode(bytes.fromhex(payee_hex)), amount)])
    result = client.submit(raw)
    state = wallet.handle_result(result.encode())
    emit("paid", ok=result.ok, txhash=result.data.hex() if result.ok else None, state=state,
         balance=wallet.status()["balance"], client_id=mqtt.client_id)
    mqtt.close()


main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
