"""The sweep: repairs what crashed processes left behind. Safe to run from many processes.

Every few seconds each worker's duties thread (:mod:`relay.run.duties`) calls :func:`sweep`,
which

- re-arms every lane (``Keys.lanes`` and the pools' members) that holds work, in its own
  lane or its pools' lane of its kind, but whose ticket is lost: the ticket
  key is missing; or it says ``timer`` but the lane is not on ``timers``; or it names an
  RQ job that no longer exists or waits in no queue (seen so across
  :data:`MISSING_JOB_GRACE_S`, since a producer sets the key a moment before it enqueues
  the job, and a worker pops a job a moment before it starts it), that failed, stopped or
  finished, or that was started by a worker that is dead (:func:`relay.processes.is_dead`)
  or that no heartbeat names (seen so across :data:`MISSING_JOB_GRACE_S`);
- hands the pooled messages waiting in the lanes of offline devices back to their pools
  (:mod:`relay.handback`);
- re-arms every lane that stalled, whatever its ticket says: its oldest message waited past
  ``RELAY_LANE_STALL_AFTER`` while no claim made progress on it, and the open members'
  lanes of a pool lane stalled so (:mod:`relay.run.stalls`);
- gives back the leases dead processes held, and forgets processes silent for long;
- takes dead workers' in-flight batches to verification
  (:func:`relay.dispatch.recovery.recover_inflight`) and verifies the batches that are due
  (:func:`relay.dispatch.verify.verify_due`).

Every re-arm is a compare-and-set on the ticket key (``lua/handoff.lua`` or ``SET NX``), so
two sweeps never arm the same lane twice; a duplicate job that slips through anyway (the
old one was only slow) is harmless: ``claim.lua`` makes it a stale run that stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rq import Queue
from rq.job import Job

from relay.connection import maybe_text
from relay.context import Context
from relay.dispatch.recovery import recover_inflight
from relay.dispatch.tickets import TIMER, rearm
from relay.dispatch.verify import verify_due
from relay.handback import hand_back
from relay.lanes import KINDS, LaneId, PoolLane, device_sims, pool_lanes
from relay.log import get_logger
from relay.pools import members, pools_of
from relay.presence import offline_devices
from relay.processes import Beat, Lease, is_dead, read_beats
from relay.run.stalls import Held, pool_stalled, stalled

log = get_logger(__name__)

PROCESS_FORGET_AFTER_S = 3600.0
"""A dead process's heartbeat entry is removed after this long."""
MISSING_JOB_GRACE_S = 2.0
"""A ticket naming a job that does not exist is re-armed only when seen so this long."""
DEAD_JOB_STATES = frozenset({"failed", "stopped", "canceled", "finished"})
"""RQ job states that hold no running ticket (a finished run that still holds its ticket
died between the end of its work and its hand-over)."""

_suspects: dict[tuple[str, LaneId], tuple[str, float]] = {}


@dataclass
class SweepReport:
    """What one sweep did."""

    rearmed: list[str] = field(default_factory=list)
    handed_back: int = 0
    """Pooled ids moved from offline members' lanes back to their pools."""
    leases_released: list[str] = field(default_factory=list)
    processes_forgotten: list[str] = field(default_factory=list)
    recovered: int = 0
    verified: int = 0


def sweep(ctx: Context, *, missing_grace: float = MISSING_JOB_GRACE_S) -> SweepReport:
    """One sweep (see the module docstring); returns what it did."""
    report = SweepReport()
    report.handed_back = sum(
        n for h in hand_back(ctx, offline_devices(ctx)) for n in h.moved.values()
    )
    beats = read_beats(ctx)
    report.rearmed = rearm_lost_tickets(ctx, beats, missing_grace=missing_grace)
    report.leases_released, report.processes_forgotten = release_dead(ctx, beats)
    try:
        report.recovered = recover_inflight(ctx)
        report.verified = verify_due(ctx)
    except Exception:
        log.exception("sweep.recovery_failed")
    if report.rearmed or report.leases_released or report.recovered or report.verified:
        log.info(
            "sweep.repaired",
            rearmed=report.rearmed,
            leases=report.leases_released,
            recovered=report.recovered,
            verified=report.verified,
        )
    return report


# --- lost tickets -------------------------------------------------------------------------


def rearm_lost_tickets(
    ctx: Context, beats: dict[str, Beat], *, missing_grace: float = MISSING_JOB_GRACE_S
) -> list[str]:
    """Re-arm each lane with work whose ticket is lost, or that stalled
    (:mod:`relay.run.stalls`); returns the lane members re-armed."""
    k = ctx.keys
    pools = ctx.settings.pools
    pairs = sorted({*device_sims(ctx.conn, k), *(p for n in pools for p in members(pools, n))})
    lanes = [pair.lane(kind) for pair in pairs for kind in KINDS]
    waiting = _pool_waiting(ctx)
    with ctx.conn.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.llen(k.lane(lane))
            pipe.get(k.ticket(lane))
            pipe.zscore(k.timers, lane.member)
        raw = pipe.execute()
    busy = [
        (lane, maybe_text(raw[3 * i + 1]), raw[3 * i + 2])
        for i, lane in enumerate(lanes)
        if int(raw[3 * i]) > 0
        or any(waiting[PoolLane(lane.kind, n)] for n in pools_of(pools, lane.pair))
    ]
    jobs = _job_states(ctx, [h for _, h, _ in busy if h and h != TIMER])
    held = [_held(lane, holder, score, jobs) for lane, holder, score in busy]
    lost = [h for h in held if _is_lost(ctx, h, beats, missing_grace)]
    rearmed = [h.lane.member for h in lost if rearm(ctx, h.lane, h.holder, lost=True)]
    gone = set(lost)
    for stall in stalled(ctx, [h for h in held if h not in gone]):
        h = stall.held
        log.warning(
            "sweep.lane_stalled",
            lane=h.lane.member,
            waited_s=round(stall.waited_s, 1),
            holder=h.holder,
            job_state=h.state,
            worker=h.worker,
            head=stall.head,
        )
        if rearm(ctx, h.lane, h.holder):
            rearmed.append(h.lane.member)
    left = [h for h in held if h not in gone and h.lane.member not in rearmed]
    return rearmed + _rearm_stalled_pools(ctx, left, waiting)


def _rearm_stalled_pools(ctx: Context, held: list[Held], waiting: dict[PoolLane, int]) -> list[str]:
    """Re-arm the open members' lanes of each stalled pool lane; returns those re-armed."""
    rearmed = []
    for stall in pool_stalled(ctx, held, waiting):
        log.warning(
            "sweep.lane_stalled",
            lane=stall.lane.member,
            waited_s=round(stall.waited_s, 1),
            holders={h.lane.member: h.holder for h in stall.members},
            job_states={h.lane.member: h.state for h in stall.members},
            head=stall.head,
        )
        rearmed += [h.lane.member for h in stall.members if rearm(ctx, h.lane, h.holder)]
    return rearmed


def _held(
    lane: LaneId,
    holder: str | None,
    timer_score: float | None,
    jobs: dict[str, tuple[str | None, str | None]],
) -> Held:
    if holder is None:
        return Held(lane, None, "none")
    if holder == TIMER:
        return Held(lane, holder, TIMER, None if timer_score is None else float(timer_score))
    if holder not in jobs:
        return Held(lane, holder, "missing")
    status, worker = jobs[holder]
    return Held(lane, holder, status or "unknown", worker=worker)


def _pool_waiting(ctx: Context) -> dict[PoolLane, int]:
    """How many ids wait in each pool lane (its members' tickets serve them too)."""
    lanes = [lane for name in ctx.settings.pools for lane in pool_lanes(name)]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.llen(ctx.keys.pool_lane(lane))
        return {lane: int(n) for lane, n in zip(lanes, pipe.execute(), strict=True)}


def _job_states(ctx: Context, job_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """RQ job id → (status, worker name); absent for jobs that do not exist.

    A job ``queued`` but in no queue counts as absent: a worker popped it (RQ dequeues
    from several queues with BLPOP) and died before starting it.
    """
    with ctx.conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), ["status", "worker_name", "origin"])
        raw = [[maybe_text(v) for v in row] for row in pipe.execute()]
    found = {job: row for job, row in zip(job_ids, raw, strict=True) if row[0] is not None}
    queued = [(job, row[2] or "") for job, row in found.items() if row[0] == "queued"]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for job, origin in queued:
            pipe.lpos(Queue.redis_queue_namespace_prefix + origin, job)
        positions = pipe.execute()
    popped = {job for (job, _), pos in zip(queued, positions, strict=True) if pos is None}
    return {job: (row[0], row[1] or None) for job, row in found.items() if job not in popped}


def _is_lost(ctx: Context, held: Held, beats: dict[str, Beat], missing_grace: float) -> bool:
    holder = held.holder
    if holder is None:
        return True
    if holder == TIMER:
        return held.timer_ms is None
    if held.state == "missing":
        return _missing_long_enough(ctx, held.lane, holder, missing_grace)
    if held.state in DEAD_JOB_STATES:
        return True
    if held.state != "started" or held.worker is None:
        return False
    if held.worker not in beats:  # a worker relay never heard of, or one long forgotten
        return _missing_long_enough(ctx, held.lane, holder, missing_grace)
    return is_dead(ctx, beats[held.worker])


def _missing_long_enough(ctx: Context, lane: LaneId, holder: str, grace: float) -> bool:
    """True once ``holder`` has named a missing job for ``grace`` seconds (seen by this process)."""
    key = (ctx.keys.prefix, lane)
    now = ctx.clock.now()
    seen = _suspects.get(key)
    if seen is None or seen[0] != holder:
        _suspects[key] = (holder, now)
        seen = _suspects[key]
    if now - seen[1] >= grace:
        _suspects.pop(key, None)
        return True
    return False


# --- dead processes and their leases ------------------------------------------------------


def release_dead(ctx: Context, beats: dict[str, Beat]) -> tuple[list[str], list[str]]:
    """Give back known leases held by dead processes; forget long-dead processes."""
    dead = {name: b for name, b in beats.items() if is_dead(ctx, b)}
    if not dead:
        return [], []
    pending: Any = ctx.conn.smembers(ctx.keys.pending_devices)
    names = ["devices-refresh", *(f"reconcile:{maybe_text(d)}" for d in pending)]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(ctx.keys.lease(name))
        holders = [maybe_text(h) for h in pipe.execute()]
    released = [
        name
        for name, holder in zip(names, holders, strict=True)
        if holder in dead and Lease(ctx.conn, ctx.keys.lease(name), holder, 0).release()
    ]
    now_ms = ctx.now_ms()
    forgotten = [n for n, b in dead.items() if b.age_s(now_ms) > PROCESS_FORGET_AFTER_S]
    if forgotten:
        ctx.conn.hdel(ctx.keys.processes, *forgotten)
    return released, forgotten
