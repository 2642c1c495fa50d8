"""``plugpay config check FILE``: a board's config file checked before it goes anywhere.

Every problem is reported at once, one line each naming the field (``relay.pin: GPIO 26
is relay.pin's pin already``), not just the first: types and ranges, values from a short
list, the examples' ``CHANGE-ME`` placeholders, relay, LED and meter UART pins that
clash, and what the device's plan refuses (an HTLC series longer than 64, a charger in
v2v). ``plugpay flash`` and ``plugpay provision --config`` run the same check first.
Exit codes: 0 the file is good, 2 it is not (or cannot be read).
"""
import sys

from plugpay.boards.common.profile import BOARDS
from plugpay.tools.errors import USAGE


def add_parser(subparsers):
    p = subparsers.add_parser("config", help="check a board's config file (every problem at once)")
    sub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    sub.required = True
    c = sub.add_parser("check", help="report every problem of a board's config file, or that it is good",
                       description=" ".join(__doc__.split("\n\n")[1].split()))
    c.add_argument("file", metavar="FILE", help="the board's config (a copy of boards/BOARD/config.json)")
    c.add_argument("--board", choices=BOARDS, help="the board it must be for (default: the one the file names)")
    c.set_defaults(func=run)
    return p


def run(args):
    from plugpay.tools import config_check

    profile, problems = config_check.check_file(args.file, args.board)
    for problem in problems:
        print("%s: error: %s: %s" % (args.command_prog, args.file, problem), file=sys.stderr)
    if problems:
        return USAGE
    print("%s: ok: %s" % (args.file, config_check.summary(profile)))
    return 0
