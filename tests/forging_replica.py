"""A real replica process that lies in its answers to clients' lookups (tests only).

``python tests/forging_replica.py --id N --config cluster.json`` runs the real
``plugpay.host.replica.Replica`` with honest consensus, so the ledger itself is unharmed;
only the ``["answer", id, ...]`` frames it sends to clients (query results and block
records) are rewritten: every integer in a found record is one higher, so it names the
wrong height, amount, index or timestamp. A client must outvote this with f+1 matching
answers.
"""
import argparse
import logging
import sys

from plugpay.host import replica
from plugpay.protocol import ledger_ops as L
from plugpay.protocol.codec import DecodeError


def bump(value):
    """``value`` with every integer (not bool) one higher, at any depth."""
    if type(value) is int:
        return value + 1
    if type(value) is list:
        return [bump(v) for v in value]
    return value


def forge(answer):
    """A ledger ``Result`` with its record bumped, or a bumped block record."""
    if type(answer) is bytes:
        try:
            result = L.Result.decode(answer)
        except DecodeError:
            return answer
        if result.data is None:
            return answer
        result.data = bump(result.data)
        return result.encode()
    return bump(answer)


class ForgingReplica(replica.Replica):
    def _write(self, conn, payload):
        if type(payload) is list and len(payload) == 3 and payload[0] == "answer":
            payload = ["answer", payload[1], forge(payload[2])]
        super()._write(conn, payload)


def main(argv=None):
    p = argparse.ArgumentParser(description="run one replica that forges its answers to client lookups")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("plugpay.replica").warning("replica %d forges its answers to clients", args.id)
    replica.serve(args.id, args.config, ForgingReplica)
    return 0


if __name__ == "__main__":
    sys.exit(main())
