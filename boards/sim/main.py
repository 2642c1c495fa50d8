"""A simulated board as a process of its own: a whole vehicle or charger on the MicroPython
unix port (``micropython -X heapsize=N main.py CONFIG [SESSIONS]``, with ``MICROPYPATH``
holding ``lib`` where ``plugpay`` lives, as on a board) or on CPython (``python -m
plugpay.boards.sim.main CONFIG [SESSIONS]``).

``CONFIG`` is a board config (``boards/common/profile.py``) with ``"board": "sim"``: the
broker (``mqtts://`` with ``broker_ca``), the wallet and device key (``plugpay
provision``), the session plan, ``scale``. ``"console": "market"`` (the default) runs the
portable role (``firmware.role``): upkeep, the market, ``SESSIONS`` sessions (0: until
stopped), printing progress and, per session, one line ``@@ {record}`` (JSON). ``"console":
"hil"`` makes stdin and stdout the board's console (``firmware/console.py``), for ``plugpay
hil`` and ``plugpay demo --micropython``: each ``START`` from the host is a session on a
board sized by its terms.

Exit codes: 0 every session settled with the link's OK; 1 one did not, or the broker or
the market failed; 2 a bad config or a wallet that cannot be opened (a line names it). A
``MemoryError`` ends the run with 1 and a line saying so: whatever the wallet signed was
stored before it left, so ``plugpay wallet settle`` finishes it.
"""
import json
import sys
import time

from plugpay.boards.common import link
from plugpay.boards.common import profile as P

MARKER = "@@ "


def _say(text):
    print(text)


def _wallet(config):
    from plugpay.firmware.devicekey import KeyFile
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet

    wallet = Wallet.open(Storage(config["wallet"]), KeyFile(config["device_key"]).load())
    if wallet.broken:
        raise ValueError("the wallet cannot be used: %s" % "; ".join("%s: %s" % b for b in wallet.broken))
    return wallet


def _boards(config):
    from plugpay.boards.sim.sized import sized_board

    return lambda terms, role: sized_board(terms, role, config["scale"])


def market(config, wallet, connect, sessions):
    """The role's loop; 0 when every session settled OK."""
    from plugpay.firmware.role import Device, Plan, reporter

    device = Device(wallet, Plan.from_profile(config), connect, _boards(config), lambda: int(time.time()), _say,
                    reporter(_say, time.time))
    ok = True
    for record in device.serve(sessions or None):
        print(MARKER + json.dumps(record))
        ok = ok and record["finished"] and record["stop_code"] == "OK"
    return 0 if ok else 1


def main(argv):
    if len(argv) not in (1, 2) or (len(argv) == 2 and not argv[1].isdigit()):
        print("usage: main.py CONFIG [SESSIONS]  (a board config with \"board\": \"sim\"; SESSIONS 0: until stopped)")
        return 2
    try:
        config = P.load(argv[0], "sim")
        wallet = _wallet(config)
        connect = link.connector(config)
    except (P.ConfigError, ValueError, OSError) as e:  # KeystoreError and WalletError are ValueErrors
        print("plugpay-sim: %s" % e)
        return 2
    from plugpay.firmware.gateway_client import GatewayError
    from plugpay.firmware.mqtt import MqttError
    from plugpay.firmware.role import RoleFailure

    try:
        if config["console"] == "hil":
            from plugpay.boards.common import stdio_console

            stdio_console.serve(config, wallet, _boards(config), "sim")
            return 0
        return market(config, wallet, connect, int(argv[1]) if len(argv) == 2 else 1)
    except MemoryError:
        print("plugpay-sim: out of memory: the wallet stored every state before it left; "
              "plugpay wallet settle finishes what is open")
        return 1
    except (RoleFailure, MqttError, GatewayError, ValueError) as e:
        print("plugpay-sim: %s" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
