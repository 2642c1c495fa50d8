"""The deterministic ledger state machine that both consensus engines run.

Split along its seams: ``state`` (the tables, their SQLite rows and memory mirrors, the
state digest), ``fastpath`` (the hot path's encoders and decoders), one module per contract
family (``payments``, ``channels``, ``htlcs``, ``market``), ``handlers`` (the table of which
function serves which operation and query) and ``core`` (``Ledger``: the block-apply entry
the PBFT replicas and the CometBFT application both call).
"""
from .core import Applied, Check, Ledger
from .state import Reject

__all__ = ["Applied", "Check", "Ledger", "Reject"]
