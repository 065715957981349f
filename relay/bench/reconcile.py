"""The reconciler: wall time and gateway calls to settle N submitted messages.

A burst worker submits N messages over several zero-delay phones; once the simulator
reports every one of them delivered, one :class:`relay.reconcile.reconciler.Reconciler` (in this
process) runs passes until every message is final in relay. Its time and the
``getallsms`` / ``getsmsstatus`` requests the simulator received meanwhile are the result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from relay.bench.config import BenchConfig
from relay.bench.env import (
    BenchError,
    Scope,
    SimProcess,
    final_count,
    messages,
    phones,
    redis_cpu,
    start_workers,
    wait_until,
)
from relay.bench.report import Measurement, Row, fmt
from relay.context import Context
from relay.core import Relay
from relay.reconcile.reconciler import Reconciler

MAX_PASSES = 20
WAIT_S = 600.0


def settle(ctx: Context, n: int, profile: Path | None) -> tuple[int, float, float]:
    """Reconciler passes until ``n`` messages are final: (passes, seconds, CPU seconds of
    this process)."""
    rec = Reconciler(ctx)
    profiler = _profiler(profile)
    start, cpu = time.perf_counter(), time.process_time()
    passes = 0
    while passes < MAX_PASSES and final_count(ctx.conn, ctx.settings) < n:
        rec.run_once()
        passes += 1
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if profiler is not None and profile is not None:
        profiler.stop()
        profile.write_text(profiler.output_text(unicode=True))
    return passes, seconds, cpu


def _profiler(profile: Path | None) -> Any:
    if profile is None:
        return None
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    return profiler


def measure(cfg: BenchConfig) -> Measurement:
    """Submit, let the phones deliver, then time the reconciler."""
    m = Measurement("reconcile")
    devices = phones(cfg.reconcile_devices, poll=0.5, each=0.0)
    n = cfg.reconcile_messages
    profile = cfg.profile_dir / "reconciler.txt" if cfg.profile_dir else None
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, "reconcile")
        settings = scope.settings(sim, device_overrides={str(d.id): 0.0 for d in devices})
        try:
            with Relay(settings) as relay:
                relay.send_many(messages(n, [d.id for d in devices], seed=10))
            workers = start_workers(settings, 1, cfg.log_dir, burst=True)
            if not workers.wait(WAIT_S):
                workers.stop()
                raise BenchError("the relay worker did not finish")
            if not wait_until(lambda: sim.stats()["by_status"].get("7", 0) >= n, 120, 0.5):
                raise BenchError("the simulated phones did not deliver every message")
            before = sim.requests()
            ctx = Context.from_settings(settings)
            try:
                redis_before = redis_cpu(ctx.conn)
                passes, seconds, cpu = settle(ctx, n, profile)
                redis_us = (redis_cpu(ctx.conn) - redis_before) * 1e6 / n
                final = final_count(ctx.conn, settings)
            finally:
                ctx.close()
            after = sim.requests()
        finally:
            scope.cleanup()
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls = {k: v for k, v in calls.items() if v}
    total = sum(calls.values())
    m.values = {
        "messages": n,
        "devices": cfg.reconcile_devices,
        "final": final,
        "passes": passes,
        "seconds": seconds,
        "cpu_s": cpu,
        "redis_cpu_us_per_msg": redis_us,
        "calls": calls,
        "total_calls": total,
        "msgs_per_s": final / seconds if seconds else 0.0,
    }
    m.rows = [
        Row(
            f"settle {n:,} submitted messages",
            fmt(seconds, " s"),
            f"{passes} pass(es), {fmt(final / seconds if seconds else 0)} msgs/s, "
            f"reconciler CPU {fmt(cpu, ' s')}",
        ),
        Row("  gateway calls", f"{total:,}", ", ".join(f"{k} {v}" for k, v in calls.items())),
        Row("  Redis CPU per message", fmt(redis_us, " µs")),
    ]
    if final < n:
        m.notes.append(f"only {final} of {n} messages final after {passes} passes")
    return m
