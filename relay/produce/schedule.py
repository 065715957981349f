"""Scheduled messages: moving those whose ``timetosend`` has come into their lanes.

A message sent with a future ``timetosend`` waits in ``sched:<kind>:<dev>:<sim>`` (id →
due ms), and ``sched-due`` holds each such schedule's earliest due time. Every worker's
scheduler thread calls :func:`promote_due` about every 100 ms; any number of processes may
call it at once:

1. read the ``sched-due`` members that are due, then (one pipeline) the due ids of each;
2. one MULTI: per lane, ``lua/promote.lua`` moves the ids still in the schedule to the
   lane's tail (an id another promoter or a cancel took first is skipped), corrects the
   lane's ``sched-due`` score and sets its ticket key NX; ``Store.transition`` moves the
   same ids ``scheduled`` → ``queued`` (a no-op for ids no longer scheduled). Being one
   MULTI, a worker never finds an id in a lane while it is still ``scheduled``;
3. enqueue the RQ jobs of the tickets this call set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay import scripts
from relay.connection import text
from relay.context import Context
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.lanes import LaneId
from relay.log import get_logger
from relay.states import State

log = get_logger(__name__)


@dataclass(frozen=True)
class _Due:
    """One lane's schedule with due messages: the lane, its fresh ticket, and the ids read."""

    arm: Arm
    ids: list[str]


@dataclass(frozen=True)
class Promoted:
    """What ``lua/promote.lua`` did for one lane: ids moved, and whether it set the ticket."""

    moved: int
    armed: bool

    @classmethod
    def of(cls, answer: list[Any]) -> Promoted:
        return cls(int(answer[0]), bool(int(answer[1])))


def promote_due(ctx: Context, limit: int = 1000) -> int:
    """Move up to ``limit`` due scheduled messages into their lanes; return how many moved."""
    now_ms = ctx.now_ms()
    lanes = _due_lanes(ctx, now_ms, limit)
    if not lanes:
        return 0
    moved, armed = _promote(ctx, lanes, now_ms)
    if armed:
        enqueue_tickets(ctx, armed)
    if moved:
        log.info(
            "schedule.promoted",
            messages=moved,
            lanes=sum(1 for d in lanes if d.ids),
            tickets=len(armed),
        )
    return moved


def _due_lanes(ctx: Context, now_ms: int, limit: int) -> list[_Due]:
    """The lanes whose earliest due time has come, each with up to its share of due ids."""
    members: list[Any] = ctx.conn.zrangebyscore(
        ctx.keys.sched_due, "-inf", now_ms, start=0, num=limit
    )
    parsed = [(member, LaneId.parse(member)) for member in members]
    lanes = [lane for _, lane in parsed if lane is not None]
    bad = [member for member, lane in parsed if lane is None]
    if bad:
        ctx.conn.zrem(ctx.keys.sched_due, *bad)
        log.warning("schedule.bad_members", members=[text(m) for m in bad])
    with ctx.conn.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.zrangebyscore(ctx.keys.sched(lane), "-inf", now_ms, start=0, num=limit)
        answers: list[Any] = pipe.execute() if lanes else []
    budget = limit
    due = []
    for lane, ids in zip(lanes, answers, strict=True):
        mine = [text(i) for i in ids[:budget]]
        budget -= len(mine)
        due.append(_Due(Arm.new(ctx.keys, lane), mine))
    return due


def promote_lane(
    pipe: Any, ctx: Context, arm: Arm, ids: Sequence[str], now_ms: int
) -> scripts.Pending[Promoted]:
    """Queue ``lua/promote.lua`` on ``pipe``: ``ids`` due in ``arm.lane``'s schedule move to
    the lane's tail; its ``sched-due`` score corrected; its ticket set NX to ``arm.job_id``."""
    k, lane = ctx.keys, arm.lane
    keys = [k.sched_due, k.sched(lane), k.lane(lane), k.ticket(lane)]
    args: list[scripts.Arg] = [now_ms, lane.member, arm.job_id, *ids]
    return scripts.queue(pipe, "promote", keys, args, Promoted.of)


def _promote(ctx: Context, lanes: Sequence[_Due], now_ms: int) -> tuple[int, list[Arm]]:
    """Run promote.lua and the scheduled → queued transition of every lane in one MULTI."""
    with ctx.conn.pipeline(transaction=True) as pipe:
        calls = []
        for due in lanes:
            calls.append(promote_lane(pipe, ctx, due.arm, due.ids, now_ms))
            ctx.store.queue_transition(pipe, due.ids, State.QUEUED, [State.SCHEDULED])
        answers = pipe.execute()
    results = [call.result(answers) for call in calls]
    moved = sum(r.moved for r in results)
    return moved, [due.arm for due, r in zip(lanes, results, strict=True) if r.armed]
