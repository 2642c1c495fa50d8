"""How a session pays, whatever the payment mode: the interface ``firmware.session`` drives.

A payment mode (``session_channel``: one state channel; ``session_htlc``: a series of N
HTLCs) turns installments into wallet operations and ledger requests. It works through its
session (``self.s``): ``submit``/``query`` a ledger request with a callback, ``note``,
``stop`` the link, ``signed`` (what is now signed away or held), ``accepted`` (producer:
installment k holds), ``pay`` (consumer: send the installment that is due), ``send`` (bytes
for the peer beside the link), and sets ``finished`` and ``payout`` on it once the money is
settled. Methods a mode does not need keep the defaults here.
"""


class Payment:
    """One side's money in one session; ``NAME`` is the mode as a log line says it."""

    NAME = ""

    def __init__(self, session):
        self.s = session

    def deposit(self, producer_account, now):
        """Consumer: lock the budget on the ledger for ``producer_account``; once the
        ledger confirmed it, ``self.s.pay(now)`` sends installment 0."""
        raise NotImplementedError

    def ready(self):
        """Consumer: the deposit is confirmed, installment 0 may go."""
        raise NotImplementedError

    def pay(self, k, now):
        """Consumer: the proof of installment k (bytes for the link), stored first; what it
        signs away is told to ``self.s.signed``."""
        raise NotImplementedError

    def paid(self, k, answer, now):
        """Consumer: the producer accepted installment k with ``answer``."""

    def accept(self, k, proof, now):
        """Producer: check installment k; ``self.s.accepted(k, answer, now)`` once it holds
        (at once, or when the ledger answered). Raises a wallet error to refuse it."""
        raise NotImplementedError

    def close(self, now):
        """The link is over: settle what the mode holds (called again when an answer that
        was on its way comes); ``self.s.finished`` once done."""
        raise NotImplementedError

    def close_message(self, op, data, now):
        """A ``ChannelClose`` the peer sent beside the link once it was over."""

    def balance(self):
        """The latest co-signed balance (bytes), for a resume."""
        raise NotImplementedError

    def progress(self, balance):
        """How far a balance is, in installments, or None if it is not one of this mode."""
        raise NotImplementedError

    def tick(self, now):
        """Run what is due by ``next_deadline``."""

    def next_deadline(self):
        """When ``tick`` has something to do (ms of the link's clock), or None."""
        return None
