"""The sweep: repairs what crashed processes left behind. Safe to run from many processes.

Every few seconds each worker's scheduler thread calls :func:`sweep`, which

- re-arms every lane (``Keys.lanes``) that holds work but whose ticket is lost: the ticket
  key is missing; or it says ``timer`` but the lane is not on ``timers``; or it names an
  RQ job that no longer exists or waits in no queue (seen so across
  :data:`MISSING_JOB_GRACE_S`, since a producer sets the key a moment before it enqueues
  the job, and a worker pops a job a moment before it starts it), that failed or stopped,
  or that was started by a worker whose heartbeat in ``Keys.processes`` went silent;
- forgets processes silent for long, and gives back the leases such dead processes held;
- calls ``relay.dispatch.recovery``'s ``recover_inflight`` and ``verify_due``.

Every re-arm is a compare-and-set on the ticket key (``lua/handoff.lua`` or ``SET NX``), so
two sweeps never arm the same lane twice; a duplicate job that slips through anyway (the
old one was only slow) is harmless: ``claim.lua`` makes it a stale run that stops.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from rq import Queue
from rq.job import Job

from relay import scripts
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.keys import BULK, URGENT, LaneKind
from relay.log import get_logger

if TYPE_CHECKING:
    from relay.context import Context

log = get_logger(__name__)

PROCESS_DEAD_AFTER_S = 5.0
"""A process whose heartbeat is older than this is taken as dead (heartbeats come every second)."""
PROCESS_FORGET_AFTER_S = 3600.0
"""A dead process's heartbeat entry is removed after this long."""
MISSING_JOB_GRACE_S = 2.0
"""A ticket naming a job that does not exist is re-armed only when seen so this long."""
DEAD_JOB_STATES = frozenset({"failed", "stopped", "canceled"})

_suspects: dict[tuple[str, str], tuple[str, float]] = {}


@dataclass
class SweepReport:
    """What one sweep did. ``recovered``/``verified`` are None when recovery is absent."""

    rearmed: list[str] = field(default_factory=list)
    leases_released: list[str] = field(default_factory=list)
    processes_forgotten: list[str] = field(default_factory=list)
    recovered: int | None = None
    verified: int | None = None


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def sweep(ctx: Context, *, missing_grace: float = MISSING_JOB_GRACE_S) -> SweepReport:
    """One sweep (see the module docstring); returns what it did."""
    report = SweepReport()
    beats = process_heartbeats(ctx)
    report.rearmed = rearm_lost_tickets(ctx, beats, missing_grace=missing_grace)
    report.leases_released, report.processes_forgotten = release_dead(ctx, beats)
    report.recovered, report.verified = _recover(ctx)
    if report.rearmed or report.leases_released or report.recovered or report.verified:
        log.info(
            "sweep.repaired",
            rearmed=report.rearmed,
            leases=report.leases_released,
            recovered=report.recovered,
            verified=report.verified,
        )
    return report


# --- processes ----------------------------------------------------------------------------


def heartbeat(ctx: Context, name: str, kind: str, **extra: Any) -> None:
    """Record that process ``name`` (e.g. an RQ worker name) is alive now."""
    beat = {"kind": kind, "seen": ctx.now_ms(), **extra}
    ctx.conn.hset(ctx.keys.processes, name, json.dumps(beat))


def forget_process(ctx: Context, name: str) -> None:
    """Remove ``name``'s heartbeat (on a clean exit)."""
    ctx.conn.hdel(ctx.keys.processes, name)


def process_heartbeats(ctx: Context) -> dict[str, float]:
    """Process name → seconds since its last heartbeat."""
    now = ctx.clock.now()
    ages: dict[str, float] = {}
    for name, raw in ctx.conn.hgetall(ctx.keys.processes).items():
        seen = _seen_seconds(raw)
        if seen is not None:
            ages[_text(name) or ""] = now - seen
    return ages


def _seen_seconds(raw: bytes | str) -> float | None:
    try:
        seen = json.loads(raw).get("seen")
    except (ValueError, AttributeError):
        return None
    if not isinstance(seen, int | float):
        return None
    return seen / 1000 if seen > 1e11 else float(seen)


def is_dead(beats: dict[str, float], name: str | None) -> bool:
    """Whether ``name`` is a relay process whose heartbeat went silent."""
    return name is not None and name in beats and beats[name] > PROCESS_DEAD_AFTER_S


# --- lost tickets -------------------------------------------------------------------------


def _lanes(ctx: Context) -> list[tuple[int, int]]:
    lanes = []
    for member in ctx.conn.smembers(ctx.keys.lanes):
        dev, _, sim = (_text(member) or "").partition(":")
        try:
            lanes.append((int(dev), int(sim)))
        except ValueError:
            continue
    return lanes


def rearm_lost_tickets(
    ctx: Context, beats: dict[str, float], *, missing_grace: float = MISSING_JOB_GRACE_S
) -> list[str]:
    """Re-arm each lane with work whose ticket is lost; returns the members re-armed."""
    k, lanes = ctx.keys, _lanes(ctx)
    slots = [(kind, dev, sim) for dev, sim in lanes for kind in (URGENT, BULK)]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for kind, dev, sim in slots:
            pipe.llen(k.lane(kind, dev, sim))
            pipe.get(k.ticket(kind, dev, sim))
            pipe.zscore(k.timers, f"{kind}:{dev}:{sim}")
        raw = pipe.execute()
    rows = [
        (slot, int(raw[3 * i]), _text(raw[3 * i + 1]), raw[3 * i + 2])
        for i, slot in enumerate(slots)
    ]
    busy = [(slot, holder, on_timer) for slot, depth, holder, on_timer in rows if depth > 0]
    jobs = _job_states(ctx, [h for _, h, _ in busy if h and h != "timer"])
    rearmed = []
    for (kind, dev, sim), holder, on_timer in busy:
        lost = _is_lost(
            ctx, holder, on_timer is not None, jobs, beats, missing_grace, (kind, dev, sim)
        )
        if lost and _rearm(ctx, kind, dev, sim, holder):
            rearmed.append(f"{kind}:{dev}:{sim}")
    return rearmed


def _job_states(ctx: Context, job_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """RQ job id → (status, worker name); absent for jobs that do not exist.

    A job ``queued`` but in no queue counts as absent: a worker popped it (RQ dequeues
    from several queues with BLPOP) and died before starting it.
    """
    with ctx.conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), ["status", "worker_name", "origin"])
        raw = [[_text(v) for v in row] for row in pipe.execute()]
    found = {job: row for job, row in zip(job_ids, raw, strict=True) if row[0] is not None}
    queued = [(job, row[2] or "") for job, row in found.items() if row[0] == "queued"]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for job, origin in queued:
            pipe.lpos(Queue.redis_queue_namespace_prefix + origin, job)
        positions = pipe.execute()
    popped = {job for (job, _), pos in zip(queued, positions, strict=True) if pos is None}
    return {job: (row[0], row[1] or None) for job, row in found.items() if job not in popped}


def _is_lost(
    ctx: Context,
    holder: str | None,
    on_timer: bool,
    jobs: dict[str, tuple[str | None, str | None]],
    beats: dict[str, float],
    missing_grace: float,
    slot: tuple[LaneKind, int, int],
) -> bool:
    if holder is None:
        return True
    if holder == "timer":
        return not on_timer
    if holder not in jobs:
        return _missing_long_enough(ctx, slot, holder, missing_grace)
    status, worker = jobs[holder]
    if status in DEAD_JOB_STATES:
        return True
    return status == "started" and is_dead(beats, worker)


def _missing_long_enough(
    ctx: Context, slot: tuple[LaneKind, int, int], holder: str, grace: float
) -> bool:
    """True once ``holder`` has named a missing job for ``grace`` seconds (seen by this process)."""
    key = (ctx.keys.prefix, ":".join(map(str, slot)))
    now = ctx.clock.now()
    seen = _suspects.get(key)
    if seen is None or seen[0] != holder:
        _suspects[key] = (holder, now)
        seen = _suspects[key]
    if now - seen[1] >= grace:
        _suspects.pop(key, None)
        return True
    return False


def _rearm(ctx: Context, kind: LaneKind, dev: int, sim: int, holder: str | None) -> bool:
    """Give the lane's ticket to a fresh job if it still holds ``holder``; enqueue that job."""
    arm = Arm.new(kind, dev, sim)
    ticket, member = ctx.keys.ticket(kind, dev, sim), f"{kind}:{dev}:{sim}"
    if holder is None:
        taken = bool(ctx.conn.set(ticket, arm.job_id, nx=True))
    else:
        args = [holder, arm.job_id, "", "0", member]
        taken = bool(scripts.run(ctx.conn, "handoff", [ticket, ctx.keys.timers], args))
    if taken:
        enqueue_tickets(ctx.conn, ctx.keys, [arm])
        log.warning("sweep.rearmed", lane=member, lost=holder or "missing", job=arm.job_id)
    return taken


# --- dead processes and their leases ------------------------------------------------------


def release_dead(ctx: Context, beats: dict[str, float]) -> tuple[list[str], list[str]]:
    """Give back known leases held by dead processes; forget long-dead processes."""
    dead = {name for name, age in beats.items() if age > PROCESS_DEAD_AFTER_S}
    if not dead:
        return [], []
    names = ["devices-refresh"]
    names += [f"reconcile:{_text(d)}" for d in ctx.conn.smembers(ctx.keys.pending_devices)]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(ctx.keys.lease(name))
        holders = [_text(h) for h in pipe.execute()]
    released = [
        name
        for name, holder in zip(names, holders, strict=True)
        if holder in dead and _release_lease(ctx, ctx.keys.lease(name), holder)
    ]
    forgotten = [name for name in dead if beats[name] > PROCESS_FORGET_AFTER_S]
    if forgotten:
        ctx.conn.hdel(ctx.keys.processes, *forgotten)
    return released, forgotten


def _release_lease(ctx: Context, key: str, holder: str) -> bool:
    """Delete lease ``key`` if it is still held by ``holder`` (WATCH/MULTI compare-and-delete)."""
    with ctx.conn.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            if _text(pipe.get(key)) != holder:
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def _recover(ctx: Context) -> tuple[int | None, int | None]:
    """``relay.dispatch.recovery``'s inflight recovery and verification, when the module exists."""
    try:
        recovery = importlib.import_module("relay.dispatch.recovery")
    except ImportError:
        return None, None
    recovered: int | None = None
    verified: int | None = None
    try:
        recovered = int(recovery.recover_inflight(ctx))
        verified = int(recovery.verify_due(ctx))
    except Exception:
        log.exception("sweep.recovery_failed")
    return recovered, verified
