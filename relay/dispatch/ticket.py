"""One run of a dispatch ticket: claim a batch of one device/SIM, submit it, record the
outcome, re-arm.

:func:`run_ticket` is the RQ job of every ticket (``relay.dispatch.run_ticket``). One run
loops for at most :data:`LOOP_SECONDS` / :data:`LOOP_BATCHES` batches:

1. :func:`relay.dispatch.claim.claim` takes every urgent id, then bulk ids within the GCRA
   allowance, and records the batch as in flight;
2. :class:`relay.dispatch.submit.Submitter` moves the ids ``queued → submitting``, makes one
   ``addalotofsms`` call, and records the outcome;
3. then, while work may go now, the run loops, or hands its ticket to a fresh job when its
   time is up (so other lanes get workers meanwhile); when bulk waits for pacing the claim
   already put the ticket on ``timers``; after a failed request (or a lone message refused
   again) the ticket waits on a capped exponential backoff timer (per device/SIM, in Redis).
"""

from __future__ import annotations

import threading
import uuid
from typing import Literal

from relay.context import Context, current
from relay.devices import pace_for
from relay.dispatch.claim import Claim, claim
from relay.dispatch.submit import Submitter
from relay.dispatch.tickets import LOOP_SECONDS, TIMER, Arm, enqueue_tickets, handoff
from relay.lanes import LaneId, LaneKind, kind_of
from relay.log import get_logger
from relay.processes import process_name

log = get_logger(__name__)

RunEnd = Literal["released", "timer", "handed", "stale", "backoff"]
"""How a ticket run ended: its lane empty (ticket released), bulk waiting for pacing (on a
timer), handed to a fresh job, a stale duplicate (another job holds the ticket), or on a
backoff timer after a failure."""

LOOP_BATCHES = 10
"""... or after this many batches."""
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
AUTH_BACKOFF_BASE_S = 10.0
AUTH_BACKOFF_MAX_S = 600.0

_stopping = threading.Event()


def request_stop() -> None:
    """Make running tickets hand over after their current batch (warm shutdown)."""
    _stopping.set()


def clear_stop() -> None:
    _stopping.clear()


def _current_job() -> tuple[str | None, str | None]:
    """(job id, worker name) of the RQ job running this code, if any."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return None, None
    return job.id, job.worker_name


def run_ticket(kind: LaneKind, dev: int, sim: int, job_id: str | None = None) -> RunEnd:
    """The RQ job of the dispatch ticket of lane ``kind`` of ``dev``/``sim``.

    Uses this process's :func:`relay.context.current`. Returns how the run ended.
    """
    rq_job, rq_worker = _current_job()
    job = job_id or rq_job or f"direct-{uuid.uuid4().hex[:12]}"
    worker = rq_worker or process_name("direct")
    lane = LaneId(kind_of(kind == "u"), int(dev), int(sim))
    return TicketRun(current(), lane, job, worker).run()


class TicketRun:
    """One run of a ticket: its loop of claim → submit → record, and its hand-over."""

    def __init__(self, ctx: Context, lane: LaneId, job: str, worker: str) -> None:
        self.ctx = ctx
        self.lane = lane
        self.job = job
        self.worker = worker
        self.submitter = Submitter(ctx, lane, job)

    def run(self) -> RunEnd:
        started = self.ctx.clock.now()
        for n in range(1, LOOP_BATCHES + 1):
            pace = pace_for(self.ctx, self.lane.device, self.lane.sim)
            got = claim(self.ctx, self.lane, pace, job=self.job, worker=self.worker)
            hold = self._holder_after(got)
            outcome = self.submitter.submit(got.bid, got.ids, pace, got.cap) if got.ids else None
            if got.verdict == "stale":
                return "stale"
            if outcome == "unknown" and hold is None:
                return "released"  # nothing left to send: no need to back off
            if outcome in ("not_sent", "not_replicated", "auth", "failed", "unknown", "refused"):
                return self.park(hold, got, auth=outcome == "auth")
            if outcome in ("bisected", "rejected"):
                if not self._reown(hold):
                    return "stale"
                continue
            if got.verdict != "more":
                return got.verdict
            out_of_time = self.ctx.clock.now() - started >= LOOP_SECONDS
            if _stopping.is_set() or out_of_time or n == LOOP_BATCHES:
                return self.hand_over()
        return self.hand_over()

    def _holder_after(self, got: Claim) -> str | None:
        """What the ticket key holds after the claim, as far as this run knows
        (None: released; "" for a stale run, which holds nothing of its own)."""
        return {"more": self.job, "timer": TIMER, "released": None}.get(got.verdict, "")

    def hand_over(self) -> RunEnd:
        """Give the ticket to a fresh RQ job (so other lanes get workers meanwhile)."""
        arm = Arm.new(self.ctx.keys, self.lane)
        if not handoff(self.ctx, self.lane, self.job, arm.job_id):
            return "stale"
        enqueue_tickets(self.ctx, [arm])
        return "handed"

    def park(self, hold: str | None, got: Claim, *, auth: bool) -> RunEnd:
        """Put the ticket on a capped exponential backoff timer (per device/SIM, in Redis)."""
        fails = int(self.ctx.conn.hincrby(self.ctx.keys.pace(self.lane.pair), "fails", 1))
        base, cap = (
            (AUTH_BACKOFF_BASE_S, AUTH_BACKOFF_MAX_S) if auth else (BACKOFF_BASE_S, BACKOFF_MAX_S)
        )
        delay = min(cap, base * 2 ** min(fails - 1, 30))
        at = max(self.ctx.now_ms() + int(delay * 1000), got.next_free_ms)
        expected = self.job if hold is None else hold  # put back: requeue re-armed it for us
        if not handoff(self.ctx, self.lane, expected, TIMER, at_ms=at):
            return "released" if hold is None else "stale"
        log.info(
            "dispatch.backoff",
            dev=self.lane.device,
            sim=self.lane.sim,
            kind=self.lane.kind,
            delay_s=delay,
            fails=fails,
        )
        return "backoff"

    def _reown(self, hold: str | None) -> bool:
        """After messages went back, hold the ticket again (the claim may have released it)."""
        if hold == self.job:
            return True
        expected = TIMER if hold == TIMER else self.job
        return handoff(self.ctx, self.lane, expected, self.job, missing_ok=True)
