"""Urgent latency: from ``send(urgent=True)`` returning to the message stored at the
simulator (its ledger's ``stored_at``; same machine, same clock), p50/p99, with a bulk
backlog queued over the devices and worker processes running, and with no backlog.

The phones are realistic ones: one SMS a second (``delaybetweeneachsms`` 1 s) and a poll
every 10 s, so relay paces bulk at 1 message/s per phone in bursts of 10 and the backlog
stays queued for the whole measurement (hours of work for those phones) — exactly the
case where an urgent message must not wait behind bulk: not in the lanes, not in the RQ
queues, not behind a phone's pacing.

Both setups run side by side (each its own simulator, key prefix and worker processes)
and the urgent messages alternate between them, one at a time, a little apart
(``latency_gap`` ± 50 %), round-robin over the phones: whatever else the machine does
meanwhile hits both alike, so "no worse with the backlog" compares like with like.
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
    Workers,
    messages,
    phones,
    start_workers,
    wait_until,
    workers_registered,
)
from relay.bench.ledger import percentile
from relay.bench.report import Measurement, Row, fmt
from relay.closing import Closing
from relay.core import Relay
from relay.keys import Keys
from relay.lanes import DeviceSim

POLL_S = 10.0
EACH_S = 1.0
TARGET_P99_MS = 25.0
#: "No worse with the backlog": its p99 within this factor of the empty setup's, both
#: measured in the same minutes (run-to-run noise of a p99 over a few hundred samples).
SAME_FACTOR = 1.25
WAIT_S = 60.0
CUSTOMER_BASE = 900_000_000


class Setup(Closing):
    """A simulator, a key prefix and running workers, with ``backlog`` bulk messages queued."""

    def __init__(self, cfg: BenchConfig, name: str, backlog: int) -> None:
        self.cfg, self.backlog = cfg, backlog
        self.devices = phones(cfg.latency_devices, poll=POLL_S, each=EACH_S)
        self.sim = SimProcess(self.devices)
        self.scope = Scope(cfg.redis_url, name)
        self.settings = self.scope.settings(self.sim)
        self.conn = self.scope.conn()
        self.workers: Workers | None = None
        self.relay: Relay | None = None
        self.sent: dict[int, float] = {}
        self.ids: dict[int, str] = {}
        self.enqueue_s = 0.0
        self.keep_keys = False
        """Leave the prefix's keys in Redis at close (a failed soak run, for inspection)."""

    def __enter__(self) -> Setup:
        try:
            self.workers = start_workers(
                self.settings, self.cfg.latency_workers, self.cfg.log_dir, burst=False
            )
            self.relay = Relay(self.settings)
            return self
        except BaseException:
            self.close()
            raise

    def ready(self) -> None:
        """Wait for the workers, then queue the backlog."""
        count = self.cfg.latency_workers
        if not wait_until(lambda: workers_registered(self.conn, self.settings, count), WAIT_S):
            raise BenchError("the relay workers did not start")
        start = time.monotonic()
        if self.backlog and self.relay is not None:
            ids = [d.id for d in self.devices]
            self.relay.send_many(messages(self.backlog, ids, body_len=self.cfg.body_len, seed=7))
        self.enqueue_s = time.monotonic() - start

    def send(self, i: int) -> None:
        """Send urgent sample ``i`` and note when ``send`` returned."""
        assert self.relay is not None
        cid = CUSTOMER_BASE + i
        device = self.devices[i % len(self.devices)].id
        self.ids[cid] = self.relay.send(
            f"+49151{i:08d}", f"Your code is {100000 + i}", device, urgent=True, customerid=cid
        )
        self.sent[cid] = time.time()

    def arrivals(self) -> dict[int, float]:
        """When each urgent sample that reached the simulator was stored (customer id → s)."""
        return {
            entry["customerid"]: entry["stored_at"]
            for entry in self.sim.ledger()
            if entry.get("customerid") in self.sent
        }

    def latencies(self, wait: float = WAIT_S) -> list[float]:
        """Milliseconds from each return of ``send`` to the store, once all are stored."""
        found: dict[int, float] = {}

        def all_stored() -> bool:
            found.update(self.arrivals())
            return len(found) == len(self.sent)

        if not wait_until(all_stored, wait, poll=0.5):
            raw: dict[bytes, bytes] = self.conn.hgetall(  # type: ignore[assignment]
                Keys(self.settings.key_prefix).counts
            )
            counts = {k.decode(): int(v) for k, v in raw.items()}
            raise BenchError(
                f"only {len(found)} of {len(self.sent)} urgent messages arrived "
                f"(relay's states: {counts})"
            )
        return [(found[cid] - at) * 1000 for cid, at in self.sent.items()]

    def bulk_queued(self) -> int:
        keys = Keys(self.settings.key_prefix)
        return sum(int(self.conn.llen(keys.lane(DeviceSim(d.id, 0).bulk))) for d in self.devices)

    def result(self) -> dict[str, Any]:
        lat = self.latencies()
        return {
            "backlog": self.backlog,
            "backlog_enqueue_s": self.enqueue_s,
            "bulk_still_queued": self.bulk_queued(),
            "samples": len(lat),
            "p50_ms": percentile(lat, 0.50),
            "p90_ms": percentile(lat, 0.90),
            "p99_ms": percentile(lat, 0.99),
            "max_ms": max(lat),
            "workers": self.cfg.latency_workers,
        }

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
        if self.workers is not None:
            self.workers.stop()
        self.sim.close()
        if not self.keep_keys:
            self.scope.cleanup()
        self.conn.close()


def measure(cfg: BenchConfig) -> Measurement:
    """Both setups up, the samples alternating between them; p99s against the target and
    against each other."""
    m = Measurement("latency")
    with (
        Setup(cfg, "latency", cfg.latency_backlog) as loaded,
        Setup(cfg, "latency-empty", 0) as empty,
    ):
        loaded.ready()
        empty.ready()
        time.sleep(cfg.latency_settle)
        rng = random.Random(8)
        for i in range(2 * cfg.latency_samples):
            (loaded if i % 2 == 0 else empty).send(i)
            time.sleep(cfg.latency_gap * rng.uniform(0.5, 1.5))
        with_backlog, without = loaded.result(), empty.result()
    factor = with_backlog["p99_ms"] / without["p99_ms"] if without["p99_ms"] > 0 else float("inf")
    m.values = {
        "with_backlog": with_backlog,
        "empty": without,
        "p99_ratio": factor,
        "phones": {"delaybetweeneachsms": EACH_S, "delaybetweenrequest": POLL_S},
    }
    t1 = m.target(
        "urgent p99 with backlog", with_backlog["p99_ms"], TARGET_P99_MS, at_least=False, unit=" ms"
    )
    t2 = m.target("p99 backlog / p99 empty", factor, SAME_FACTOR, at_least=False, unit="x")
    m.rows = [
        Row(
            f"urgent p50 / p99, {with_backlog['backlog']:,} bulk queued",
            f"{fmt(with_backlog['p50_ms'])} / {fmt(with_backlog['p99_ms'])} ms",
            f"{with_backlog['samples']} samples, {cfg.latency_workers} workers",
            t1,
        ),
        Row(
            "urgent p50 / p99, empty lanes",
            f"{fmt(without['p50_ms'])} / {fmt(without['p99_ms'])} ms",
            f"max {fmt(with_backlog['max_ms'])} / {fmt(without['max_ms'])} ms",
        ),
        Row(
            "  p99 backlog / empty",
            fmt(factor, "x"),
            f"bulk still queued after: {with_backlog['bulk_still_queued']:,}",
            t2,
        ),
    ]
    return m
