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
from relay.context import Context
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.keys import BULK, URGENT, LaneKind
from relay.log import get_logger
from relay.states import State

log = get_logger(__name__)


@dataclass(frozen=True)
class _Due:
    """One lane's schedule with due messages: its ``sched-due`` member and the ids read."""

    member: str
    arm: Arm
    ids: list[str]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_member(member: bytes | str) -> tuple[LaneKind, int, int] | None:
    """``(kind, dev, sim)`` of a ``sched-due`` member ``"kind:dev:sim"``; None when malformed."""
    parts = _text(member).split(":")
    if len(parts) != 3 or parts[0] not in (URGENT, BULK):
        return None
    try:
        kind: LaneKind = URGENT if parts[0] == URGENT else BULK
        return kind, int(parts[1]), int(parts[2])
    except ValueError:
        return None


def promote_due(ctx: Context, limit: int = 1000) -> int:
    """Move up to ``limit`` due scheduled messages into their lanes; return how many moved."""
    now_ms = ctx.now_ms()
    lanes = _due_lanes(ctx, now_ms, limit)
    if not lanes:
        return 0
    moved, armed = _promote(ctx, lanes, now_ms)
    if armed:
        enqueue_tickets(ctx.conn, ctx.keys, armed)
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
    lanes, bad = [], []
    for member in members:
        lane = parse_member(member)
        if lane is None:
            bad.append(member)
        else:
            lanes.append((_text(member), lane))
    if bad:
        ctx.conn.zrem(ctx.keys.sched_due, *bad)
        log.warning("schedule.bad_members", members=[_text(m) for m in bad])
    with ctx.conn.pipeline(transaction=False) as pipe:
        for _, (kind, dev, sim) in lanes:
            pipe.zrangebyscore(ctx.keys.sched(kind, dev, sim), "-inf", now_ms, start=0, num=limit)
        answers: list[Any] = pipe.execute() if lanes else []
    budget = limit
    due = []
    for (member, lane), ids in zip(lanes, answers, strict=True):
        mine = [_text(i) for i in ids[:budget]]
        budget -= len(mine)
        due.append(_Due(member, Arm.new(*lane), mine))
    return due


def _promote(ctx: Context, lanes: Sequence[_Due], now_ms: int) -> tuple[int, list[Arm]]:
    """Run promote.lua and the scheduled → queued transition of every lane in one MULTI."""
    k = ctx.keys
    with ctx.conn.pipeline(transaction=True) as pipe:
        for due in lanes:
            a = due.arm
            keys = [
                k.sched_due,
                k.sched(a.kind, a.dev, a.sim),
                k.lane(a.kind, a.dev, a.sim),
                k.ticket(a.kind, a.dev, a.sim),
            ]
            scripts.run(pipe, "promote", keys, [now_ms, due.member, a.job_id, *due.ids])
            if due.ids:
                ctx.store.transition(due.ids, State.QUEUED, [State.SCHEDULED], client=pipe)
        results = iter(pipe.execute())
    moved, armed = 0, []
    for due in lanes:
        count, set_ticket = next(results)
        if due.ids:
            next(results)
        moved += int(count)
        if int(set_ticket):
            armed.append(due.arm)
    return moved, armed
