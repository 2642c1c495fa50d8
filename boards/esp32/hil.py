"""The board side of ``plugpay hil`` on an ESP32: the console protocol (``firmware/console``)
on the USB serial console, the session of each ``START`` over MQTT
(``boards/common/stdio_console``). Runs only on a board: no ESP32 is attached where the
project is tested; the same ``console.serve`` loop runs in tests/test_hil.py behind a
pseudo-terminal, and the same stdio console in a simulated board's process
(``boards/sim/main.py``).
"""
from plugpay.boards.common import stdio_console
from plugpay.firmware.devicekey import KeyFile
from plugpay.firmware.storage import Storage
from plugpay.firmware.wallet import Wallet


def run(config, board):
    wallet = Wallet.open(Storage(config["wallet"]), KeyFile(config["device_key"]).load())
    stdio_console.serve(config, wallet, board, "esp32")
