"""End to end: messages per second from the lanes to stored at the simulator, through ONE
``relay worker --burst`` process, phones with zero delays, default batch size; beside it
the same messages as one RQ job each (one ``addsms`` per job) through one RQ worker.

Both sides find their whole input queued before their worker starts; the rate is read
off the simulator's ledger (:func:`relay.bench.ledger.flow`). RQ's two workers are both
tried on a probe (``SimpleWorker``, no fork, and the forking ``Worker``), and the faster
one runs the full count: the comparison is with RQ at its best.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from relay.bench.config import BenchConfig
from relay.bench.env import (
    BenchError,
    Scope,
    SimProcess,
    child_env,
    children_cpu,
    messages,
    phones,
    process_cpu,
    redis_cpu,
    start_workers,
)
from relay.bench.ledger import Flow, flow
from relay.bench.report import Measurement, Row, fmt
from relay.bench.rqside import JOB_FUNC, cleanup, job_args, queue
from relay.core import Relay

TARGET_RATE = 10_000
TARGET_RATIO = 30.0
TIMEOUT_S = 600.0
BATCH = 500


@dataclass(frozen=True)
class Cpu:
    """CPU seconds each process spent while the worker ran (the worker's without its
    start-up and shut-down, measured by a burst worker that found nothing to do)."""

    worker: float
    redis: float
    simulator: float

    def per_message_us(self, n: int) -> dict[str, float]:
        return {k: v * 1e6 / n for k, v in asdict(self).items()}


def relay_flow(
    cfg: BenchConfig, count: int, profile: Path | None = None
) -> tuple[Flow, float, Cpu]:
    """(ledger flow, worker wall seconds, CPU used) of ``count`` messages through one burst
    worker."""
    devices = phones(cfg.e2e_devices, poll=0.5, each=0.0)
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, "e2e")
        settings = scope.settings(sim, device_overrides={str(d.id): 0.0 for d in devices})
        try:
            idle = children_cpu()
            if not start_workers(settings, 1, cfg.log_dir, burst=True).wait(TIMEOUT_S):
                raise BenchError("an idle relay worker did not exit")
            idle = children_cpu() - idle
            with Relay(settings) as relay:
                relay.send_many(messages(count, [d.id for d in devices], seed=5))
            conn = scope.conn()
            before = (children_cpu() + idle, redis_cpu(conn), process_cpu(sim.pid))
            start = time.monotonic()
            workers = start_workers(settings, 1, cfg.log_dir, burst=True, profile=profile)
            if not workers.wait(TIMEOUT_S):
                workers.stop()
                raise BenchError("the relay worker did not finish in time")
            wall = time.monotonic() - start
            after = (children_cpu(), redis_cpu(conn), process_cpu(sim.pid))
            conn.close()
            cpu = Cpu(*(a - b for a, b in zip(after, before, strict=True)))
            if workers.failed():
                raise BenchError("the relay worker failed: " + workers.failed()[0])
            return flow(sim.ledger()), wall, cpu
        finally:
            scope.cleanup()


def simulator_capacity(cfg: BenchConfig, seconds: float = 2.0) -> float:
    """Messages per second the simulator process stores when a raw keep-alive socket
    client sends it ``addalotofsms`` of 500 back to back (its own ceiling here)."""
    from relay.simulator.bench import RawClient, rate

    devices = phones(1, poll=0.5, each=0.0)
    items = [{**m, "sim": 0, "urgent": 0} for m in messages(BATCH, [devices[0].id], seed=12)]
    with SimProcess(devices) as sim:
        form = {
            "datajson": json.dumps({"token": sim.token, "smsdata": items}, separators=(",", ":"))
        }
        client = RawClient(sim.url)
        try:
            return rate(lambda: client.post("addalotofsms", form), seconds) * BATCH
        finally:
            client.close()


def rq_flow(cfg: BenchConfig, count: int, kind: str) -> Flow:
    """The ledger flow of ``count`` one-message RQ jobs through one burst RQ worker."""
    devices = phones(cfg.e2e_devices, poll=0.5, each=0.0)
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, "e2e-rq")
        name = f"{scope.prefix}-rq"
        conn = scope.conn()
        try:
            q = queue(conn, name)
            items = messages(count, [d.id for d in devices], seed=6)
            with conn.pipeline() as pipe:
                q.enqueue_many(
                    [q.prepare_data(JOB_FUNC, args=job_args(i)) for i in items], pipeline=pipe
                )
                pipe.execute()
            env = child_env(scope.settings(sim))
            cmd = [sys.executable, "-m", "relay.bench.rqside", "--queue", name, "--worker", kind]
            log = cfg.log_dir / f"{name}-{kind}.log"
            with log.open("wb") as out:
                done = subprocess.run(
                    cmd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=TIMEOUT_S,
                    check=False,
                )
            if done.returncode != 0:
                raise BenchError(f"the RQ worker failed: {log.read_text()[-1000:]}")
            return flow(sim.ledger())
        finally:
            cleanup(conn, name)
            scope.cleanup()
            conn.close()


def measure(cfg: BenchConfig) -> Measurement:
    """relay's worker, RQ's two workers on a probe, then RQ's faster one on the full count."""
    m = Measurement("endtoend")
    profile = cfg.profile_dir / "worker-endtoend.txt" if cfg.profile_dir else None
    relay, wall, cpu = relay_flow(cfg, cfg.e2e_messages, profile)
    capacity = simulator_capacity(cfg)
    probes = {kind: rq_flow(cfg, cfg.rq_probe, kind) for kind in ("simple", "fork")}
    best = max(probes, key=lambda k: probes[k].rate)
    rq = probes[best] if cfg.rq_messages <= cfg.rq_probe else rq_flow(cfg, cfg.rq_messages, best)
    ratio = relay.rate / rq.rate
    m.values = {
        "relay": relay.to_dict()
        | {
            "worker_wall_s": wall,
            "devices": cfg.e2e_devices,
            "cpu_us_per_msg": cpu.per_message_us(relay.stored),
        },
        "simulator_capacity_msgs_per_s": capacity,
        "rq": rq.to_dict() | {"worker": best},
        "rq_probe": {k: f.to_dict() for k, f in probes.items()},
        "ratio": ratio,
    }
    t1 = m.target("relay msgs/s through one worker", relay.rate, TARGET_RATE, at_least=True)
    t2 = m.target("relay vs RQ job rate", ratio, TARGET_RATIO, at_least=True, unit="x")
    worker = "SimpleWorker" if best == "simple" else "Worker (fork)"
    m.rows = [
        Row("msgs/s, one worker process", fmt(relay.rate), f"RQ {worker}: {fmt(rq.rate)}", t1),
        Row(
            "  ratio",
            fmt(ratio, "x"),
            f"RQ probe: simple {fmt(probes['simple'].rate)}, fork {fmt(probes['fork'].rate)}",
            t2,
        ),
        Row(
            "  requests / messages",
            f"{relay.requests:,} / {relay.stored:,}",
            f"{rq.requests:,} / {rq.stored:,}",
        ),
        Row(
            "  CPU µs/msg: worker, Redis, simulator",
            " / ".join(fmt(v) for v in cpu.per_message_us(relay.stored).values()),
            f"simulator alone: {fmt(capacity)} msgs/s",
        ),
    ]
    if relay.duplicates or relay.stored != cfg.e2e_messages:
        m.notes.append(
            f"relay stored {relay.stored} of {cfg.e2e_messages}, {relay.duplicates} duplicates"
        )
    return m
