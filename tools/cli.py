"""The ``plugpay`` command line."""
import argparse
import os
import sys

from plugpay.tools import arg_types, errors


class Parser(argparse.ArgumentParser):
    """``argparse`` whose refusals are one line like every other error of ``plugpay``
    (``plugpay demo: error: argument -n/--installments: ...``), exit code 2. Each
    (sub)command's parser sets ``command_prog`` to its name (``plugpay ledger up``), the
    prefix of its error lines; subcommand parsers are of this class too, and the innermost
    one parsed sets it last."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_defaults(command_prog=self.prog)
        self.register("action", "parsers", _Commands)

    def error(self, message):
        self.exit(errors.USAGE, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


class _Commands(argparse._SubParsersAction):
    """Subcommands whose ``--help`` opens with their one-line help when they have no
    description of their own, so every ``plugpay ... --help`` says what the command does."""

    def add_parser(self, name, **kwargs):
        summary = kwargs.get("help")
        if summary and not kwargs.get("description"):
            kwargs["description"] = summary[:1].upper() + summary[1:] + ("" if summary.endswith(".") else ".")
        return super().add_parser(name, **kwargs)


def _demo(args):
    from plugpay.tools import demo

    return demo.run(args)


def _selfcheck(args):
    from plugpay.tools import selfcheck

    selfcheck.run()
    print("all checks passed")
    return 0


def _bench(args):
    if args.what == "ledger":
        from plugpay.tools import bench_ledger

        return bench_ledger.main(args)
    if args.what == "wallet":
        from plugpay.tools import bench_wallet

        return bench_wallet.main(args)
    if args.what == "session":
        from plugpay.tools import bench_session

        return bench_session.main(args)
    if args.what == "privacy":
        from plugpay.tools import bench_privacy

        return bench_privacy.main(args)
    if args.what == "memory":
        from plugpay.tools import bench_memory

        return bench_memory.main(args)
    if args.what == "device":
        from plugpay.tools import bench_device

        return bench_device.main(args)
    if args.what == "dashboard":
        from plugpay.tools import bench_dashboard

        return bench_dashboard.main(args)
    if args.what == "recovery":
        from plugpay.tools import bench_recovery

        return bench_recovery.main(args)
    from plugpay.tools import bench_crypto

    return bench_crypto.main(args)


def parser():
    p = Parser(
        prog="plugpay",
        description="Privacy-preserving pay-as-you-charge EV charging: device wallets, an ISO 15118-like "
        "link over MQTT, and a PBFT ledger with RA-signed one-time accounts.",
        epilog=errors.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version="plugpay %s" % version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from plugpay.tools import demo

    d = sub.add_parser("demo", help="a whole charging session: RA, 4-replica ledger, broker, gateway, vehicle and "
                       "charger (see README)", description=demo.__doc__.split("\n\n")[1].replace("\n", " "))
    demo.add_arguments(d)
    d.set_defaults(func=_demo)

    s = sub.add_parser("selfcheck", help="check that CPython and MicroPython agree on every wire structure")
    s.set_defaults(func=_selfcheck)

    b = sub.add_parser("bench", help="benchmarks that print figures beside a baseline measured in the same run")
    b.add_argument("what", choices=["crypto", "ledger", "wallet", "session", "privacy", "memory", "device",
                                    "dashboard", "recovery"],
                   help="crypto: key generation, sign, verify, 300 RA-signed accounts; "
                   "ledger: real transactions through four replica processes; "
                   "wallet: flash per key, O(1) key reads and the heap and sign time of a channel session"
                   " under MicroPython; session: on-chain transactions, installments per second, exposure in"
                   " every scenario, the link step and concurrent sessions over Mosquitto and a 4-replica ledger; "
                   "privacy: what an observer of every broker message and block can tie together over a vehicle's "
                   "sessions through the market (the deployment broker, real processes); "
                   "memory: the heap one side of a channel session takes on the 32-bit port, code from .mpy; "
                   "device: sessions between MicroPython unix-port processes through the market, their installment "
                   "round trip and smallest heap, beside CPython devices, and the 32-bit heap figures; "
                   "dashboard: bench ledger's saturation alone and watched by `ledger watch --json` with the dashboard"
                   " open in headless Chromium (the slowdown, keeping up), the page's first paint and update latency; "
                   "recovery: seconds until 4 replica processes confirm again after kill -9 of one, two in a "
                   "high view and all four, beside a failover, and what went missing")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    b.add_argument("--mode", choices=["channel", "htlc"], default="channel",
                   help="privacy: how the vehicle pays (default channel)")
    b.add_argument("--quick", action="store_true", help="shorter timing loops (noisier figures)")
    b.add_argument("--no-micropython", action="store_true",
                   help="crypto, session: skip the MicroPython (WebAssembly) run")
    b.add_argument("--engine", choices=["pbft", "cometbft"], default="pbft",
                   help="ledger: cometbft also measures four CometBFT validators, beside the PBFT engine as the "
                   "baseline of the same run (default pbft: PBFT alone)")
    b.add_argument("--seconds", type=arg_types.SECONDS, default=5.0, help="ledger, dashboard: seconds per run (default 5)")
    b.add_argument("--rate", type=arg_types.number(), default=300.0,
                   help="ledger: offered tx/s for the latency run (default 300)")
    b.add_argument("--lanes", type=arg_types.COUNT, default=256,
                   help="ledger, dashboard: transactions in flight at saturation (default 256: enough that the"
                   " next batch is agreed while the previous one executes)")
    b.add_argument("--keys", type=arg_types.COUNT, default=None,
                   help="wallet: RA-signed keys in the keystore (default 10000; 300 with --quick)")
    b.add_argument("--installments", type=arg_types.INSTALLMENTS, default=None,
                   help="wallet: installments of the channel session (default 100; 10 with --quick); "
                   "session: installments of the timed channel (default 1000; 100 with --quick); memory: of the"
                   " session (default 100; 10 with --quick); device: of each session (default 20)")
    b.add_argument("--baseline", default=None, metavar="DIR",
                   help="memory, device: a tree holding earlier protocol/, firmware/ and boards/ to measure beside"
                   " (default: this code imported from source)")
    b.add_argument("--sessions", type=arg_types.COUNT, default=None,
                   help="session: concurrent sessions through one broker and ledger (default 100; 10 with --quick); "
                   "privacy: the vehicle's sessions (default 20); device: MicroPython sessions (default 4)")
    b.set_defaults(func=_bench)

    from plugpay.tools import broker_cli, hil_cli, ledger_cli, provision_cli, ra_cli, session_cli, wallet_cli

    ledger_cli.add_parser(sub)
    broker_cli.add_parser(sub)
    ra_cli.add_parser(sub)
    wallet_cli.add_parser(sub)
    session_cli.add_parser(sub)
    provision_cli.add_parser(sub)
    hil_cli.add_parser(sub)

    from plugpay.tools import report_cli

    report_cli.add_parser(sub)

    from plugpay.tools import flash_cli

    flash_cli.add_parser(sub)

    from plugpay.tools import config_cli

    config_cli.add_parser(sub)
    return p


def version():
    from importlib import metadata

    try:
        return metadata.version("plugpay")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv=None):
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a refusal (printed): its code, for callers in-process too
        return e.code
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("%s: interrupted" % args.command_prog, file=sys.stderr)
        return errors.INTERRUPTED
    except Exception as e:  # one readable line for a user; tracebacks with PLUGPAY_DEBUG=1
        if os.environ.get("PLUGPAY_DEBUG") and not isinstance(e, errors.CommandError):
            raise
        print("%s: error: %s" % (args.command_prog, errors.text(e)), file=sys.stderr)
        return errors.exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
