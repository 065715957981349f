"""Scale-out: throughput and pacing with 1, 2 and 4 worker processes.

Many paced phones (``scale_devices``, one SMS every ``scale_each`` seconds, a poll every
``scale_poll``): relay may hand each phone a burst of ``poll / each`` messages, then one
per interval. The workers are started first and sit idle; the moment just before
``send_many`` is the pacing anchor: no phone's GCRA can have claimed anything before it,
so by any moment ``t`` at most ``burst + (t - anchor) / interval`` of its messages can have
been claimed — and a message is stored at the simulator only after its claim. The check
reads every store time off the simulator's ledger; it holds exactly or it fails.

Throughput is the ledger's steady rate (:func:`relay.bench.ledger.flow`).
"""

from __future__ import annotations

import math
import time
from typing import Any

from relay.bench.config import BenchConfig
from relay.bench.env import (
    BenchError,
    Scope,
    SimProcess,
    messages,
    phones,
    start_workers,
    wait_until,
    workers_registered,
)
from relay.bench.ledger import check_pacing, flow
from relay.bench.report import Measurement, Row, fmt
from relay.core import Relay

WAIT_S = 600.0


def run(cfg: BenchConfig, count: int) -> dict[str, Any]:
    """``count`` worker processes draining ``scale_messages`` messages."""
    devices = phones(cfg.scale_devices, poll=cfg.scale_poll, each=cfg.scale_each)
    burst = math.ceil(cfg.scale_poll / cfg.scale_each - 1e-9)
    n = cfg.scale_messages
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, f"scale{count}")
        settings = scope.settings(sim)
        conn = scope.conn()
        workers = start_workers(settings, count, cfg.log_dir, burst=False)
        try:
            if not wait_until(lambda: workers_registered(conn, settings, count), 60):
                raise BenchError(f"{count} relay workers did not start")
            anchor = time.time()
            with Relay(settings) as relay:
                relay.send_many(messages(n, [d.id for d in devices], seed=11))
            if not sim.wait_stored(n, WAIT_S):
                raise BenchError(f"only {sim.stored()} of {n} messages reached the gateway")
            ledger = sim.ledger()
        finally:
            workers.stop()
            scope.cleanup()
            conn.close()
    f = flow(ledger)
    pacing = check_pacing(ledger, anchor, cfg.scale_each, burst)
    cap = cfg.scale_devices / cfg.scale_each
    return {"workers": count, **f.to_dict(), "pacing": pacing.to_dict(), "burst": burst,
            "pacing_cap_msgs_per_s": cap}


def measure(cfg: BenchConfig) -> Measurement:
    """One run per worker count; each must keep pacing exactly."""
    m = Measurement("scaleout")
    runs = [run(cfg, count) for count in cfg.scale_workers]
    base = runs[0]["msgs_per_s"]
    m.values = {"runs": runs, "devices": cfg.scale_devices, "each_s": cfg.scale_each,
                "poll_s": cfg.scale_poll, "messages": cfg.scale_messages}
    for r in runs:
        held = r["pacing"]["held"]
        t = m.target(f"pacing violations, {r['workers']} workers", r["pacing"]["violations"], 0,
                     at_least=False)
        m.rows.append(Row(
            f"{r['workers']} worker(s): msgs/s", fmt(r["msgs_per_s"]),
            f"x{fmt(r['msgs_per_s'] / base)} of 1; pacing {'held' if held else 'BROKEN'} "
            f"(worst {fmt(r['pacing']['worst_excess_msgs'])} msgs, "
            f"{fmt(100 * r['pacing']['share_of_pacing_cap_used'])}% of cap)", t))
    m.notes.append(
        f"{cfg.scale_devices} phones x one SMS per {cfg.scale_each:g} s (pacing cap "
        f"{fmt(cfg.scale_devices / cfg.scale_each)} msgs/s), bursts of "
        f"{runs[0]['burst']}; {cfg.scale_messages:,} messages per run")
    return m
