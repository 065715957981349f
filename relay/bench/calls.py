"""Gateway calls per message: a campaign over several phones, from ``send_many`` to every
message final, with two workers and a reconciler running on the default settings; the
simulator counts the requests it received per endpoint.

The phones send one SMS every 20 ms and poll every second (fast phones, so the campaign
takes seconds, not hours): relay then submits bursts of 50 (one poll's worth), and the
reconciler polls every ``RELAY_RECONCILE_INTERVAL`` (10 s). Slower phones keep the
submissions at one per burst (``delaybetweenrequest / delaybetweeneachsms`` messages) and
make the campaign longer, so more reconciler passes: see docs/performance.md.
"""

from __future__ import annotations

import math
import time

from relay.bench.config import BenchConfig
from relay.bench.env import (
    BenchError,
    Scope,
    SimProcess,
    final_count,
    messages,
    phones,
    start_reconciler,
    start_workers,
    stop_process,
    wait_until,
    workers_registered,
)
from relay.bench.report import Measurement, Row, fmt
from relay.core import Relay

EACH_S = 0.02
POLL_S = 1.0
WORKERS = 2
TARGET = 0.05
WAIT_S = 600.0


def measure(cfg: BenchConfig) -> Measurement:
    """Run the campaign and count the gateway requests it took."""
    m = Measurement("calls")
    devices = phones(cfg.calls_devices, poll=POLL_S, each=EACH_S)
    n = cfg.calls_messages
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, "calls")
        extra = (
            {} if cfg.reconcile_interval is None else {"reconcile_interval": cfg.reconcile_interval}
        )
        settings = scope.settings(sim, **extra)
        conn = scope.conn()
        workers = start_workers(settings, WORKERS, cfg.log_dir, burst=False)
        reconciler = start_reconciler(settings, cfg.log_dir)
        try:
            if not wait_until(lambda: workers_registered(conn, settings, WORKERS), 60):
                raise BenchError("the relay workers did not start")
            before = sim.requests()
            start = time.monotonic()
            with Relay(settings) as relay:
                relay.send_many(messages(n, [d.id for d in devices], seed=9))
            if not wait_until(lambda: final_count(conn, settings) >= n, WAIT_S, poll=0.5):
                raise BenchError(f"only {final_count(conn, settings)} of {n} messages ended")
            seconds = time.monotonic() - start
            after = sim.requests()
        finally:
            workers.stop()
            stop_process(reconciler)
            scope.cleanup()
            conn.close()
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls = {k: v for k, v in calls.items() if v}
    total = sum(calls.values())
    per = total / n
    burst = math.ceil(POLL_S / EACH_S)
    m.values = {
        "messages": n,
        "devices": cfg.calls_devices,
        "calls": calls,
        "total": total,
        "per_message": per,
        "seconds_to_final": seconds,
        "phones": {"delaybetweeneachsms": EACH_S, "delaybetweenrequest": POLL_S, "burst": burst},
    }
    t = m.target("gateway calls per message", per, TARGET, at_least=False)
    m.rows = [
        Row(
            "gateway calls per message",
            fmt(per),
            f"{total:,} calls, {n:,} msgs, {cfg.calls_devices} phones",
            t,
        ),
        Row("  by endpoint", ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))),
        Row("  enqueue to all final", fmt(seconds, " s"), f"bursts of {burst}"),
    ]
    return m
