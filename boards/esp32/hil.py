"""The board side of ``plugpay hil`` on an ESP32: the console protocol (``firmware/console``)
on the USB serial console, the session of each ``START`` over MQTT.

Frames go to ``sys.stdout`` and commands come from ``sys.stdin``, polled so that the loop
never blocks on a quiet line. Runs only on a board: no ESP32 is attached where the project
is tested; the same ``console.serve`` loop runs in tests/test_hil.py behind a
pseudo-terminal.
"""
import select
import sys
import time

from plugpay.firmware import console as C
from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.mqtt import Mqtt
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet

SESSION_TIMEOUT_MS = 7200000


def run(config, board):
    wallet = Wallet.open(Storage(config["wallet"]), KeyFile(config["device_key"]).load())
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    host, port = config["broker_address"]
    start = time.ticks_ms()

    def read(ms):
        return stdin.read(1) if poller.poll(ms) else b""

    def connect():
        mqtt = Mqtt(host, port)
        mqtt.connect()
        return mqtt

    def now():
        return time.ticks_diff(time.ticks_ms(), start)

    console = C.BoardConsole(stdout.write, config["name"], "esp32", config["role"])
    C.serve(console, wallet, board, connect, read, now, SESSION_TIMEOUT_MS)
