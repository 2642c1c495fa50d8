"""The ledger's ABCI application, SIGKILLed by itself in the middle of a block: after it
applied the first request of the first block at or above ``--crash-at`` with requests in
it, before the rest and before Commit. What a power cut or ``kill -9`` does at the worst
moment, at a moment a test can count on."""
import argparse
import logging
import os
import signal
import sys

from plugpay.host import abci_app


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--crash-at", type=int, required=True)
    p.add_argument("--home", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def make(home):
        app, address = abci_app.open_app(home)
        real = app.ledger._execute_one

        def execute_one(height, raw, trusted):
            result = real(height, raw, trusted)
            if height >= args.crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        app.ledger._execute_one = execute_one
        return app, address

    abci_app.serve(args.home, make_app=make)


if __name__ == "__main__":
    sys.exit(main())
