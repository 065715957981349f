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

The sweep re-arms a stalled lane whatever its ticket says (a compare-and-set on the ticket
key: never two new jobs) and logs ``sweep.lane_stalled`` at WARNING. If the old job wakes,
its next claim finds another holder: it may take one batch (atomically, paced and recorded
in flight like any claim, so nothing goes twice and pacing holds), then stops as stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.context import Context
from relay.lanes import LaneId
from relay.store import read_fields, waiting_since_ms

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
class Stall:
    """A stalled lane: what held it, and how long its oldest message has waited."""

    held: Held
    waited_s: float
    head: str


def stalled(ctx: Context, held: Sequence[Held]) -> list[Stall]:
    """The lanes of ``held`` that are stalled (see the module docstring)."""
    bound_ms = ctx.settings.lane_stall_after * 1000
    now_ms = ctx.now_ms()
    suspects = [h for h in held if _may_stall(h, now_ms - bound_ms)]
    if not suspects:
        return []
    k = ctx.keys
    with ctx.conn.pipeline(transaction=False) as pipe:
        for h in suspects:
            pipe.exists(k.progress(h.lane))
            pipe.lindex(k.lane(h.lane), 0)
        raw = pipe.execute()
    heads = [
        (h, head.decode() if isinstance(head, bytes) else str(head))
        for h, moving, head in zip(suspects, raw[::2], raw[1::2], strict=True)
        if not moving and head is not None
    ]
    rows = read_fields(ctx.conn, k, [head for _, head in heads], WAIT_FIELDS)
    found = []
    for (h, head), row in zip(heads, rows, strict=True):
        record = {name: v for name, v in zip(WAIT_FIELDS, row, strict=True) if v is not None}
        since = waiting_since_ms(head, record)
        if since and now_ms - since > bound_ms:
            found.append(Stall(h, (now_ms - since) / 1000, head))
    return found


def _may_stall(held: Held, overdue_before_ms: float) -> bool:
    if held.state in WAITING_TURN:
        return False
    if held.timer_ms is not None:
        return held.timer_ms < overdue_before_ms
    return True
