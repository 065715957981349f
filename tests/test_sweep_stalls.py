"""The sweep judges progress, not processes: a ticket job that looks healthy (started, on a
worker whose heartbeat is fresh) but makes no progress is re-armed once its lane's oldest
message waited past ``RELAY_LANE_STALL_AFTER``; a job started by a worker no heartbeat names
counts as dead; every claim refreshes the lane's progress key; a ticket job's RQ timeout is
one run's bound, not RQ's 300 s. (FakeClock; real Redis and fakeredis; and a real worker
process against the simulator over HTTP.)"""

from __future__ import annotations

import math
import time

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.connection import maybe_text, text
from relay.context import Context
from relay.devices import Pace
from relay.dispatch.claim import claim
from relay.dispatch.tickets import Arm, enqueue_tickets, run_bound_s
from relay.lanes import LaneId
from relay.processes import beat, read_beats
from relay.produce.producer import Producer
from relay.run.sweep import sweep
from relay.simulator import SimDevice
from tests.fixtures.context import MakeCtx
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.waiting import eventually
from tests.fixtures.workers import StartWorkers

DEV, SIM = 270, 0
URGENT = LaneId("u", DEV, SIM)
BULK = LaneId("b", DEV, SIM)
STALL_S = 60.0
"""``RELAY_LANE_STALL_AFTER`` by default."""


@pytest.fixture
def fctx(make_ctx: MakeCtx) -> Context:
    return make_ctx(clock=FakeClock(time.time()))


def fake_clock(ctx: Context) -> FakeClock:
    assert isinstance(ctx.clock, FakeClock)
    return ctx.clock


def send(ctx: Context, *, urgent: bool = True) -> str:
    item = {"sendto": "+4915712345678", "body": "otp 1234", "device_id": DEV, "urgent": urgent}
    return Producer(ctx).send_many([item])[0]


def ticket(ctx: Context, lane: LaneId = URGENT) -> str | None:
    return maybe_text(ctx.conn.get(ctx.keys.ticket(lane)))


def queued_jobs(ctx: Context, lane: LaneId = URGENT) -> list[str]:
    queue = ctx.keys.urgent_queue if lane.kind == "u" else ctx.keys.bulk_queue
    return [text(j) for j in ctx.conn.lrange(f"rq:queue:{queue}", 0, -1)]


def started_job(ctx: Context, worker: str, lane: LaneId = URGENT, status: str = "started") -> str:
    """A ticket job of ``lane`` that ``worker`` started (taken out of its queue), holding
    the ticket."""
    arm = Arm.new(ctx.keys, lane)
    enqueue_tickets(ctx, [arm])
    queue = ctx.keys.urgent_queue if lane.kind == "u" else ctx.keys.bulk_queue
    ctx.conn.lrem(f"rq:queue:{queue}", 0, arm.job_id)
    ctx.conn.hset(f"rq:job:{arm.job_id}", mapping={"status": status, "worker_name": worker})
    ctx.conn.set(ctx.keys.ticket(lane), arm.job_id)
    return arm.job_id


def otp_held_by_a_live_worker(ctx: Context) -> str:
    """An urgent message whose ticket job worker ``w-alive`` started; the job's id."""
    send(ctx)
    beat(ctx, "w-alive", "worker")
    return started_job(ctx, "w-alive")


def later(ctx: Context, seconds: float, *alive: str) -> None:
    """Time passes; the workers named keep beating (their duties threads are fine)."""
    fake_clock(ctx).advance(seconds)
    for name in alive:
        beat(ctx, name, "worker")


# --- a started job on a live worker, making no progress ---------------------------------------


def test_a_started_job_on_a_live_worker_that_makes_no_progress_is_rearmed_after_the_bound(
    fctx: Context,
) -> None:
    stuck = otp_held_by_a_live_worker(fctx)
    assert sweep(fctx).rearmed == []
    later(fctx, STALL_S - 1, "w-alive")
    assert sweep(fctx).rearmed == []  # the OTP waited less than the bound
    later(fctx, 2, "w-alive")
    with capture_logs() as logs:
        assert sweep(fctx).rearmed == [URGENT.member]
    fresh = ticket(fctx)
    assert fresh not in (None, stuck)
    assert fresh in queued_jobs(fctx)
    stalls = [e for e in logs if e["event"] == "sweep.lane_stalled"]
    assert len(stalls) == 1
    assert stalls[0]["log_level"] == "warning"
    assert (stalls[0]["lane"], stalls[0]["holder"]) == (URGENT.member, stuck)
    assert (stalls[0]["job_state"], stalls[0]["worker"]) == ("started", "w-alive")
    assert stalls[0]["waited_s"] > STALL_S
    assert sweep(fctx).rearmed == []  # the new job waits its turn in the queue


def test_a_lane_whose_runs_make_progress_is_left_alone_however_long_its_head_waited(
    fctx: Context,
) -> None:
    running = otp_held_by_a_live_worker(fctx)
    fctx.conn.set(fctx.keys.progress(URGENT), running, px=60_000)  # as each claim does
    later(fctx, 10 * STALL_S, "w-alive")
    assert sweep(fctx).rearmed == []
    fctx.conn.delete(fctx.keys.progress(URGENT))  # no claim within one run's bound
    assert sweep(fctx).rearmed == [URGENT.member]
    assert ticket(fctx) not in (None, running)


def test_every_claim_refreshes_the_lanes_progress_key_for_one_runs_bound(fctx: Context) -> None:
    send(fctx)
    job = ticket(fctx)
    assert job is not None
    got = claim(fctx, URGENT, Pace(0, 10), job=job, worker="w1")
    assert got.verdict == "released"
    assert maybe_text(fctx.conn.get(fctx.keys.progress(URGENT))) == job
    ttl_ms = int(fctx.conn.pttl(fctx.keys.progress(URGENT)))
    assert 0 < ttl_ms <= run_bound_s(fctx.settings) * 1000


def test_a_ticket_waiting_its_turn_is_not_judged_stalled(fctx: Context) -> None:
    send(fctx)  # its ticket's job waits in the urgent queue: workers are busy elsewhere
    send(fctx, urgent=False)
    fctx.conn.set(fctx.keys.ticket(BULK), "timer")  # bulk waits for pacing, or a backoff
    fctx.conn.zadd(fctx.keys.timers, {BULK.member: fctx.now_ms() + 600_000})
    later(fctx, 5 * STALL_S)
    assert sweep(fctx).rearmed == []


def test_a_timer_overdue_past_the_bound_is_rearmed(fctx: Context) -> None:
    send(fctx, urgent=False)
    fctx.conn.set(fctx.keys.ticket(BULK), "timer")
    fctx.conn.zadd(fctx.keys.timers, {BULK.member: fctx.now_ms()})
    later(fctx, STALL_S + 1)  # no duties thread fired it
    assert sweep(fctx).rearmed == [BULK.member]
    assert ticket(fctx, BULK) in queued_jobs(fctx, BULK)
    assert fctx.conn.zscore(fctx.keys.timers, BULK.member) is None


# --- a started job whose worker no heartbeat names ---------------------------------------------


def test_a_job_started_by_a_worker_no_heartbeat_names_counts_as_dead(fctx: Context) -> None:
    send(fctx)
    orphan = started_job(fctx, "w-never-heard-of")
    assert sweep(fctx).rearmed == []  # its worker may be about to write its first beat
    later(fctx, 3)
    assert sweep(fctx).rearmed == [URGENT.member]
    assert ticket(fctx) not in (None, orphan)


# --- the ticket job's timeout -------------------------------------------------------------------


def test_a_ticket_jobs_rq_timeout_is_one_runs_bound(fctx: Context) -> None:
    arm = Arm.new(fctx.keys, URGENT)
    enqueue_tickets(fctx, [arm])
    job = Job.fetch(arm.job_id, connection=fctx.conn, serializer=JSONSerializer)
    settings = fctx.settings
    assert job.timeout == math.ceil(run_bound_s(settings))
    assert run_bound_s(settings) >= 1.0 + settings.gateway_timeout
    assert job.timeout < 300  # RQ's default, which held a stuck lane for five minutes


# --- with a real worker process and the simulator ----------------------------------------------


def test_an_otp_held_by_a_started_job_that_never_claims_still_reaches_the_gateway(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.2, delaybetweeneachsms=0.05)])
    ctx = make_ctx(sim, lane_stall_after=1.0)
    [worker] = start_workers(1, ctx.settings)
    eventually(lambda: len(read_beats(ctx)) == 1, 30, "the worker's heartbeat")
    [name] = read_beats(ctx)
    # a job "started" on that live worker holds the urgent lane and never claims
    stuck = Arm.new(ctx.keys, URGENT).job_id
    ctx.conn.hset(f"rq:job:{stuck}", mapping={"status": "started", "worker_name": name})
    ctx.conn.set(ctx.keys.ticket(URGENT), stuck)
    send(ctx)
    eventually(lambda: len(sim.ledger()) == 1, 30, "the OTP stored at the gateway")
    assert "sweep.lane_stalled" in worker.log()
    assert ticket(ctx) != stuck
