"""The worker: the RQ worker class, the sweep (faked dead workers, FakeClock), and REAL worker
processes against the simulator over HTTP: pacing with two processes, urgent ahead of a
backlog, a worker killed with SIGKILL, a graceful SIGTERM, the supervisor of N processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from rq.serializers import JSONSerializer

from relay.clock import FakeClock
from relay.connection import maybe_text, text
from relay.context import Context
from relay.devices import REFRESH_LEASE, sync_devices
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.lanes import LaneId, LaneKind
from relay.processes import beat
from relay.produce.producer import Producer
from relay.run.burst import is_idle, run_until_idle
from relay.run.sweep import sweep
from relay.run.worker import RelayWorker, make_worker
from relay.simulator import SimDevice, Simulator
from tests.fixtures.context import MakeCtx
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.waiting import eventually
from tests.fixtures.workers import StartWorkers

DEV, SIM = 260, 0
DEAD_AFTER_S = 10.0
"""``RELAY_PROCESS_DEAD_AFTER`` by default."""


def send(
    ctx: Context, n: int, dev: int, sim: int = 0, urgent: bool = False, tag: str = "m"
) -> list[str]:
    items = [
        {
            "sendto": f"+49157{dev}{sim}{i:05d}",
            "body": f"{tag}{i}",
            "device_id": dev,
            "sim": sim,
            "urgent": urgent,
        }
        for i in range(n)
    ]
    return Producer(ctx).send_many(items)


def states(ctx: Context, ids: list[str]) -> Counter[str]:
    return Counter(m.state.value for m in ctx.store.get_many(ids) if m is not None)


# --- the worker class ----------------------------------------------------------------------


def test_relay_worker_listens_urgent_first_on_both_servers(ctx: Context) -> None:
    worker = make_worker(ctx, install_signals=False)
    assert isinstance(worker, RelayWorker)
    assert worker.queue_names() == [
        ctx.keys.urgent_queue,
        ctx.keys.bulk_queue,
        ctx.keys.webhook_queue,
    ]
    assert worker.ip_address  # fakeredis's CLIENT INFO does not break it
    assert worker.serializer is JSONSerializer


def test_run_until_idle_on_an_idle_relay(make_ctx: MakeCtx, simulator: Simulator) -> None:
    ctx = make_ctx(simulator)
    assert is_idle(ctx)
    assert run_until_idle(ctx, 5)


def test_run_until_idle_gives_up_at_its_timeout(make_ctx: MakeCtx, simulator: Simulator) -> None:
    ctx = make_ctx(gateway_url=simulator.url, gateway_token="bad-token-1")
    ids = send(ctx, 2, DEV)
    assert run_until_idle(ctx, 1.0) is False
    assert states(ctx, ids) == {"queued": 2}  # a bad token never rejects messages


# --- the sweep (faked dead workers) ------------------------------------------------------------


@pytest.fixture
def fctx(make_ctx: MakeCtx) -> Context:
    return make_ctx(clock=FakeClock(time.time()))


def lane_with_work(ctx: Context, kind: LaneKind = "b", dev: int = DEV) -> None:
    ctx.conn.sadd(ctx.keys.lanes, f"{dev}:{SIM}")
    ctx.conn.rpush(ctx.keys.lane(LaneId(kind, dev, SIM)), "x1")


def ticket(ctx: Context, kind: LaneKind = "b", dev: int = DEV) -> str | None:
    return maybe_text(ctx.conn.get(ctx.keys.ticket(LaneId(kind, dev, SIM))))


def queued_jobs(ctx: Context) -> list[str]:
    return [text(j) for j in ctx.conn.lrange(f"rq:queue:{ctx.keys.bulk_queue}", 0, -1)]


def fake_job(ctx: Context, status: str, worker: str = "", dev: int = DEV) -> str:
    arm = Arm.new(ctx.keys, LaneId("b", dev, SIM))
    enqueue_tickets(ctx, [arm])
    ctx.conn.delete(f"rq:queue:{ctx.keys.bulk_queue}")
    ctx.conn.hset(f"rq:job:{arm.job_id}", mapping={"status": status, "worker_name": worker})
    ctx.conn.set(ctx.keys.ticket(LaneId("b", dev, SIM)), arm.job_id)
    return arm.job_id


def test_sweep_rearms_a_lane_whose_ticket_is_missing(fctx: Context) -> None:
    lane_with_work(fctx)
    fctx.conn.sadd(fctx.keys.lanes, "261:0")  # a lane without work is left alone
    report = sweep(fctx)
    assert report.rearmed == [f"b:{DEV}:{SIM}"]
    assert ticket(fctx) in queued_jobs(fctx)
    assert ticket(fctx, dev=261) is None
    assert sweep(fctx).rearmed == []  # the new job is queued: nothing more to do


def test_sweep_rearms_a_timer_ticket_that_lost_its_timer(fctx: Context) -> None:
    lane_with_work(fctx)
    fctx.conn.set(fctx.keys.ticket(LaneId("b", DEV, SIM)), "timer")
    fctx.conn.zadd(fctx.keys.timers, {f"b:{DEV}:{SIM}": fctx.now_ms() + 60_000})
    assert sweep(fctx).rearmed == []
    fctx.conn.zrem(fctx.keys.timers, f"b:{DEV}:{SIM}")
    assert sweep(fctx).rearmed == [f"b:{DEV}:{SIM}"]
    assert ticket(fctx) in queued_jobs(fctx)


@pytest.mark.parametrize("status", ["failed", "stopped", "canceled", "finished"])
def test_sweep_rearms_a_ticket_whose_job_ended_badly(fctx: Context, status: str) -> None:
    lane_with_work(fctx)
    dead = fake_job(fctx, status)
    assert sweep(fctx).rearmed == [f"b:{DEV}:{SIM}"]
    assert ticket(fctx) not in (None, dead)


def test_sweep_rearms_a_job_started_by_a_dead_worker_only(fctx: Context) -> None:
    clock = fctx.clock
    assert isinstance(clock, FakeClock)
    lane_with_work(fctx)
    lane_with_work(fctx, dev=261)
    beat(fctx, "w-alive", "worker")
    beat(fctx, "w-dead", "worker")
    fake_job(fctx, "started", "w-alive")
    dead_job = fake_job(fctx, "started", "w-dead", dev=261)
    assert sweep(fctx).rearmed == []  # both heartbeats are fresh
    clock.advance(DEAD_AFTER_S + 1)
    beat(fctx, "w-alive", "worker")
    report = sweep(fctx)
    assert report.rearmed == [f"b:261:{SIM}"]
    assert ticket(fctx, dev=261) not in (None, dead_job)


def test_sweep_waits_before_rearming_a_ticket_whose_job_does_not_exist(fctx: Context) -> None:
    clock = fctx.clock
    assert isinstance(clock, FakeClock)
    lane_with_work(fctx)
    fctx.conn.set(
        fctx.keys.ticket(LaneId("b", DEV, SIM)), f"{fctx.keys.job_tag}-ticket-b-260-0-notenqueued"
    )
    assert sweep(fctx).rearmed == []  # a producer may be about to enqueue it
    clock.advance(3)
    assert sweep(fctx).rearmed == [f"b:{DEV}:{SIM}"]


def test_sweep_rearms_a_queued_job_no_queue_holds(fctx: Context) -> None:
    """A worker popped the job (BLPOP) and died before starting it."""
    clock = fctx.clock
    assert isinstance(clock, FakeClock)
    lane_with_work(fctx)
    popped = fake_job(fctx, "queued")
    fctx.conn.hset(f"rq:job:{popped}", "origin", fctx.keys.bulk_queue)
    assert sweep(fctx).rearmed == []
    clock.advance(3)
    assert sweep(fctx).rearmed == [f"b:{DEV}:{SIM}"]
    assert ticket(fctx) in queued_jobs(fctx)
    assert sweep(fctx).rearmed == []  # the new one waits in its queue: fine


def test_concurrent_sweeps_rearm_once(make_ctx: MakeCtx) -> None:
    a, b = make_ctx(), make_ctx()
    lane_with_work(a)
    fake_job(a, "failed")
    rearmed = sweep(a).rearmed + sweep(b).rearmed
    assert rearmed == [f"b:{DEV}:{SIM}"]
    assert len(queued_jobs(a)) == 1


def test_sweep_gives_back_leases_of_dead_processes(fctx: Context) -> None:
    clock = fctx.clock
    assert isinstance(clock, FakeClock)
    beat(fctx, "w-dead", "worker")
    beat(fctx, "w-alive", "worker")
    fctx.conn.sadd(fctx.keys.pending_devices, DEV)
    fctx.conn.set(fctx.keys.lease(REFRESH_LEASE), "w-dead", px=60_000)
    fctx.conn.set(fctx.keys.lease(f"reconcile:{DEV}"), "w-alive", px=60_000)
    clock.advance(DEAD_AFTER_S + 1)
    beat(fctx, "w-alive", "worker")
    report = sweep(fctx)
    assert report.leases_released == [REFRESH_LEASE]
    assert fctx.conn.get(fctx.keys.lease(REFRESH_LEASE)) is None
    assert fctx.conn.get(fctx.keys.lease(f"reconcile:{DEV}")) == b"w-alive"
    clock.advance(4000)
    beat(fctx, "w-alive", "worker")
    assert sweep(fctx).processes_forgotten == ["w-dead"]
    assert fctx.conn.hkeys(fctx.keys.processes) == [b"w-alive"]


def test_sweep_runs_recovery(fctx: Context) -> None:
    report = sweep(fctx)
    assert report.recovered == 0 and report.verified == 0


# --- real worker processes ----------------------------------------------------------------


def ledger_by_lane(sim: Simulator) -> dict[tuple[int, int], list[Any]]:
    lanes: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for entry in sim.ledger():
        lanes[(entry.device_id, entry.sim)].append(entry)
    return lanes


@pytest.mark.slow
def test_pacing_holds_across_two_worker_processes(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator(
        [
            SimDevice(id=301, delaybetweenrequest=0.4, delaybetweeneachsms=0.1, sims=(0, 1)),
            SimDevice(id=302, delaybetweenrequest=0.3, delaybetweeneachsms=0.05),
        ]
    )
    ctx = make_ctx(sim)
    settings = ctx.settings
    lanes = {(301, 0): (0.1, 4), (301, 1): (0.1, 4), (302, 0): (0.05, 6)}
    n = 40
    ids = [i for dev, s in lanes for i in send(ctx, n, dev, s)]
    start_workers(2, settings)
    eventually(lambda: len(sim.ledger()) == len(ids), 60, "every message stored")
    eventually(lambda: states(ctx, ids) == {"submitted": len(ids)}, 10, "all submitted")
    claimed = {m.sendto: m.times["submitting"].timestamp() for m in ctx.store.get_many(ids) if m}
    for lane, entries in ledger_by_lane(sim).items():
        interval, burst = lanes[lane]
        assert len(entries) == n
        entries.sort(key=lambda e: e.stored_at)
        # The bound holds where relay decides (the claim); at the gateway it holds up to the
        # jitter of the requests' own latency, measured here, not guessed.
        latency = [e.stored_at - claimed[e.sendto] for e in entries]
        slack = max(latency) - min(latency) + 0.01
        t0 = entries[0].stored_at
        for count, entry in enumerate(entries, start=1):
            allowed = burst + (entry.stored_at - t0 + slack) / interval
            assert count <= allowed, (lane, count, entry.stored_at - t0, slack)
        span = entries[-1].stored_at - t0
        assert n >= 0.5 * (burst + span / interval), (lane, span)  # and close to the bound
    assert Counter(e.sendto for e in sim.ledger()).most_common(1)[0][1] == 1  # each once


def test_urgent_is_stored_before_the_remaining_bulk(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator([SimDevice(id=303, delaybetweenrequest=0.2, delaybetweeneachsms=0.05)])
    ctx = make_ctx(sim)
    settings = ctx.settings
    send(ctx, 2000, 303, tag="bulk")
    start_workers(2, settings)
    eventually(lambda: len(sim.ledger()) >= 8, 30, "bulk started")
    urgent = send(ctx, 5, 303, urgent=True, tag="otp")
    eventually(
        lambda: sum(e.body.startswith("otp") for e in sim.ledger()) == 5, 30, "urgent stored"
    )
    ledger = sim.ledger()
    last_otp = max(e.sms_id for e in ledger if e.body.startswith("otp"))
    bulk_before = sum(1 for e in ledger if e.body.startswith("bulk") and e.sms_id < last_otp)
    assert bulk_before < 200  # not behind the backlog: 1,800+ bulk still waited
    assert ctx.conn.llen(ctx.keys.lane(LaneId("b", 303, 0))) > 1500
    eventually(lambda: states(ctx, urgent) == {"submitted": 5}, 10, "urgent recorded")


@pytest.mark.slow
def test_a_killed_worker_loses_nothing(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator([SimDevice(id=304, delaybetweenrequest=0.2, delaybetweeneachsms=0.05)])
    # unpaced, small batches: the killed run holds its ticket (it had more to send)
    ctx = make_ctx(
        sim, batch_max=5, device_overrides={"304": 0}, inflight_timeout=1.0, verify_grace=0.5
    )
    settings = ctx.settings
    sync_devices(ctx)
    ids = send(ctx, 30, 304)
    sim.faults.add("addalotofsms", "slow", delay=1.0)
    (first,) = start_workers(1, settings)
    eventually(lambda: sim.router.received_counts().get("addalotofsms", 0) >= 1, 30, "a request")
    os.kill(first.pid, signal.SIGKILL)  # mid-request: its batch in flight, its ticket held
    first.proc.wait()
    held = ctx.conn.get(ctx.keys.ticket(LaneId("b", 304, 0)))
    assert held is not None and text(held).startswith(f"{ctx.keys.job_tag}-ticket-b-304-0-")
    assert ctx.conn.zcard(ctx.keys.inflight) == 1
    (second,) = start_workers(1, settings)
    eventually(lambda: states(ctx, ids) == {"submitted": 30}, 60, "all submitted")
    assert '"event": "sweep.rearmed"' in second.log()  # only the sweep could free the lane
    bodies = Counter(e.body for e in sim.ledger())
    assert sorted(bodies) == sorted(f"m{i}" for i in range(30))
    assert set(bodies.values()) == {1}  # stored once each, the in-flight batch included
    assert ctx.conn.zcard(ctx.keys.inflight) == 0 and ctx.conn.zcard(ctx.keys.verify) == 0


@pytest.mark.slow
def test_sigterm_finishes_the_batch_and_leaves_nothing_submitting(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator([SimDevice(id=305, delaybetweenrequest=0.2, delaybetweeneachsms=0.05)])
    ctx = make_ctx(sim)
    settings = ctx.settings
    sync_devices(ctx)
    ids = send(ctx, 20, 305)
    sim.faults.add("addalotofsms", "slow", delay=0.8)
    (worker,) = start_workers(1, settings)
    eventually(lambda: sim.router.received_counts().get("addalotofsms", 0) >= 1, 30, "a request")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(20) == 0, worker.log()
    found = states(ctx, ids)
    assert "submitting" not in found and ctx.conn.zcard(ctx.keys.inflight) == 0
    assert found["submitted"] >= 4  # the batch in flight was finished
    assert found["submitted"] + found["queued"] == 20
    start_workers(1, settings)  # the lane was handed over: another worker carries on
    eventually(lambda: states(ctx, ids) == {"submitted": 20}, 30, "all submitted")


@pytest.mark.slow
def test_supervisor_restarts_a_crashed_process_and_forwards_sigterm(
    make_ctx: MakeCtx, simulator: Simulator, start_workers: StartWorkers
) -> None:
    ctx = make_ctx(simulator)
    settings = ctx.settings

    def pids() -> set[int]:
        return {json.loads(v)["pid"] for v in ctx.conn.hvals(ctx.keys.processes)}

    (supervisor,) = start_workers(1, settings, "--processes", "2")

    def two() -> set[int] | None:
        found = pids()
        return found if len(found) == 2 else None

    first = eventually(two, 60, "two workers")
    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: len(pids() - first) == 1, 60, "a replacement worker")
    supervisor.proc.send_signal(signal.SIGTERM)
    assert supervisor.proc.wait(30) == 0, supervisor.log()
    assert pids() == {victim}  # the others left cleanly; only the killed one's heartbeat is left
    ids = send(ctx, 3, DEV)  # and the work still gets done by whoever runs next
    assert run_until_idle(ctx, 30)
    assert states(ctx, ids) == {"submitted": 3}


def test_a_burst_worker_exits_once_relay_is_idle(
    make_ctx: MakeCtx, simulator: Simulator, start_workers: StartWorkers
) -> None:
    ctx = make_ctx(simulator)
    settings = ctx.settings
    ids = send(ctx, 12, DEV) + send(ctx, 2, DEV, urgent=True, tag="otp")
    (worker,) = start_workers(1, settings, "--burst")
    assert worker.proc.wait(60) == 0, worker.log()
    assert states(ctx, ids) == {"submitted": 14}
    assert is_idle(ctx)


def test_the_worker_serves_metrics(
    make_ctx: MakeCtx, simulator: Simulator, start_workers: StartWorkers
) -> None:
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = make_ctx(simulator)
    settings = ctx.settings
    send(ctx, 3, DEV)
    start_workers(1, settings, "--metrics-port", str(port))

    def scrape() -> str | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None

    page = eventually(scrape, 30, "the metrics endpoint")
    assert "relay_messages" in page
