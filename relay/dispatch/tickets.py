"""Dispatch tickets: the one RQ job (at most) that drains a lane.

A ticket key (``Keys.ticket(lane)``) is set while the lane's ticket is queued in RQ,
running, or waiting on a timer; its value is the RQ job id (or ``timer``). Whoever sets the
key (atomically, in a Lua script, with ``SET NX`` or a compare-and-set) must then enqueue
the job with :func:`enqueue_tickets`. If the process dies in between, the periodic sweep
(:mod:`relay.run.sweep`) finds the ticket whose job does not exist and re-arms it.

The key changes hands in three scripts: ``lua/claim.lua`` (a run adopts, keeps, releases or
times it), ``lua/handoff.lua`` (:func:`handoff`: compare-and-set, from a job to a fresh job
or onto a timer) and ``lua/pop_due.lua`` (:func:`pop_due`: due timers get fresh jobs).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from relay import scripts
from relay.connection import text
from relay.context import Context
from relay.keys import Keys
from relay.lanes import KINDS, LaneId, LaneKind
from relay.log import get_logger
from relay.settings import Settings

log = get_logger(__name__)

TICKET_FUNC = "relay.dispatch.run_ticket"
"""The job function of every ticket, ``run_ticket(kind, dev, sim)``: a path that stays."""
LOOP_SECONDS = 1.0
"""A ticket run stops claiming after this long and hands the lane to a fresh job."""
RUN_MARGIN_S = 10.0
"""Added to one run's loop and last gateway request for its Redis calls (see
:func:`run_bound_s`)."""
FAILURE_TTL = 86400
TIMER = "timer"
"""The ticket key's value while the lane's ticket waits on ``Keys.timers``."""
TIMERS_PER_CALL = 200


def run_bound_s(settings: Settings) -> float:
    """How long one ticket run can really last: its loop (:data:`LOOP_SECONDS`), then the
    request of the batch it started last (``RELAY_GATEWAY_TIMEOUT``; ``addalotofsms`` is never
    retried), a ``WAIT`` (``RELAY_REDIS_WAIT_TIMEOUT``) and :data:`RUN_MARGIN_S`.

    The RQ timeout of every ticket job (a run stuck past it is stopped, its batch verified
    by recovery), and the life of the lane's progress key each claim sets.
    """
    waits = settings.gateway_timeout + settings.redis_wait_timeout
    return LOOP_SECONDS + waits + RUN_MARGIN_S


@dataclass(frozen=True)
class Arm:
    """A ticket to enqueue: ``lane``'s ticket under RQ job id ``job_id``."""

    lane: LaneId
    job_id: str

    @classmethod
    def new(cls, keys: Keys, lane: LaneId) -> Arm:
        return cls(lane, new_job_id(keys, lane))


def new_job_id(keys: Keys, lane: LaneId) -> str:
    """A fresh RQ job id naming the lane it drains (readable in ``rq info``)."""
    return keys.job_id("ticket", f"{lane.kind}-{lane.device}-{lane.sim}-{uuid.uuid4().hex[:12]}")


def fresh_jobs(keys: Keys, lane: LaneId) -> dict[LaneKind, str]:
    """A fresh job id for each lane of ``lane``'s device/SIM (for :func:`relay.lanes.put_back`)."""
    return {kind: new_job_id(keys, lane.pair.lane(kind)) for kind in KINDS}


def queue(conn: redis.Redis, keys: Keys, kind: LaneKind) -> Queue:
    """The RQ queue tickets of ``kind`` go to (JSON serializer, never pickle)."""
    return Queue(keys.queue_for(kind), connection=conn, serializer=JSONSerializer)


def enqueue_tickets(ctx: Context, arms: Sequence[Arm]) -> None:
    """Enqueue one RQ job per arm, all in one pipeline (RQ timeout: :func:`run_bound_s`)."""
    if not arms:
        return
    conn, keys = ctx.conn, ctx.keys
    timeout = math.ceil(run_bound_s(ctx.settings))
    with conn.pipeline() as pipe:
        for kind in KINDS:
            mine = [a for a in arms if a.lane.kind == kind]
            if not mine:
                continue
            datas = [
                Queue.prepare_data(
                    TICKET_FUNC,
                    args=(a.lane.kind, a.lane.device, a.lane.sim),
                    job_id=a.job_id,
                    timeout=timeout,
                    result_ttl=0,
                    failure_ttl=FAILURE_TTL,
                    description=f"dispatch {a.lane.label}",
                )
                for a in mine
            ]
            queue(conn, keys, kind).enqueue_many(datas, pipeline=pipe)
        pipe.execute()


def handoff(
    ctx: Context,
    lane: LaneId,
    expected: str,
    new: str,
    *,
    at_ms: int | None = None,
    missing_ok: bool = False,
) -> bool:
    """``lua/handoff.lua``: set ``lane``'s ticket to ``new`` (a job id, or :data:`TIMER`
    with ``at_ms``) if it holds ``expected`` (or nothing, with ``missing_ok``)."""
    keys = [ctx.keys.ticket(lane), ctx.keys.timers]
    args: list[scripts.Arg] = [
        expected,
        new,
        "" if at_ms is None else at_ms,
        "1" if missing_ok else "0",
        lane.member,
    ]
    return bool(scripts.call(ctx.conn, "handoff", keys, args))


def rearm(ctx: Context, lane: LaneId, holder: str | None, *, lost: bool = False) -> bool:
    """Give ``lane``'s ticket to a fresh job if it still holds ``holder`` (None: no ticket);
    enqueue that job. ``lost``: the sweep found the ticket lost (logged as a warning)."""
    arm = Arm.new(ctx.keys, lane)
    if holder is None:
        taken = bool(ctx.conn.set(ctx.keys.ticket(lane), arm.job_id, nx=True))
    else:
        taken = handoff(ctx, lane, holder, arm.job_id)
    if taken:
        enqueue_tickets(ctx, [arm])
        if lost:
            log.warning("sweep.rearmed", lane=lane.member, lost=holder or "missing", job=arm.job_id)
        else:
            log.info("tickets.rearmed", lane=lane.member, was=holder or "none", job=arm.job_id)
    return taken


def wake(ctx: Context, lane: LaneId, holder: str | None) -> bool:
    """A lane without a ticket, or whose ticket waits on a timer, gets a fresh job now
    (:func:`rearm`); one whose job is queued or running is left to it."""
    if holder is not None and holder != TIMER:
        return False
    return rearm(ctx, lane, holder)


def pop_due(ctx: Context, due: Sequence[LaneId], now_ms: int) -> list[Arm]:
    """``lua/pop_due.lua``: take ``due`` lanes off the timers; the arms whose ticket it set."""
    arms = [Arm.new(ctx.keys, lane) for lane in due]
    keys = [ctx.keys.timers, *(ctx.keys.ticket(lane) for lane in due)]
    args: list[scripts.Arg] = [now_ms, len(due), *(lane.member for lane in due)]
    args += [a.job_id for a in arms]
    positions: list[Any] = scripts.call(ctx.conn, "pop_due", keys, args)
    return [arms[int(i) - 1] for i in positions]


def fire_timers(ctx: Context, limit: int = TIMERS_PER_CALL) -> tuple[int, float | None]:
    """Enqueue the tickets whose timer is due; returns (how many, seconds to the next timer)."""
    now_ms = ctx.now_ms()
    head: Any = ctx.conn.zrange(ctx.keys.timers, 0, limit - 1, withscores=True)
    members = [(member, LaneId.parse(member)) for member, score in head if score <= now_ms]
    due = [lane for _, lane in members if lane is not None]
    bad = [member for member, lane in members if lane is None]
    if bad:
        ctx.conn.zrem(ctx.keys.timers, *bad)
        log.warning("tickets.bad_timers", members=[text(m) for m in bad])
    later = [score for _, score in head if score > now_ms]
    wait = (min(later) - now_ms) / 1000 if later else None
    if not due:
        return 0, wait
    armed = pop_due(ctx, due, now_ms)
    enqueue_tickets(ctx, armed)
    return len(armed), 0.0 if len(members) == limit else wait
