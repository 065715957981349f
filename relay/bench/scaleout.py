"""Scale-out: throughput and pacing with 1, 2 and 4 worker processes.

Many paced phones (``scale_devices``, one SMS every ``scale_each`` seconds, a poll every
``scale_poll``): relay may hand each phone a burst of ``poll / each`` messages, then one
per interval. For throughput, every message is queued first and the workers start after
(so the producer does not set the pace); the moment they are started is the pacing
anchor: no phone's GCRA can have claimed anything before it, so by any moment ``t`` at
most ``burst + (t - anchor) / interval`` of its messages can have been claimed — and a
message is stored at the simulator only after its claim. The check reads every store
time off the simulator's ledger; it holds exactly or it fails.

A last run uses slow phones (``paced_*``), so pacing, not the workers, is the limit; its
workers start first and its anchor is the moment ``send_many`` begins, so the bound is
tight: the run shows it reached and still never exceeded.

Throughput is the ledger's steady rate (:func:`relay.bench.ledger.flow`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
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
from relay.bench.report import Measurement, Row, Target, fmt
from relay.core import Relay

WAIT_S = 600.0


@dataclass(frozen=True)
class Fleet:
    """The phones of one run: how many, one SMS every ``each`` s, a poll every ``poll`` s."""

    devices: int
    each: float
    poll: float

    @property
    def burst(self) -> int:
        return math.ceil(self.poll / self.each - 1e-9)

    @property
    def cap(self) -> float:
        """The most messages per second pacing lets through, all phones together."""
        return self.devices / self.each


def run(cfg: BenchConfig, count: int, fleet: Fleet, n: int, *, queued: bool) -> dict[str, Any]:
    """``count`` worker processes draining ``n`` messages to ``fleet``.

    ``queued``: every message is queued before the workers start (so the producer does not
    limit the rate) and the anchor is the moment they are started; else the workers start
    first and the anchor is the moment ``send_many`` begins (the tightest bound).
    """
    devices = phones(fleet.devices, poll=fleet.poll, each=fleet.each)
    burst = fleet.burst
    items = messages(n, [d.id for d in devices], seed=11)
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, f"scale{count}")
        settings = scope.settings(sim)
        conn = scope.conn()
        relay = Relay(settings)
        if queued:
            relay.send_many(items)
        anchor = time.time()
        workers = start_workers(settings, count, cfg.log_dir, burst=False)
        try:
            if not wait_until(lambda: workers_registered(conn, settings, count), 60):
                raise BenchError(f"{count} relay workers did not start")
            if not queued:
                anchor = time.time()
                relay.send_many(items)
            if not sim.wait_stored(n, WAIT_S, poll=0.05):
                raise BenchError(f"only {sim.stored()} of {n} messages reached the gateway")
            ledger = sim.ledger()
        finally:
            workers.stop()
            relay.close()
            scope.cleanup()
            conn.close()
    f = flow(ledger)
    pacing = check_pacing(ledger, anchor, fleet.each, burst)
    return {
        "workers": count,
        **f.to_dict(),
        "pacing": pacing.to_dict(),
        "burst": burst,
        "pacing_cap_msgs_per_s": fleet.cap,
        "phones": fleet.devices,
        "each_s": fleet.each,
        "queued_first": queued,
    }


def _pacing_target(m: Measurement, what: str, r: dict[str, Any]) -> Target:
    """The target of run ``r``: no pacing violation."""
    return m.target(f"pacing violations, {what}", r["pacing"]["violations"], 0, at_least=False)


def measure(cfg: BenchConfig) -> Measurement:
    """One run per worker count; each must keep pacing exactly."""
    m = Measurement("scaleout")
    fleet = Fleet(cfg.scale_devices, cfg.scale_each, cfg.scale_poll)
    runs = [run(cfg, count, fleet, cfg.scale_messages, queued=True) for count in cfg.scale_workers]
    slow = Fleet(cfg.paced_devices, cfg.paced_each, cfg.scale_poll)
    paced = run(cfg, max(cfg.scale_workers), slow, cfg.paced_messages, queued=False)
    base = runs[0]["msgs_per_s"]
    m.values = {
        "runs": runs,
        "paced_run": paced,
        "devices": cfg.scale_devices,
        "each_s": cfg.scale_each,
        "poll_s": cfg.scale_poll,
        "messages": cfg.scale_messages,
    }
    for r in runs:
        held = r["pacing"]["held"]
        t = _pacing_target(m, f"{r['workers']} workers", r)
        m.rows.append(
            Row(
                f"{r['workers']} worker(s): msgs/s",
                fmt(r["msgs_per_s"]),
                f"x{fmt(r['msgs_per_s'] / base)} of 1; pacing {'held' if held else 'BROKEN'} "
                f"(worst {fmt(r['pacing']['worst_excess_msgs'])} msgs, "
                f"{fmt(100 * r['pacing']['share_of_pacing_cap_used'])}% of cap)",
                t,
            )
        )
    t = _pacing_target(m, f"pacing-bound run ({paced['workers']} workers)", paced)
    m.rows.append(
        Row(
            f"pacing-bound: {slow.devices} phones x 1 SMS/{slow.each:g} s",
            f"{fmt(paced['msgs_per_s'])} msgs/s",
            f"cap {fmt(slow.cap)}; {fmt(100 * paced['pacing']['share_of_pacing_cap_used'])}% of "
            f"the bound used, worst {fmt(paced['pacing']['worst_excess_msgs'])} msgs",
            t,
        )
    )
    m.notes.append(
        f"{cfg.scale_devices} phones x one SMS per {cfg.scale_each:g} s (pacing cap "
        f"{fmt(cfg.scale_devices / cfg.scale_each)} msgs/s), bursts of "
        f"{runs[0]['burst']}; {cfg.scale_messages:,} messages per run"
    )
    return m
