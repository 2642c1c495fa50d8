"""ESP32 main: load the profile, say which ECDSA backend runs, bring up the board and run the
role (vehicle or charger) from /config.json: in the market, or driven by ``plugpay hil``
over the console when the config says ``"console": "hil"``.

The backend line matters: a build with a native ``secp256k1`` module signs in constant
time; the pure-Python one does not and is for prototypes (DESIGN.md). Runs only on a board:
no ESP32 is attached where the project is tested.
"""
from plugpay.boards.common import profile
from plugpay.boards.esp32 import startup
from plugpay.protocol import signing

CONFIG = "/config.json"


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
    from plugpay.boards.esp32 import role

    board = esp32_board.esp32_board(config)
    print("plugpay: %s as %s, broker %s" % (config["name"], config["role"], config["broker"]))
    if config["console"] == "hil":
        from plugpay.boards.esp32 import hil

        hil.run(config, board)
    else:
        role.run(config, board)


main()
