"""``python -m plugpay.boards.rpi.main --config FILE``: a Raspberry Pi serving charging
sessions, one after another, with its relay and meter (what ``plugpay-board.service`` runs).

The steps are the portable role's (``firmware.role``: upkeep, the market, the session, what
a dead session left open); this is its adapter for the Pi: the board's config gives the
plan, the broker and the wallet, the Pi's relay and meter are the board. Exit 2 on a bad
config, a machine without GPIO or a wallet that cannot be opened (systemd does not restart
it then), 1 when a session could not run (it restarts after a pause).
"""
import argparse
import sys
import time

from plugpay.boards.common.profile import ConfigError, load
from plugpay.firmware.gateway_client import GatewayError
from plugpay.firmware.mqtt import MqttError
from plugpay.firmware.role import Device, Plan, PlanError, RoleFailure, reporter

from .board import GpioUnavailable, rpi_board


def endpoint(profile):
    """The broker of the profile (``mqtts://`` verified with its ``broker_ca``)."""
    from plugpay.host.broker import Endpoint

    return Endpoint(profile["broker"], profile["broker_ca"] or None)


def _wallet(profile):
    from plugpay.firmware.devicekey import KeyFile
    from plugpay.firmware.storage import Storage
    from plugpay.firmware.wallet import Wallet

    return Wallet.open(Storage(profile["wallet"]), KeyFile(profile["device_key"]).load())


def main(argv=None):
    p = argparse.ArgumentParser(prog="plugpay-board", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the board's config (boards/rpi/config.json is an example)")
    p.add_argument("--sessions", type=int, default=0, help="stop after this many sessions (default 0: never)")
    args = p.parse_args(argv)
    say = lambda text: print(text, flush=True)  # noqa: E731  (journald keeps it)
    try:
        profile = load(args.config, "rpi")
        plan = Plan.from_profile(profile)
        broker = endpoint(profile)
        board = rpi_board(profile)
        wallet = _wallet(profile)
    except (ConfigError, PlanError, GpioUnavailable, ValueError, OSError) as e:
        print("plugpay-board: %s" % e, file=sys.stderr)
        return 2

    def connect(username):
        mqtt = broker.device(username=username)
        mqtt.connect()
        return mqtt

    device = Device(wallet, plan, connect, lambda terms, role: board, lambda: int(time.time()), say,
                    reporter(say, time.time))
    try:
        for record in device.serve(args.sessions or None):
            say("session %s: link %s, %s, %d Wh, payout %s" % (
                record["session_id"][:8], record["stop_code"] or "not stopped",
                "settled" if record["finished"] else "NOT settled", record["measured_wh"], record["payout"]))
    except (RoleFailure, MqttError, GatewayError, ValueError, OSError) as e:  # ValueError: a wallet refusal
        print("plugpay-board: %s" % e, file=sys.stderr)
        return 1  # systemd restarts the service after a run-time failure (1), not bad input (2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
