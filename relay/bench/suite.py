"""Running a bench: the measurements of a config, in order, each on its own key prefix.

A measurement that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

import redis

from relay.bench.config import MEASURES, BenchConfig
from relay.bench.env import BenchError, check_real_redis
from relay.bench.report import Measurement, Results
from relay.log import get_logger

log = get_logger(__name__)

__all__ = ["MEASURES", "BenchConfig", "BenchError", "Results", "run"]


def _measure_func(name: str) -> Callable[[BenchConfig], Measurement]:
    func: Callable[[BenchConfig], Measurement] = import_module(f"relay.bench.{name}").measure
    return func


def engine(url: str, info: dict[str, Any]) -> dict[str, Any]:
    """What the numbers were measured on: the server (Redis, or Valkey such as the embedded
    engine), its version and its memory allocator (memory figures depend on it)."""
    name = str(info.get("server_name") or "redis")
    found = {k: info.get(k) for k in ("redis_version", "os", "arch_bits", "process_id")}
    conn = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        allocator = conn.info("memory").get("mem_allocator")
    finally:
        conn.close()
    version = info.get(f"{name}_version") or info.get("redis_version")
    return found | {"engine": f"{name} {version}", "mem_allocator": allocator}


def run(cfg: BenchConfig, on_done: Callable[[Measurement], None] | None = None) -> Results:
    """Make every measurement of ``cfg`` in order; ``on_done`` is told of each as it ends.

    Raises :class:`BenchError` up front when ``cfg.redis_url`` is not a real Redis server.
    """
    info = check_real_redis(cfg.redis_url)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    if cfg.profile_dir is not None:
        cfg.profile_dir.mkdir(parents=True, exist_ok=True)
    results = Results(cfg.to_dict(), engine(cfg.redis_url, info))
    for name in cfg.measures:
        load = os.getloadavg()[0]
        start = time.monotonic()
        log.info("bench.start", measure=name)
        try:
            m = _measure_func(name)(cfg)
        except Exception as exc:  # one failed measurement must not lose the others
            log.exception("bench.failed", measure=name)
            m = Measurement(name, error=f"{type(exc).__name__}: {exc}")
        m.seconds = time.monotonic() - start
        m.load = (load, os.getloadavg()[0])
        results.measurements.append(m)
        if on_done is not None:
            on_done(m)
    return results
