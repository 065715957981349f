"""Stalled lanes: the sweep judges progress, not processes.

A ticket whose job is ``started`` on a worker with a fresh heartbeat looks healthy, but the
heartbeat comes from the worker's duties thread, not from the job: a job stuck before its
claim (or in a call that never returns) holds its lane while every process looks alive. So
every claim sets the lane's progress key (``Keys.progress``, living one run's bound,
:func:`relay.dispatch.tickets.run_bound_s`), and a lane is *stalled* when

- its oldest message has waited longer than ``RELAY_LANE_STALL_AFTER`` (since its last return
  to the lane, else its queueing: :func:`relay.store.waiting_since_ms`), and
- no claim set its progress key within one run's bound, and
- its ticket is not waiting its turn: not a job queued in its RQ queue (workers are busy
  elsewhere; a new job would only queue behind it), not a timer due within
  ``RELAY_LANE_STALL_AFTER`` (pacing or a backoff), not a job the sweep is still giving its
  grace to appear.

A pool lane (:class:`relay.lanes.PoolLane`) is stalled alike when its oldest message waited
past the bound while no member lane of its kind whose member is *open* (online, with quota
room; urgent ones with ``urgent_over`` pass a spent quota) made progress, and none of those
members' tickets waits its turn. A pool whose members are all offline or at quota is held on
purpose (``relay stats`` says ``held``): no stall.

The sweep re-arms a stalled lane (for a pool lane: its open members' lanes of its kind)
whatever its ticket says (a compare-and-set on the ticket key: never two new jobs) and logs
``sweep.lane_stalled`` at WARNING. If the old job wakes, its next claim finds another
holder: it may take one batch (atomically, paced and recorded in flight like any claim, so
nothing goes twice and pacing holds), then stops as stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from relay.connection import text
from relay.context import Context
from relay.lanes import LaneId, PoolLane
from relay.pools import members
from relay.results.poolstats import PoolReads
from relay.store import read_fields, waiting_since_ms

T = TypeVar("T")

WAIT_FIELDS = ("t_requeued", "t_queued", "timetosend", "t_scheduled")
"""The record fields :func:`relay.store.waiting_since_ms` reads."""
WAITING_TURN = frozenset({"queued", "missing"})
"""Ticket states that wait their turn (see the module docstring)."""


@dataclass(frozen=True)
class Held:
    """A lane holding work, and its ticket: the holder (a job id, ``timer``, None), its
    state (an RQ job status, ``missing``, or ``timer`` with the timer's due time) and the
    worker that started the job."""

    lane: LaneId
    holder: str | None
    state: str
    timer_ms: float | None = None
    worker: str | None = None


@dataclass(frozen=True)
class PoolStall:
    """A stalled pool lane: the tickets of its open members, how long its oldest message
    has waited."""

    lane: PoolLane
    members: list[Held]
    waited_s: float
    head: str


@dataclass(frozen=True)
class Stall:
    """A stalled lane: what held it, and how long its oldest message has waited."""

    held: Held
    waited_s: float
    head: str


def stalled(ctx: Context, held: Sequence[Held]) -> list[Stall]:
    """The lanes of ``held`` that are stalled (see the module docstring)."""
    now_ms = ctx.now_ms()
    suspects = [h for h in held if _may_stall(h, now_ms - _bound_ms(ctx))]
    if not suspects:
        return []
    k = ctx.keys
    with ctx.conn.pipeline(transaction=False) as pipe:
        for h in suspects:
            pipe.exists(k.progress(h.lane))
            pipe.lindex(k.lane(h.lane), 0)
        raw = pipe.execute()
    heads = [
        (h, text(head))
        for h, moving, head in zip(suspects, raw[::2], raw[1::2], strict=True)
        if not moving and head is not None
    ]
    return [Stall(h, waited, head) for h, head, waited in _overdue(ctx, heads)]


def pool_stalled(
    ctx: Context, held: Sequence[Held], waiting: Mapping[PoolLane, int]
) -> list[PoolStall]:
    """The pool lanes of ``waiting`` that are stalled (see the module docstring); ``held``
    are the member lanes with work whose tickets the sweep left as they were."""
    now_ms = ctx.now_ms()
    closed = _closed(ctx, now_ms)
    by_lane = {h.lane: h for h in held}
    suspects: list[tuple[PoolLane, list[Held]]] = []
    for lane, n in sorted(waiting.items()):
        lanes = [p.lane(lane.kind) for p in members(ctx.settings.pools, lane.name)]
        open_ = [m for m in lanes if not _is_closed(closed, m)]
        tickets = [by_lane[m] for m in open_ if m in by_lane]
        overdue = all(_may_stall(h, now_ms - _bound_ms(ctx)) for h in tickets)
        if n and open_ and len(tickets) == len(open_) and overdue:
            suspects.append((lane, tickets))
    if not suspects:
        return []
    k = ctx.keys
    with ctx.conn.pipeline(transaction=False) as pipe:
        for lane, tickets in suspects:
            pipe.lindex(k.pool_lane(lane), 0)
            for h in tickets:
                pipe.exists(k.progress(h.lane))
        raw = iter(pipe.execute())
    heads = []
    for lane, tickets in suspects:
        head = next(raw)
        moving = [next(raw) for _ in tickets]
        if head is not None and not any(moving):
            heads.append(((lane, tickets), text(head)))
    return [PoolStall(lane, t, w, head) for (lane, t), head, w in _overdue(ctx, heads)]


def _overdue(ctx: Context, heads: Sequence[tuple[T, str]]) -> list[tuple[T, str, float]]:
    """Those of ``heads`` (a lane and its oldest id) whose id waited past the bound, with
    how long it waited (s)."""
    if not heads:
        return []
    bound_ms, now_ms = _bound_ms(ctx), ctx.now_ms()
    rows = read_fields(ctx.conn, ctx.keys, [head for _, head in heads], WAIT_FIELDS)
    found = []
    for (what, head), row in zip(heads, rows, strict=True):
        record = {name: v for name, v in zip(WAIT_FIELDS, row, strict=True) if v is not None}
        since = waiting_since_ms(head, record)
        if since and now_ms - since > bound_ms:
            found.append((what, head, (now_ms - since) / 1000))
    return found


def _bound_ms(ctx: Context) -> float:
    return ctx.settings.lane_stall_after * 1000


def _closed(ctx: Context, now_ms: int) -> tuple[set[int], set[str], set[str]]:
    """The devices offline, the device/SIMs whose quota is spent, and those of them whose
    urgent messages pass it."""
    reads = PoolReads(ctx.keys, ctx.settings, now_ms)
    with ctx.conn.pipeline(transaction=False) as pipe:
        reads.queue(pipe)
        pipe.smembers(ctx.keys.offline)
        out = pipe.execute()
    offline = {int(text(d)) for d in out[-1]}
    quotas = reads.parse(out[:-1], offline).quotas
    spent = {q.member for q in quotas if q.spent}
    return offline, spent, {q.member for q in quotas if q.spent and q.urgent_over}


def _is_closed(closed: tuple[set[int], set[str], set[str]], lane: LaneId) -> bool:
    """Whether ``lane``'s member may take nothing of a pool: offline, or its quota spent
    (urgent ones pass it with ``urgent_over``)."""
    offline, spent, over = closed
    member = lane.pair.member
    return lane.device in offline or (member in spent and not (lane.urgent and member in over))


def _may_stall(held: Held, overdue_before_ms: float) -> bool:
    if held.state in WAITING_TURN:
        return False
    if held.timer_ms is not None:
        return held.timer_ms < overdue_before_ms
    return True
