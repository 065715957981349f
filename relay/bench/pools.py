"""Device pools: pooled throughput against the sum of the members' rates, and urgent
latency to a pool against urgent latency to a device.

Throughput: ``pools_devices`` paced phones (one SMS every ``pools_each`` s, a poll every
``pools_poll`` s) in one pool, worker processes started first, then ``pools_messages``
messages sent to the pool at once; the rate at which the simulator stored them, measured
between the 25th and 90th percentile of the store times (once the phones' first bursts
are long spent), against ``devices / each``, the most pacing lets through (target: at
least 95 %). The same messages addressed round-robin to the same phones give the
unpooled rate beside it.

Latency: realistic phones (one SMS a second, a poll every 10 s) in one pool, no backlog;
urgent messages alternate between the pool and a device (round-robin over the phones), one
at a time, a little apart: milliseconds from ``send`` returning to stored at the simulator,
p50/p99 of each.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from relay.bench.config import BenchConfig
from relay.bench.env import (
    BenchError,
    Phone,
    Scope,
    SimProcess,
    messages,
    phones,
    start_workers,
    wait_until,
    workers_registered,
)
from relay.bench.ledger import flow, percentile
from relay.bench.report import Measurement, Row, fmt
from relay.core import Relay

TARGET_SHARE = 0.95
POOL = "bench"
WAIT_S = 600.0
LATENCY_POLL_S = 10.0
LATENCY_EACH_S = 1.0
CUSTOMER_BASE = 800_000_000


def _pool_of(devices: list[int]) -> dict[str, list[str]]:
    return {POOL: [f"{d}:0" for d in devices]}


@contextmanager
def _pool_running(
    cfg: BenchConfig, fleet: list[Phone], name: str
) -> Iterator[tuple[SimProcess, Relay]]:
    """The simulator with ``fleet``, all of it one pool, two relay workers running; a Relay
    to send with. Everything stopped and the keys removed on exit."""
    with SimProcess(fleet) as sim:
        scope = Scope(cfg.redis_url, name)
        settings = scope.settings(sim, pools=_pool_of([d.id for d in fleet]))
        conn = scope.conn()
        workers = start_workers(settings, 2, cfg.log_dir, burst=False)
        try:
            if not wait_until(lambda: workers_registered(conn, settings, 2), 60):
                raise BenchError("the relay workers did not start")
            with Relay(settings) as relay:
                yield sim, relay
        finally:
            workers.stop()
            scope.cleanup()
            conn.close()


def throughput(cfg: BenchConfig, pooled: bool) -> dict[str, Any]:
    """``pools_messages`` to the pool (or round-robin to its phones) through two workers."""
    fleet = phones(cfg.pools_devices, poll=cfg.pools_poll, each=cfg.pools_each)
    items = messages(cfg.pools_messages, [d.id for d in fleet], seed=13)
    if pooled:
        items = [{k: v for k, v in i.items() if k != "device_id"} | {"pool": POOL} for i in items]
    with _pool_running(cfg, fleet, "pools" if pooled else "pools-direct") as (sim, relay):
        relay.send_many(items)
        if not sim.wait_stored(len(items), WAIT_S, poll=0.05):
            raise BenchError(f"only {sim.stored()} of {len(items)} messages were stored")
        ledger = sim.ledger()
    f = flow(ledger)
    cap = cfg.pools_devices / cfg.pools_each
    steady = _steady_rate([e["stored_at"] for e in ledger])
    per_phone: dict[int, int] = {}
    for entry in ledger:
        per_phone[entry["device_id"]] = per_phone.get(entry["device_id"], 0) + 1
    return f.to_dict() | {
        "steady_msgs_per_s": steady,
        "sum_of_rates": cap,
        "share": steady / cap,
        "phones_used": len(per_phone),
        "fewest_on_a_phone": min(per_phone.values()),
    }


def _steady_rate(stored_at: list[float]) -> float:
    """Messages per second between the 25th and the 90th percentile of the store times:
    the rate once the phones' first bursts are long spent, before the tail."""
    times = sorted(stored_at)
    low, high = len(times) // 4, len(times) * 9 // 10
    span = times[high - 1] - times[low] if high - 1 > low else 0.0
    return (high - 1 - low) / span if span > 0 else 0.0


def latency(cfg: BenchConfig) -> dict[str, Any]:
    """Urgent latency (ms), alternating between the pool and a device."""
    fleet = phones(cfg.pools_devices, poll=LATENCY_POLL_S, each=LATENCY_EACH_S, first=7101)
    ids = [d.id for d in fleet]
    sent: dict[int, tuple[str, float]] = {}
    with _pool_running(cfg, fleet, "pools-latency") as (sim, relay):
        time.sleep(cfg.latency_settle)
        rng = random.Random(9)
        for i in range(2 * cfg.pools_samples):
            to = {"pool": POOL} if i % 2 == 0 else {"device_id": ids[(i // 2) % len(ids)]}
            cid = CUSTOMER_BASE + i
            item = {"sendto": f"+49152{i:08d}", "body": f"code {i}", "urgent": True}
            relay.send_many([item | to | {"customerid": cid}])
            sent[cid] = ("pool" if "pool" in to else "device", time.time())
            time.sleep(cfg.latency_gap * rng.uniform(0.5, 1.5))
        if not sim.wait_stored(len(sent), 60, poll=0.2):
            raise BenchError(f"only {sim.stored()} of {len(sent)} urgent messages arrived")
        ledger = sim.ledger()
    lat: dict[str, list[float]] = {"pool": [], "device": []}
    for entry in ledger:
        kind, at = sent[entry["customerid"]]
        lat[kind].append((entry["stored_at"] - at) * 1000)
    return {
        kind: {"samples": len(v), "p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}
        for kind, v in lat.items()
    }


def measure(cfg: BenchConfig) -> Measurement:
    """Pooled and direct throughput over the same phones, then urgent latency pool vs device."""
    m = Measurement("pools")
    pooled, direct = throughput(cfg, True), throughput(cfg, False)
    lat = latency(cfg)
    m.values = {"pooled": pooled, "direct": direct, "urgent_latency": lat}
    t = m.target("pooled msgs/s / sum of phone rates", pooled["share"], TARGET_SHARE, at_least=True)
    m.rows = [
        Row(
            f"pooled: {cfg.pools_devices} phones x 1 SMS/{cfg.pools_each:g} s",
            f"{fmt(pooled['steady_msgs_per_s'])} msgs/s",
            f"{fmt(100 * pooled['share'])}% of {fmt(pooled['sum_of_rates'])}; "
            f"{pooled['phones_used']} phones used, {pooled['duplicates']} duplicates",
            t,
        ),
        Row(
            "  same phones, addressed directly",
            f"{fmt(direct['steady_msgs_per_s'])} msgs/s",
            f"{fmt(100 * direct['share'])}% of the sum",
        ),
        Row(
            "urgent p50 / p99: to the pool",
            f"{fmt(lat['pool']['p50_ms'])} / {fmt(lat['pool']['p99_ms'])} ms",
            f"{lat['pool']['samples']} samples",
        ),
        Row(
            "  to a device",
            f"{fmt(lat['device']['p50_ms'])} / {fmt(lat['device']['p99_ms'])} ms",
            f"{lat['device']['samples']} samples",
        ),
    ]
    return m
