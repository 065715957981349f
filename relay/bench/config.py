"""The sizes of each measurement: ``quick`` (about a minute), ``full`` (a few minutes on
two cores) and ``tiny`` (the test suite's smoke run)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

MEASURES = (
    "enqueue",
    "memory",
    "endtoend",
    "latency",
    "calls",
    "scaleout",
    "reconcile",
    "replicas",
    "http",
    "pools",
)
"""Every measurement, in the order a run makes them."""


@dataclass(frozen=True)
class BenchConfig:
    """How big each measurement is, and where the bench runs."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    mode: str = "full"
    measures: tuple[str, ...] = MEASURES
    log_dir: Path = Path("bench-logs")
    profile_dir: Path | None = None
    # enqueue
    enqueue_single: int = 3_000
    enqueue_many: int = 20_000
    # memory
    memory_messages: int = 100_000
    body_len: int = 70
    # end to end
    e2e_messages: int = 100_000
    e2e_devices: int = 10
    rq_messages: int = 2_000
    rq_probe: int = 200
    # urgent latency
    latency_backlog: int = 100_000
    latency_devices: int = 10
    latency_samples: int = 1_000
    latency_gap: float = 0.02
    latency_workers: int = 2
    latency_settle: float = 2.0
    # gateway calls per message
    calls_messages: int = 10_000
    calls_devices: int = 10
    reconcile_interval: float | None = None
    # scale-out
    scale_messages: int = 40_000
    scale_devices: int = 50
    scale_each: float = 0.005
    scale_poll: float = 0.5
    scale_workers: tuple[int, ...] = (1, 2, 4)
    paced_devices: int = 10
    paced_each: float = 0.05
    paced_messages: int = 1_000
    # reconciler
    reconcile_messages: int = 10_000
    reconcile_devices: int = 10
    # RELAY_REDIS_MIN_REPLICAS=1 against 0
    replicas_single: int = 3_000
    replicas_many: int = 30_000
    replicas_batches: int = 20_000
    # HTTP API (relay serve)
    http_seconds: float = 5.0
    http_connections: int = 32
    http_batch: int = 1000
    http_batch_connections: int = 4
    # device pools
    pools_messages: int = 3_000
    pools_devices: int = 10
    pools_each: float = 0.05
    pools_poll: float = 0.5
    pools_samples: int = 200

    @classmethod
    def for_mode(cls, mode: str, **overrides: Any) -> BenchConfig:
        """The sizes of ``mode`` (``full``, ``quick`` or ``tiny``), with ``overrides``."""
        base = cls(mode=mode)
        if mode == "quick":
            base = replace(
                base,
                enqueue_single=1_000,
                enqueue_many=5_000,
                memory_messages=20_000,
                e2e_messages=10_000,
                rq_messages=150,
                rq_probe=30,
                latency_backlog=20_000,
                latency_samples=300,
                calls_messages=2_000,
                scale_messages=6_000,
                reconcile_messages=2_000,
                replicas_single=1_500,
                replicas_many=15_000,
                replicas_batches=10_000,
                http_seconds=3.0,
                pools_messages=1_000,
                pools_samples=100,
            )
        elif mode == "tiny":
            base = replace(
                base,
                enqueue_single=50,
                enqueue_many=300,
                memory_messages=500,
                e2e_messages=600,
                e2e_devices=2,
                rq_messages=10,
                rq_probe=10,
                latency_backlog=200,
                latency_devices=2,
                latency_samples=5,
                latency_workers=1,
                latency_settle=0.2,
                calls_messages=100,
                calls_devices=2,
                reconcile_interval=1.0,
                scale_messages=300,
                scale_devices=3,
                scale_workers=(1, 2),
                paced_messages=60,
                paced_devices=2,
                reconcile_messages=100,
                reconcile_devices=2,
                replicas_single=30,
                replicas_many=300,
                replicas_batches=200,
                http_seconds=0.5,
                http_connections=4,
                http_batch=50,
                http_batch_connections=2,
                pools_messages=60,
                pools_devices=2,
                pools_samples=3,
            )
        elif mode != "full":
            raise ValueError(f"unknown mode {mode!r}: full, quick or tiny")
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["log_dir"] = str(self.log_dir)
        data["profile_dir"] = str(self.profile_dir) if self.profile_dir else None
        data["measures"] = list(self.measures)
        data["scale_workers"] = list(self.scale_workers)
        return data
