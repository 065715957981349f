"""Recovery: batches whose worker died between claim and outcome, and the one way messages
of a doubtful batch go back to their lanes (docs/design.md, invariants 1 and 2).

A batch (:mod:`relay.dispatch.batch`) is in ``Keys.inflight`` while a worker submits it.
:func:`recover_inflight` takes batches older than ``RELAY_INFLIGHT_TIMEOUT`` — sooner when
the worker that claimed them is dead (:func:`relay.processes.is_dead`) and any request it
made is over (the gateway timeout has passed) — from ``inflight`` to ``verify``
(:func:`relay.dispatch.batch.take`, so one process takes each), renamed ``<bid>.r`` so a
worker that wakes up late cannot drop it. Their ``submitting`` messages become
``unknown``; messages still ``queued`` were claimed but never sent (the worker died before
its first transition) and go straight back to the head of their lane, no attempt counted.
:mod:`relay.dispatch.verify` then looks for the batch at the gateway.

Safe to call from many processes at once (the sweep calls it every few seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from relay.context import Context
from relay.dispatch import batch as batches
from relay.dispatch.batch import RECOVERED_SUFFIX, Batch
from relay.dispatch.tickets import Arm, enqueue_tickets, fresh_jobs
from relay.lanes import put_back
from relay.log import get_logger
from relay.processes import is_dead, read_beats
from relay.reconcile.matching import Submitted
from relay.states import WAITING_STATES, State
from relay.store import read_fields, waiting_since_ms

log = get_logger(__name__)

BATCH_LIMIT = 100
"""Most batches one call looks at."""
REQUEST_MARGIN_S = 5.0
"""Added to the gateway timeout: a batch claimed this long ago has no request still going."""

_FIELDS = (
    "state",
    "sms_id",
    "attempts",
    "sendto",
    "body",
    "customerid",
    "urgent",
    "timetosend",
    "t_queued",
    "t_requeued",
    "t_scheduled",
)


@dataclass(frozen=True)
class Doubt:
    """One message of a batch being recovered or verified."""

    id: str
    state: str | None
    sms_id: str | None
    attempts: int
    urgent: bool
    waiting_since_ms: int
    """When it last started waiting in relay (queued, put back, or scheduled)."""
    submitted: Submitted

    @classmethod
    def of(cls, msg_id: str, batch: Batch, vals: Sequence[str | None]) -> Doubt:
        h = {k: v or "" for k, v in zip(_FIELDS, vals, strict=True)}
        customer = h["customerid"]
        submitted = Submitted(
            msg_id,
            h["sendto"],
            h["body"],
            int(customer) if customer else None,
            batch.claimed_ms / 1000,
            batch.pair.sim,
        )
        waiting = waiting_since_ms(msg_id, {k: v for k, v in h.items() if v})
        return cls(
            msg_id,
            h["state"] or None,
            h["sms_id"] or None,
            int(h["attempts"] or 0),
            h["urgent"] == "1",
            waiting,
            submitted,
        )

    def with_state(self, state: str) -> Doubt:
        return replace(self, state=state)


def load_doubts(ctx: Context, batch: Batch) -> list[Doubt]:
    """The messages of ``batch`` whose records still exist."""
    rows = read_fields(ctx.conn, ctx.keys, batch.ids, _FIELDS)
    return [
        Doubt.of(msg_id, batch, vals)
        for msg_id, vals in zip(batch.ids, rows, strict=True)
        if vals[0] is not None
    ]


# --- dead workers ------------------------------------------------------------------------


def recover_inflight(ctx: Context, *, limit: int = BATCH_LIMIT) -> int:
    """Move batches of dead (or timed-out) workers from ``inflight`` to verification;
    returns the number of batches taken (see the module docstring)."""
    now = ctx.now_ms()
    timed_out = now - int(ctx.settings.inflight_timeout * 1000)
    over = now - int((ctx.settings.gateway_timeout + REQUEST_MARGIN_S) * 1000)
    rows: Any = ctx.conn.zrangebyscore(
        ctx.keys.inflight, "-inf", max(timed_out, over), start=0, num=limit, withscores=True
    )
    young = [bid.decode() for bid, score in rows if score > timed_out]
    dead = _of_dead_workers(ctx, young) if young else set()
    taken = 0
    for raw, score in rows:
        bid = raw.decode()
        if score > timed_out and bid not in dead:
            continue
        new = f"{bid}{RECOVERED_SUFFIX}"
        moved = batches.take(
            ctx,
            ctx.keys.inflight,
            ctx.keys.verify,
            bid,
            due_ms=int(score),
            score_ms=now,
            rename_to=new,
        )
        if not moved:
            continue
        taken += 1
        ctx.conn.hset(ctx.keys.batch(new), "doubted", now)  # its worker is gone or silent
        batch = batches.load(ctx, new)
        log.warning(
            "recovery.inflight_stale",
            batch=bid,
            dev=batch and batch.pair.device,
            size=batch and len(batch.ids),
            age_s=(now - score) / 1000,
            worker_dead=bid in dead,
        )
        if batch is not None:
            settle_claimed(ctx, batch, load_doubts(ctx, batch))
    return taken


def _of_dead_workers(ctx: Context, bids: list[str]) -> set[str]:
    """Which of ``bids`` were claimed by a worker whose heartbeat went silent."""
    beats = read_beats(ctx)
    return {
        b.bid
        for b in batches.load_many(ctx, bids)
        if b is not None and b.worker and is_dead(ctx, beats.get(b.worker))
    }


def settle_claimed(ctx: Context, batch: Batch, doubts: list[Doubt]) -> list[Doubt]:
    """``submitting`` → ``unknown``; claimed-but-never-sent messages back to their lane.

    A message still ``queued`` (or ``scheduled``) since before the claim was popped from
    its lane by a worker that died before its first transition: nothing was sent. One
    queued again after the claim is already back in a lane (put back by us or by the late
    worker) and is left alone, so this is safe to repeat. Returns the other doubts.
    """
    submitting = [d.id for d in doubts if d.state == State.SUBMITTING]
    moved = set(
        ctx.store.transition(
            submitting,
            State.UNKNOWN,
            [State.SUBMITTING],
            fields={"error": "worker lost during submission"},
        )
    )
    never_sent = [
        d for d in doubts if d.state in WAITING_STATES and d.waiting_since_ms <= batch.claimed_ms
    ]
    if never_sent:
        return_to_lanes(ctx, batch, never_sent, count_attempt=False, settle=False)
    # A read older than another recovery's own move (two sweeps at once) still says
    # submitting: such a message is unknown as well, not to be left out of the check (every
    # later write is conditional on unknown, so one that moved on elsewhere is left alone).
    return [
        d.with_state(State.UNKNOWN) if d.id in moved or d.state == State.SUBMITTING else d
        for d in doubts
        if d.state not in WAITING_STATES
    ]


def return_to_lanes(
    ctx: Context, batch: Batch, doubts: Sequence[Doubt], *, count_attempt: bool, settle: bool
) -> None:
    """To the head of their lanes as ``queued`` (or ``rejected`` after the last attempt).

    With ``settle`` the batch is done: its record goes and it leaves ``verify`` and
    ``inflight``, in the same MULTI.
    """
    k, limit = ctx.keys, ctx.settings.max_attempts
    give_up = [d for d in doubts if count_attempt and d.attempts + 1 >= limit]
    again = [d for d in doubts if d not in give_up]
    ids = [d.id for d in again]
    jobs = fresh_jobs(k, batch.pair.urgent)
    with ctx.conn.pipeline(transaction=True) as pipe:
        per = [{"attempts": d.attempts + int(count_attempt), "batch": batch.origin} for d in again]
        allowed = [State.UNKNOWN] if count_attempt else list(WAITING_STATES)
        ctx.store.queue_transition(pipe, ids, State.QUEUED, allowed, per_message=per)
        # requeue.lua puts back messages whose `batch` names the original batch id
        back = put_back(pipe, k, batch.pair, ids, batch=batch.origin, jobs=jobs)
        _reject(ctx, pipe, give_up)
        if settle:
            batches.drop(pipe, ctx, batch.bid)
            pipe.zrem(k.verify, batch.bid)
        answers = pipe.execute()
    armed = back.result(answers).armed
    enqueue_tickets(ctx, [Arm(lane, job) for lane, job in armed.items()])
    if again or give_up:
        log.warning(
            "recovery.put_back",
            batch=batch.bid,
            dev=batch.pair.device,
            sim=batch.pair.sim,
            requeued=len(again),
            rejected=len(give_up),
            attempt=count_attempt,
        )


def _reject(ctx: Context, pipe: Any, give_up: Sequence[Doubt]) -> None:
    if not give_up:
        return
    error = f"the gateway did not store it in {ctx.settings.max_attempts} attempts"
    per = [{"attempts": d.attempts + 1} for d in give_up]
    ctx.store.queue_transition(
        pipe,
        [d.id for d in give_up],
        State.REJECTED,
        [State.UNKNOWN],
        fields={"error": error},
        per_message=per,
    )
    pipe.zadd(ctx.keys.dead, dict.fromkeys((d.id for d in give_up), ctx.now_ms()))
