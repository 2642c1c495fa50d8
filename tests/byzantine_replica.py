"""A real replica process with one Byzantine fault in what it sends (tests only).

``python tests/byzantine_replica.py --id N --config cluster.json --mode MODE`` runs the real
``plugpay.host.replica.Replica``: the same engine, chain store, authenticated links and
timers. Only the engine's output is rewritten, per destination, before it is queued
(``Replica._dispatch``, the one place every protocol message passes). Everything else stays
faithful, so a test shows the honest replicas coping with exactly this fault. Status and
query answers to clients are diagnostics outside the protocol and are left alone.

Modes:

* ``silent-primary``: stays connected and keeps receiving, but sends no protocol message at
  all: no pre-prepare, vote, checkpoint, view change or client reply.
* ``equivocate``: as primary, sends each batch as proposed to one backup and a batch with a
  different digest (its requests reversed, or none) under the same sequence number to the
  others. Neither batch then has 2f+1 replicas behind it, so nothing commits in that view.
* ``wrong-digest``: its prepares and commits carry a digest that matches no batch.
"""
import argparse
import logging
import sys

from plugpay.host import replica


def silent(engine, dest, msg):
    return []


def other_batch(batch):
    """A batch with a different digest: the requests reversed, or none if that is the same."""
    reordered = batch[::-1]
    return reordered if reordered != batch else []


def equivocate(engine, dest, msg):
    if msg[0] == "pp" and dest != (engine.id + 1) % engine.n:
        return [msg[:3] + [other_batch(msg[3])]]
    return [msg]


def wrong_digest(engine, dest, msg):
    if msg[0] in ("p", "c"):
        d = msg[3]
        return [msg[:3] + [bytes([d[0] ^ 0xFF]) + d[1:]]]
    return [msg]


MODES = {"silent-primary": silent, "equivocate": equivocate, "wrong-digest": wrong_digest}


class ByzantineReplica(replica.Replica):
    """A ``Replica`` whose outgoing engine messages pass through ``tamper(engine, dest, msg)``,
    which returns the messages to send instead (none, the same one, or a forged one)."""

    def __init__(self, replica_id, config, secrets, tamper):
        super().__init__(replica_id, config, secrets)
        self.tamper = tamper

    def _dispatch(self, out):
        super()._dispatch([(dest, m) for dest, msg in out for m in self.tamper(self.engine, dest, msg)])


def main(argv=None):
    p = argparse.ArgumentParser(description="run one replica with a Byzantine fault")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--mode", choices=sorted(MODES), required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("plugpay.replica").warning("replica %d is Byzantine: %s", args.id, args.mode)
    tamper = MODES[args.mode]
    replica.serve(args.id, args.config, lambda i, config, secrets: ByzantineReplica(i, config, secrets, tamper))
    return 0


if __name__ == "__main__":
    sys.exit(main())
