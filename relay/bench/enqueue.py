"""Enqueue rate: ``Relay.send`` vs RQ ``Queue.enqueue`` one at a time, and ``send_many``
vs RQ ``enqueue_many`` (jobs made with ``Queue.prepare_data``, 1,000 per pipeline, like
relay's chunks), with the same messages on the same Redis, no worker running.

The RQ job is the one-message job of :mod:`relay.bench.rqside` (a trivial function path,
JSON serializer). Each side gets a short warm-up first (script load, connections).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from relay.bench.config import BenchConfig
from relay.bench.env import Scope, messages, redis_cpu
from relay.bench.report import Measurement, Row, fmt
from relay.bench.rqside import JOB_FUNC, cleanup, job_args, queue
from relay.core import Relay

WARMUP = 50
CHUNK = 1000
TARGET_RATIO = 3.0


def rate(count: int, run: Callable[[], object]) -> float:
    """Items per second of ``run`` (which handles ``count`` items)."""
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def relay_single(relay: Relay, items: Sequence[dict[str, Any]]) -> float:
    def run() -> None:
        for item in items:
            relay.send(item["sendto"], item["body"], item["device_id"])

    return rate(len(items), run)


def relay_many(relay: Relay, items: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """(messages per second, Redis CPU µs per message) of ``send_many``."""
    before = redis_cpu(relay.ctx.conn)
    per_s = rate(len(items), lambda: relay.send_many(items))
    return per_s, (redis_cpu(relay.ctx.conn) - before) * 1e6 / len(items)


def rq_single(scope: Scope, name: str, items: Sequence[dict[str, Any]]) -> float:
    q = queue(scope.conn(), name)

    def run() -> None:
        for item in items:
            q.enqueue(JOB_FUNC, *job_args(item))

    return rate(len(items), run)


def rq_many(scope: Scope, name: str, items: Sequence[dict[str, Any]]) -> float:
    conn = scope.conn()
    q = queue(conn, name)

    def run() -> None:
        for start in range(0, len(items), CHUNK):
            datas = [
                q.prepare_data(JOB_FUNC, args=job_args(item))
                for item in items[start : start + CHUNK]
            ]
            with conn.pipeline() as pipe:
                q.enqueue_many(datas, pipeline=pipe)
                pipe.execute()

    return rate(len(items), run)


def measure(cfg: BenchConfig) -> Measurement:
    """Both comparisons, relay first then RQ, each on a fresh prefix and queue."""
    m = Measurement("enqueue")
    devices = list(range(7001, 7011))
    single = messages(cfg.enqueue_single, devices, body_len=cfg.body_len, seed=1)
    many = messages(cfg.enqueue_many, devices, body_len=cfg.body_len, seed=2)
    warm = messages(WARMUP, devices, body_len=cfg.body_len, seed=3)
    scope = Scope(cfg.redis_url, "enqueue")
    rq_name = f"{scope.prefix}-rq"
    relay = Relay(scope.settings())
    try:
        relay_single(relay, warm)
        rq_single(scope, rq_name, warm)
        r_single = relay_single(relay, single)
        q_single = rq_single(scope, rq_name, single)
        relay_many(relay, warm)
        rq_many(scope, rq_name, warm)
        r_many, redis_us = relay_many(relay, many)
        q_many = rq_many(scope, rq_name, many)
    finally:
        relay.close()
        cleanup(scope.conn(), rq_name)
        scope.cleanup()
    m.values = {
        "single": {
            "messages": len(single),
            "relay_per_s": r_single,
            "rq_per_s": q_single,
            "ratio": r_single / q_single,
        },
        "many": {
            "messages": len(many),
            "relay_per_s": r_many,
            "rq_per_s": q_many,
            "ratio": r_many / q_many,
            "chunk": CHUNK,
            "relay_redis_cpu_us_per_msg": redis_us,
        },
    }
    t1 = m.target(
        "send vs Queue.enqueue", r_single / q_single, TARGET_RATIO, at_least=True, unit="x"
    )
    t2 = m.target(
        "send_many vs enqueue_many", r_many / q_many, TARGET_RATIO, at_least=True, unit="x"
    )
    m.rows = [
        Row("send, one at a time (msgs/s)", fmt(r_single), f"RQ enqueue {fmt(q_single)}"),
        Row("  ratio", fmt(r_single / q_single, "x"), "", t1),
        Row("send_many (msgs/s)", fmt(r_many), f"RQ enqueue_many {fmt(q_many)}"),
        Row("  ratio", fmt(r_many / q_many, "x"), f"Redis CPU {fmt(redis_us)} µs/msg", t2),
    ]
    return m
