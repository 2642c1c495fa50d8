"""``plugpay ledger watch``: follow a running ledger's events, and ``ledger up``'s event lines.

Both print the ledger's event log (``host.events``) as blocks commit: one readable line per
request (height, time, kind, the request's ledger id, what happened, why it was refused),
or with ``--json`` one JSON object per line. The id on every line is the one ``plugpay
ledger tx`` takes.
"""
import asyncio
import json
import signal
import sys

from plugpay.host import events as E
from plugpay.tools import dashboard, ledger_inspect


class EventPrinter:
    """A feed listener printing each block's events, from height ``first`` on (None: only
    blocks committed after the feed started)."""

    def __init__(self, as_json=False, first=None, out=None):
        self.as_json = as_json
        self.first = first
        self.out = out or sys.stdout

    def on_block(self, c):
        if (c.live if self.first is None else c.height >= self.first) and c.events:
            lines = [json.dumps(e) if self.as_json else E.event_line(e) for e in c.events]
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()

    def on_problem(self, text):
        if text is not None:
            print("plugpay: %s (retrying)" % text, file=sys.stderr, flush=True)


def add_parser(sub, cluster_json):
    """Register ``ledger watch`` on the ``ledger`` subcommands."""
    w = sub.add_parser("watch", help="follow the ledger's events as blocks commit (market, channels, HTLCs, "
                       "mints, redeems)",
                       description="Print every request of every block as it commits: height, time (UTC), kind, "
                       "its ledger id (the one `plugpay ledger tx` takes), what it did, and why a refused one "
                       "was refused. Blocks are accepted on f+1 matching replica answers. Runs until Ctrl-C.")
    w.add_argument("--config", default=cluster_json, help="cluster.json (default: %(default)s)")
    w.add_argument("--from", dest="first", type=int, metavar="HEIGHT",
                   help="start at this block (1: the whole chain; default: the next block to commit)")
    w.add_argument("--json", action="store_true", help="one JSON object per event and line")
    w.add_argument("--dashboard", type=dashboard.port_arg, metavar="PORT",
                   help="also serve the live dashboard on 127.0.0.1:PORT (0: a free port, printed on stderr)")
    w.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for f+1 answers (default 3)")
    w.set_defaults(func=watch_command)


def watch_command(args):
    if args.first is not None and args.first < 1:
        raise ledger_inspect.InspectError("--from: block heights start at 1, got %d" % args.first)
    config, secrets = ledger_inspect.load_config(args.config)
    printer = EventPrinter(args.json, args.first)
    # With a dashboard the feed reads the whole chain, so the page knows what is open.
    start = 1 if args.dashboard is not None else args.first
    live = dashboard.Live("ledger watch", args.dashboard, config, secrets, [printer], start)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        url = await live.start()
        if url:
            print("dashboard: %s" % url, file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await live.stop()

    asyncio.run(main())
    return 0


async def start_for_up(args, config, secrets):
    """``ledger up``'s event lines (blocks committed from now on) and its dashboard; the
    started ``dashboard.Live``."""
    port = None if args.no_dashboard else args.dashboard
    live = dashboard.Live("ledger up", port, config, secrets, [EventPrinter()])
    url = await live.start()
    print("dashboard: %s" % (url or "off"), flush=True)
    return live
