"""ESP32 main: load the profile, say which ECDSA backend runs, bring up the board and serve:
the portable role (``firmware.role``: upkeep, the market, sessions, what a dead session left
open) from /config.json, or sessions driven by ``plugpay hil`` over the console when the
config says ``"console": "hil"``. A failure (the broker gone, no deal) is printed and tried
again after a pause that grows to a minute; the wallet on flash loses nothing meanwhile.

The backend line matters: a build with a native ``secp256k1`` module signs in constant
time; the pure-Python one does not and is for prototypes (DESIGN.md). Runs only on a board:
no ESP32 is attached where the project is tested.
"""
import time

from plugpay.boards.common import profile
from plugpay.boards.esp32 import startup
from plugpay.protocol import signing

CONFIG = "/config.json"
RETRY_MS = (1000, 5000, 15000, 60000)  # pauses after consecutive failures


def _serve(config, board):
    from plugpay.boards.common.link import connector
    from plugpay.firmware.devicekey import KeyFile
    from plugpay.firmware.role import Device, Plan, reporter
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet

    wallet = Wallet.open(Storage(config["wallet"]), KeyFile(config["device_key"]).load())
    device = Device(wallet, Plan.from_profile(config), connector(config), lambda terms, role: board, startup.unix_s,
                    print, reporter(print, startup.unix_s))
    failures = 0
    while True:
        try:
            for record in device.serve():
                failures = 0
                print("plugpay: session %s: link %s, %s, payout %s" % (
                    record["session_id"][:8], record["stop_code"], "settled" if record["finished"] else "NOT settled",
                    record["payout"]))
        except Exception as e:  # the broker, the gateway, the market: report, wait, again
            print("plugpay: %s: %s" % (type(e).__name__, e))
            time.sleep_ms(RETRY_MS[min(failures, len(RETRY_MS) - 1)])
            failures += 1


def main():
    if not startup.filesystem_is_littlefs():
        print("plugpay: not running on a FAT filesystem (see boot)")
        return
    config = profile.load(CONFIG, "esp32")
    if signing.BACKEND == "native":
        print("plugpay: crypto backend: native secp256k1 module (constant time)")
    else:
        print("plugpay: crypto backend: %s (pure Python, NOT constant time: build MicroPython with the "
              "native secp256k1 module for production)" % signing.BACKEND)
    from plugpay.boards.esp32 import board as esp32_board

    board = esp32_board.esp32_board(config)
    print("plugpay: %s as %s, broker %s" % (config["name"], config["role"], config["broker"]))
    if config["console"] == "hil":
        from plugpay.boards.esp32 import hil

        hil.run(config, board)
    else:
        _serve(config, board)


main()
