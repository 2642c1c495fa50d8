"""``python -m plugpay.boards.rpi.main --config FILE``: a Raspberry Pi serving charging
sessions, one after another, with its relay and meter (what ``plugpay-board.service`` runs).

Each session is ``plugpay session`` (tools/session_cli.py: market rendezvous, the session
over MQTT) with its options taken from the board's config and the board's own hardware in
place of the simulated one. Exit 2 on a bad config or a machine without GPIO (systemd does
not restart it then), 1 when a session could not run (it restarts after a pause).
"""
import argparse
import sys

from plugpay.boards.common.profile import ConfigError, load
from plugpay.tools import session_cli

from .board import GpioUnavailable, rpi_board


def session_argv(profile):
    """The ``plugpay session`` options that the profile sets."""
    s = profile["session"]
    argv = ["session", "--role", profile["role"], "--broker", profile["broker"], "--wallet", profile["wallet"],
            "--device-key", profile["device_key"], "--scenario", s["scenario"], "--mode", s["mode"],
            "-n", str(s["installments"]), "--energy-wh", str(s["energy_wh"]), "--window-min", str(s["window_min"]),
            "--price", str(s["price"]), "--power-w", str(profile["power_w"]), "--region", s["region"],
            "--position", s["position"]]
    if profile["broker_ca"]:
        argv += ["--ca", profile["broker_ca"]]
    return argv + (["--produce"] if s["produce"] else [])


def main(argv=None):
    p = argparse.ArgumentParser(prog="plugpay-board", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the board's config (boards/rpi/config.json is an example)")
    p.add_argument("--sessions", type=int, default=0, help="stop after this many sessions (default 0: never)")
    args = p.parse_args(argv)
    try:
        profile = load(args.config, "rpi")
        board = rpi_board(profile)
    except (ConfigError, GpioUnavailable) as e:
        print("plugpay-board: %s" % e, file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog="plugpay").add_subparsers()
    session_cli.add_parser(sub)
    session_args = sub.choices["session"].parse_args(session_argv(profile)[1:])
    served = 0
    while not args.sessions or served < args.sessions:
        code = session_cli.run(session_args, board=board)  # prints its own one-line errors
        if code:
            return code  # systemd restarts the service after a run-time failure (1), not bad input (2)
        served += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
