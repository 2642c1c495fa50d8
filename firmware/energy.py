"""The energy of one side's session: each side's limit on its board, the responder's meter,
and the initiator's check of each reading (for ``firmware.session``).

Energy is metered by the responder (the charger, or the vehicle acting as one in V2V),
whoever produces: each paid chunk flows and the responder's meter stops it at the chunk's
energy and signs the reading. The initiator checks the reading against its own measurement
(``tolerance_wh``) and counter-signs it; each side refuses a reading that would cost it (a
consumer one that shows more than it measured, or less than due; a producer one that shows
less than it delivered). A side that does not meter lets its board take or give each chunk
up to the tolerance past its energy, as its own measurement may show a little more than the
meter: a producer from when it accepts the installment, a consumer from when it pays it. So
the producer's exposure stays within the agreed tolerance (0 when the two measurements
agree), and a consumer takes no more than it paid for, whatever its peer's end does. Both
sides tell the link when they measure the chunk's energy advancing, so a slow flow is
waited for and a stopped one times out.
"""
from plugpay.protocol import link

NO_POWER_POLL_MS = 10
# The meter reads a chunk that stopped short of its energy (within the tolerance: the
# producer's own measurement reached its limit first) only after no energy came for this
# long, so a peer's pause or resume on its way is not taken for the end of the flow.
STALL_MS = 1000


class Energy:
    """``session``'s energy on its board. ``chunk`` is the cumulative Wh the paid chunk may
    reach (the board's limit, the meter's target), None while nothing flows for it."""

    def __init__(self, session, now):
        self.s = session
        self.board = session.board
        self.params = session.params
        self.meters = session.meters
        self.chunk = None
        self.chunk_paused = False  # the chunk's energy was stopped for a pause
        self.seen = 0  # Wh measured when the energy last advanced, and when (link ms)
        self.flow_at = now

    def start_chunk(self, now):
        """Chunk k is paid for: the producer lets it flow, the responder meters it, a
        consumer that does not meter takes it."""
        s = self.s
        k = s.machine.readings + 1
        if s.producer and s.cheat.stop_delivering_after is not None and k > s.cheat.stop_delivering_after:
            self.board.stop_delivery()
            s.note(now, "misbehaving: not delivering chunk %d" % k)
            return
        due = self.params.due_wh(k)
        self.chunk = due if self.meters else due + self.params.tolerance_wh
        self.chunk_paused = s.machine.paused
        self.flow_at = now
        if not self.chunk_paused:  # else once the link resumes (``tick``)
            self.board.start_delivery(self.chunk)
            self.read_meter(now)

    def stop(self):
        """No more energy until the next chunk is paid (or ever, once the link is over)."""
        self.chunk = None
        self.board.stop_delivery()

    def watch(self, now):
        """While a chunk flows: let the board see the energy (a board that switches by
        polling opens at its limit) and tell the link when it advanced."""
        m = self.s.machine
        if m.phase != link.CHARGING or m.paused:
            return
        self.board.update()
        measured = self.board.measured_wh
        if measured != self.seen:
            self.seen = measured
            self.flow_at = now
            m.energy_flowed(now)

    def tick(self, now):
        """No energy while the link is paused; the meter reads once the chunk is there."""
        if self.chunk is None:
            return
        paused = self.s.machine.paused
        if paused != self.chunk_paused:
            self.chunk_paused = paused
            if paused:
                self.board.stop_delivery()
            else:
                self.flow_at = now
                self.board.start_delivery(self.chunk)
        self.read_meter(now)

    def next_deadline(self, now):
        """When the chunk's energy is there (the board's limit or the meter's target), or
        None while the link does not wait for it."""
        m = self.s.machine
        if self.chunk is None or m.paused or m.phase != link.CHARGING:
            return None
        ms = self.board.time_to_reach_ms(self.chunk)
        if ms is None:  # no power as things stand (the peer's contactor is open)
            return now + NO_POWER_POLL_MS if self.meters else None  # the meter looks again soon
        if ms > 0 or self.meters:  # a producer's board switches off at its limit once looked at
            return now + ms
        return None

    def read_meter(self, now):
        """Responder: send reading k once the meter shows the chunk, or once the flow
        stopped short of it for ``STALL_MS`` but within the tolerance (the producer's own
        measurement reached its limit first: the initiator's check decides); energy stops
        until the next installment is paid."""
        s = self.s
        m = s.machine
        if not self.meters or self.chunk is None or m.paused or m.phase != link.CHARGING:
            return
        self.board.update()
        shown = self.board.measured_wh
        if shown < self.chunk and (shown + self.params.tolerance_wh < self.chunk or now - self.flow_at < STALL_MS
                                   or self.board.time_to_reach_ms(self.chunk) is not None):
            return
        self.stop()
        s.timestamp += 1
        m.send_reading(self.board.meter.read(m.readings + 1, s.timestamp), now)
        s.track(now)

    def check(self, reading, now):
        """Initiator: True if ``reading`` is what I measured, within the tolerance; a
        producer's chunk stops there, as the meter took it."""
        s = self.s
        self.board.update()
        measured = self.board.measured_wh
        tolerance = self.params.tolerance_wh
        due = self.params.due_wh(reading.index)
        if s.producer:  # it must credit what I delivered
            wrong = reading.cumulative_wh + tolerance < measured
        else:  # it must not bill more than I measured, nor have me measure less than due
            wrong = reading.cumulative_wh > measured + tolerance or measured + tolerance < due
        if wrong:
            s.note(now, "reading %d says %d Wh, measured %d Wh, %d Wh due" % (
                reading.index, reading.cumulative_wh, measured, due))
            return False
        if s.producer:  # no more flows until it is paid
            self.stop()
        return True
