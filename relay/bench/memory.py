"""Redis memory per queued message: ``INFO memory`` ``used_memory`` before and after
``send_many`` of N messages with 70-character bodies, divided by N, minus the body.

What a queued message costs: its record hash, its id in the lane list, its ``queued``
event on the events stream, and its share of the main keyspace dictionary. A breakdown
by ``MEMORY USAGE`` (record hashes sampled, the lanes and the stream whole) is reported
beside it: it does not count the dictionary entries, so it comes out a little lower.

The Redis is shared with whatever else runs on it: the delta is taken after the server's
lazy frees settle, and the breakdown says how much of it is relay's own keys.
"""

from __future__ import annotations

import random
import time
import uuid

import redis

from relay.bench.config import BenchConfig
from relay.bench.env import Scope, messages
from relay.bench.report import Measurement, Row, fmt
from relay.core import Relay
from relay.keys import Keys
from relay.lanes import DeviceSim

TARGET_BYTES = 250
SAMPLE = 200


def used_memory(conn: redis.Redis) -> int:
    """``used_memory`` once lazy frees have finished (``lazyfree_pending_objects`` 0)."""
    for _ in range(50):
        info = conn.info("memory")
        if int(info.get("lazyfree_pending_objects", 0)) == 0:
            return int(info["used_memory"])
        time.sleep(0.1)
    return int(conn.info("memory")["used_memory"])


def breakdown(
    conn: redis.Redis, keys: Keys, ids: list[str], devices: list[int]
) -> dict[str, float]:
    """Bytes per message by ``MEMORY USAGE``: record (sampled), lane share, event share."""
    sample = random.Random(0).sample(ids, min(SAMPLE, len(ids)))
    records = [int(conn.memory_usage(keys.msg(i), samples=0) or 0) for i in sample]
    lanes = sum(
        int(conn.memory_usage(keys.lane(DeviceSim(d, 0).bulk), samples=0) or 0) for d in devices
    )
    events = int(conn.memory_usage(keys.events, samples=0) or 0)
    n = len(ids)
    return {
        "record": sum(records) / len(records),
        "lane": lanes / n,
        "event": events / n,
    }


def redis_config(url: str) -> dict[str, str]:
    """The server settings the record encoding depends on (empty when CONFIG is refused)."""
    conn = redis.Redis.from_url(url, decode_responses=True)
    try:
        found: dict[str, str] = {}
        for name in (
            "hash-max-listpack-value",
            "hash-max-listpack-entries",
            "list-max-listpack-size",
            "stream-node-max-bytes",
        ):
            found.update({str(k): str(v) for k, v in conn.config_get(name).items()})
        return found
    except redis.RedisError:
        return {}
    finally:
        conn.close()


def measure(cfg: BenchConfig) -> Measurement:
    """Enqueue ``memory_messages`` messages and measure what Redis holds for them."""
    m = Measurement("memory")
    devices = list(range(7001, 7011))
    items = messages(cfg.memory_messages, devices, body_len=cfg.body_len, seed=4)
    # A prefix as short as relay's default ("relay"): key names are part of the cost.
    scope = Scope(cfg.redis_url, "memory", prefix=f"rb{uuid.uuid4().hex[:6]}")
    conn = scope.conn()
    relay = Relay(scope.settings(), conn=scope.conn())
    try:
        relay.send(**items[0])  # scripts loaded, structures created, before the baseline
        before = used_memory(conn)
        ids = relay.send_many(items[1:])
        after = used_memory(conn)
        parts = breakdown(conn, relay.ctx.keys, ids, devices)
    finally:
        relay.close()
        scope.cleanup()
        conn.close()
    n = len(ids)
    per = (after - before) / n
    beyond = per - cfg.body_len
    m.values = {
        "messages": n,
        "body_len": cfg.body_len,
        "used_memory_delta": after - before,
        "bytes_per_message": per,
        "bytes_beyond_body": beyond,
        "memory_usage_breakdown": parts,
        "per_million_mb": per * 1_000_000 / 2**20,
        "key_prefix_len": len(scope.prefix),
        "redis_config": redis_config(scope.redis_url),
    }
    t = m.target(
        "bytes per message beyond the body", beyond, TARGET_BYTES, at_least=False, unit=" B"
    )
    m.rows = [
        Row("used_memory per message", fmt(per, " B"), f"{n:,} msgs, body {cfg.body_len} B"),
        Row("  beyond the body", fmt(beyond, " B"), "", t),
        Row(
            "  record / lane / event",
            " / ".join(fmt(parts[k]) for k in ("record", "lane", "event")),
            "MEMORY USAGE, bytes",
        ),
        Row("a million queued", fmt(per * 1_000_000 / 2**20, " MiB")),
    ]
    return m
