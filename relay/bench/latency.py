"""Urgent latency: from ``send(urgent=True)`` returning to the message stored at the
simulator (its ledger's ``stored_at``; same machine, same clock), p50/p99, with a bulk
backlog queued over the devices and worker processes running, and with no backlog.

The phones are realistic ones: one SMS a second (``delaybetweeneachsms`` 1 s) and a poll
every 10 s, so relay paces bulk at 1 message/s per phone in bursts of 10 and the backlog
stays queued for the whole measurement (hours of work for those phones) — exactly the
case where an urgent message must not wait behind bulk: not in the lanes, not in the RQ
queues, not behind a phone's pacing. Urgent messages go one at a time, a little apart
(``latency_gap`` ± 50 %), round-robin over the phones.
"""

from __future__ import annotations

import random
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
from relay.bench.ledger import percentile
from relay.bench.report import Measurement, Row, fmt
from relay.core import Relay

POLL_S = 10.0
EACH_S = 1.0
TARGET_P99_MS = 25.0
#: "No worse with the backlog": its p99 within this factor of the empty run's (run-to-run
#: noise of a p99 over about a thousand samples on a shared two-core machine).
SAME_FACTOR = 1.25
WAIT_S = 60.0
CUSTOMER_BASE = 900_000_000


def scenario(cfg: BenchConfig, backlog: int) -> dict[str, Any]:
    """One run: workers up, ``backlog`` bulk messages queued, then the urgent samples."""
    devices = phones(cfg.latency_devices, poll=POLL_S, each=EACH_S)
    ids = [d.id for d in devices]
    with SimProcess(devices) as sim:
        scope = Scope(cfg.redis_url, "latency")
        settings = scope.settings(sim)
        workers = start_workers(settings, cfg.latency_workers, cfg.log_dir, burst=False)
        conn = scope.conn()
        try:
            if not wait_until(lambda: workers_registered(conn, settings, cfg.latency_workers),
                              WAIT_S):
                raise BenchError("the relay workers did not start")
            with Relay(settings) as relay:
                queued = time.monotonic()
                if backlog:
                    relay.send_many(messages(backlog, ids, body_len=cfg.body_len, seed=7))
                enqueue_s = time.monotonic() - queued
                time.sleep(cfg.latency_settle)
                sent = send_urgent(relay, cfg, ids)
            latencies = collect(sim, sent)
            depth = lane_depth(relay_keys_conn=conn, prefix=settings.key_prefix, devices=ids)
        finally:
            workers.stop()
            scope.cleanup()
            conn.close()
    return {
        "backlog": backlog, "backlog_enqueue_s": enqueue_s, "bulk_still_queued": depth,
        "samples": len(latencies), "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90), "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies), "workers": cfg.latency_workers,
    }


def send_urgent(relay: Relay, cfg: BenchConfig, devices: list[int]) -> dict[int, float]:
    """Send the samples; customer id → the moment its ``send`` returned."""
    rng = random.Random(8)
    sent: dict[int, float] = {}
    for i in range(cfg.latency_samples):
        cid = CUSTOMER_BASE + i
        relay.send(f"+49151{i:08d}", f"Your code is {100000 + i}", devices[i % len(devices)],
                   urgent=True, customerid=cid)
        sent[cid] = time.time()
        time.sleep(cfg.latency_gap * rng.uniform(0.5, 1.5))
    return sent


def collect(sim: SimProcess, sent: dict[int, float]) -> list[float]:
    """Latencies (ms) of every sample, once all are stored at the simulator."""
    found: dict[int, float] = {}

    def all_stored() -> bool:
        for entry in sim.ledger():
            cid = entry.get("customerid")
            if cid in sent:
                found[cid] = entry["stored_at"]
        return len(found) == len(sent)

    if not wait_until(all_stored, WAIT_S, poll=0.5):
        raise BenchError(f"only {len(found)} of {len(sent)} urgent messages reached the gateway")
    return [(found[cid] - at) * 1000 for cid, at in sent.items()]


def lane_depth(relay_keys_conn: Any, prefix: str, devices: list[int]) -> int:
    """Bulk messages still waiting in the lanes (the backlog stayed queued)."""
    from relay.keys import BULK, Keys

    keys = Keys(prefix)
    return sum(int(relay_keys_conn.llen(keys.lane(BULK, d, 0))) for d in devices)


def measure(cfg: BenchConfig) -> Measurement:
    """With the backlog, then without; both p99s against the target and each other."""
    m = Measurement("latency")
    loaded = scenario(cfg, cfg.latency_backlog)
    empty = scenario(cfg, 0)
    factor = loaded["p99_ms"] / empty["p99_ms"] if empty["p99_ms"] > 0 else float("inf")
    m.values = {"with_backlog": loaded, "empty": empty, "p99_ratio": factor,
                "phones": {"delaybetweeneachsms": EACH_S, "delaybetweenrequest": POLL_S}}
    t1 = m.target("urgent p99 with backlog", loaded["p99_ms"], TARGET_P99_MS, at_least=False,
                  unit=" ms")
    t2 = m.target("p99 backlog / p99 empty", factor, SAME_FACTOR, at_least=False, unit="x")
    m.rows = [
        Row(f"urgent p50 / p99, {loaded['backlog']:,} bulk queued",
            f"{fmt(loaded['p50_ms'])} / {fmt(loaded['p99_ms'])} ms",
            f"{loaded['samples']} samples, {cfg.latency_workers} workers", t1),
        Row("urgent p50 / p99, empty lanes", f"{fmt(empty['p50_ms'])} / {fmt(empty['p99_ms'])} ms",
            f"max {fmt(loaded['max_ms'])} / {fmt(empty['max_ms'])} ms"),
        Row("  p99 backlog / empty", fmt(factor, "x"),
            f"bulk still queued after: {loaded['bulk_still_queued']:,}", t2),
    ]
    return m
