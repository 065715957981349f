"""Dispatch tickets: claim a batch of one device/SIM, submit it, record the outcome, re-arm.

:func:`run_ticket` is the RQ job of every ticket (``relay.dispatch.tickets.TICKET_FUNC``). One run
loops for at most :data:`LOOP_SECONDS` / :data:`LOOP_BATCHES` batches:

1. ``lua/claim.lua`` pops every urgent id, then bulk ids within the GCRA allowance, and
   records ``batch:<bid>`` in ``inflight`` (see the script's header for the ticket rules);
2. one MULTI moves the ids ``queued → submitting`` and reads what the request needs;
3. one ``addalotofsms`` call;
4. the outcome, in one MULTI each:

   - stored → ``submitted`` (+ ``pending:<dev>``, urgent ids on ``urgent-waiting``);
   - :class:`GatewayRejected` → a batch of several goes back to the head of its lanes and
     the lane's batch size halves (``cap`` in ``pace:<dev>:<sim>``) until the refused
     message is alone; a lone refused message counts an attempt and goes back, or ends
     ``rejected`` with the gateway's words after ``RELAY_MAX_ATTEMPTS`` (and joins ``dead``);
   - :class:`NotSent` / :class:`GatewayAuthError` / a failure before sending → back to the
     head of its lanes, pacing given back, the ticket on a capped exponential backoff timer;
   - :class:`OutcomeUnknown` (or any failure once the request went out) → ``unknown``, the
     batch moves from ``inflight`` to ``verify``; nothing in it is sent again until
     ``relay.dispatch.recovery`` has looked for it at the gateway.

Then, while work may go now, the run loops, or hands its ticket to a fresh job when its
time is up; when bulk waits for pacing the claim script already put the ticket on
``timers``.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from relay import scripts
from relay.context import Context, current
from relay.devices import Pace, pace_for
from relay.dispatch.submit import Submitter
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.keys import BULK, URGENT, LaneKind
from relay.log import get_logger

log = get_logger(__name__)

LOOP_SECONDS = 1.0
"""A ticket run stops claiming after this long and hands the lane to a fresh job."""
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


@dataclass(frozen=True)
class Claim:
    """What ``claim.lua`` answered: the ids (urgent first), and what the ticket does next."""

    bid: str
    ids: list[str]
    n_urgent: int
    next_free_ms: int
    verdict: str
    cap: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _current_job() -> tuple[str | None, str | None]:
    """(job id, worker name) of the RQ job running this code, if any."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return None, None
    return job.id, job.worker_name


def run_ticket(kind: LaneKind, dev: int, sim: int, job_id: str | None = None) -> str:
    """The RQ job of a dispatch ticket for lane ``kind`` of ``dev``/``sim``.

    Uses this process's :func:`relay.context.current`. Returns how the run ended
    (``released``, ``timer``, ``handed``, ``stale``, ``backoff``) for logs and tests.
    """
    rq_job, rq_worker = _current_job()
    job = job_id or rq_job or f"direct-{uuid.uuid4().hex[:12]}"
    worker = rq_worker or f"{socket.gethostname()}:{os.getpid()}"
    return TicketRun(current(), kind, int(dev), int(sim), job, worker).run()


class TicketRun:
    """One run of a ticket: its loop of claim → submit → record, and its hand-over."""

    def __init__(
        self, ctx: Context, kind: LaneKind, dev: int, sim: int, job: str, worker: str
    ) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.kind: LaneKind = kind
        self.dev = dev
        self.sim = sim
        self.job = job
        self.worker = worker
        self.member = f"{kind}:{dev}:{sim}"
        self.ticket = ctx.keys.ticket(kind, dev, sim)
        self.pace_key = ctx.keys.pace(dev, sim)
        self.submitter = Submitter(ctx, kind, dev, sim, job)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> str:
        started = self.ctx.clock.now()
        for n in range(1, LOOP_BATCHES + 1):
            pace = pace_for(self.ctx, self.dev, self.sim)
            claim = self.claim(pace)
            hold = self._holder_after(claim)
            outcome = (
                self.submitter.submit(claim.bid, claim.ids, pace, claim.cap)
                if claim.ids
                else "none"
            )
            if claim.verdict == "stale":
                return "stale"
            if outcome == "unknown" and hold is None:
                return "released"  # nothing left to send: no need to back off
            if outcome in ("not_sent", "not_replicated", "auth", "failed", "unknown"):
                return self.park(hold, claim, auth=outcome == "auth")
            if outcome == "requeued":
                if not self._reown(hold):
                    return "stale"
                continue
            if claim.verdict != "more":
                return claim.verdict
            out_of_time = self.ctx.clock.now() - started >= LOOP_SECONDS
            if _stopping.is_set() or out_of_time or n == LOOP_BATCHES:
                return self.hand_over()
        return self.hand_over()

    def _holder_after(self, claim: Claim) -> str | None:
        """What the ticket key holds after the claim, as far as this run knows."""
        return {"more": self.job, "timer": "timer", "released": None}.get(claim.verdict, "")

    def claim(self, pace: Pace) -> Claim:
        """Run ``claim.lua`` for this ticket with ``pace``."""
        k, bid = self.keys, uuid.uuid4().hex[:16]
        keys = [
            k.lane(URGENT, self.dev, self.sim),
            k.lane(BULK, self.dev, self.sim),
            self.pace_key,
            k.inflight,
            k.batch(bid),
            self.ticket,
            k.timers,
        ]
        args: list[Any] = [
            self.ctx.now_ms(),
            self.ctx.settings.batch_max,
            pace.interval_ms,
            pace.burst,
            bid,
            self.worker,
            self.kind,
            self.member,
            self.job,
            self.dev,
            self.sim,
        ]
        ids, n_urgent, next_free, verdict, cap = scripts.run(self.ctx.conn, "claim", keys, args)
        return Claim(
            bid, [_text(i) for i in ids], int(n_urgent), int(next_free), _text(verdict), int(cap)
        )

    # --- the ticket ------------------------------------------------------------------------

    def hand_over(self) -> str:
        """Give the ticket to a fresh RQ job (so other lanes get workers meanwhile)."""
        arm = Arm.new(self.kind, self.dev, self.sim)
        if not self._handoff(self.job, arm.job_id):
            return "stale"
        enqueue_tickets(self.ctx.conn, self.keys, [arm])
        return "handed"

    def park(self, hold: str | None, claim: Claim, *, auth: bool) -> str:
        """Put the ticket on a capped exponential backoff timer (per device/SIM, in Redis)."""
        fails = int(self.ctx.conn.hincrby(self.pace_key, "fails", 1))
        base, cap = (
            (AUTH_BACKOFF_BASE_S, AUTH_BACKOFF_MAX_S) if auth else (BACKOFF_BASE_S, BACKOFF_MAX_S)
        )
        delay = min(cap, base * 2 ** min(fails - 1, 30))
        at = max(self.ctx.now_ms() + int(delay * 1000), claim.next_free_ms)
        expected = self.job if hold is None else hold  # put back: requeue re-armed it for us
        if not self._handoff(expected, "timer", at_ms=at):
            return "released" if hold is None else "stale"
        log.info(
            "dispatch.backoff",
            dev=self.dev,
            sim=self.sim,
            kind=self.kind,
            delay_s=delay,
            fails=fails,
        )
        return "backoff"

    def _reown(self, hold: str | None) -> bool:
        """After messages went back, hold the ticket again (the claim may have released it)."""
        if hold == self.job:
            return True
        return self._handoff("timer" if hold == "timer" else self.job, self.job, missing_ok=True)

    def _handoff(
        self, expected: str, new: str, *, at_ms: int | None = None, missing_ok: bool = False
    ) -> bool:
        keys = [self.ticket, self.keys.timers]
        args = [
            expected,
            new,
            "" if at_ms is None else at_ms,
            "1" if missing_ok else "0",
            self.member,
        ]
        return bool(scripts.run(self.ctx.conn, "handoff", keys, args))
