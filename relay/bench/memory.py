"""Redis memory per queued message: ``INFO memory`` ``used_memory`` before and after
``send_many`` of N messages with 70-character bodies, divided by N, minus the body.

What a queued message costs: its record hash, its id in the lane list, its ``queued``
event on the events stream, and its share of the main keyspace dictionary (the index). The
breakdown is by ``MEMORY USAGE`` (record hashes sampled, the lanes and the stream whole); the
index is what the delta holds beyond those three.

Beside it, in the same run and on the same server, the same messages stored in relay 0.1's
record shape (every field written, the body in one field: a hash table once the body passes
64 bytes; the full first event), so the saving is measured, not remembered.

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
from relay.connection import delete_prefix
from relay.core import Relay
from relay.ids import new_ids
from relay.keys import Keys
from relay.lanes import DeviceSim

TARGET_BYTES = 250
PARTS = ("record", "lane", "event", "index")
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
    conn: redis.Redis, keys: Keys, ids: list[str], devices: list[int], delta: float
) -> dict[str, float]:
    """Bytes per message by ``MEMORY USAGE``: record (sampled), lane share, event share, and
    the index: the rest of the per-message ``used_memory`` delta."""
    sample = random.Random(0).sample(ids, min(SAMPLE, len(ids)))
    records = [int(conn.memory_usage(keys.msg(i), samples=0) or 0) for i in sample]
    lanes = sum(
        int(conn.memory_usage(keys.lane(DeviceSim(d, 0).bulk), samples=0) or 0) for d in devices
    )
    events = int(conn.memory_usage(keys.events, samples=0) or 0)
    n = len(ids)
    parts = {"record": sum(records) / len(records), "lane": lanes / n, "event": events / n}
    parts["index"] = delta - sum(parts.values())
    return parts


def store_old_shape(conn: redis.Redis, keys: Keys, items: list[dict[str, object]]) -> list[str]:
    """``items`` stored as relay 0.1 stored a queued message: the record with every field
    (the body in one field), the id on its lane, the full first event. Returns the ids."""
    now = int(time.time() * 1000)
    ids = new_ids(now, len(items))
    pipe = conn.pipeline(transaction=False)
    for n, (msg_id, item) in enumerate(zip(ids, items, strict=True)):
        dev = int(str(item["device_id"]))
        record = {
            "sendto": str(item["sendto"]),
            "body": str(item["body"]),
            "device_id": dev,
            "sim": 0,
            "urgent": 0,
            "state": "queued",
            "final": 0,
            "t_queued": now,
            "attempts": 0,
        }
        pipe.hset(keys.msg(msg_id), mapping=record)  # type: ignore[arg-type]
        pipe.rpush(keys.lane(DeviceSim(dev, 0).bulk), msg_id)
        event = {"id": msg_id, "state": "queued", "prev": "", "final": 0, "at": now}
        event |= {"device_id": dev, "sim": 0, "urgent": 0}
        pipe.xadd(keys.events, event)  # type: ignore[arg-type]
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return ids


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
        n = len(ids)
        parts = breakdown(conn, relay.ctx.keys, ids, devices, (after - before) / n)
        scope.cleanup()
        old_keys = Keys(f"{scope.prefix}o")  # as short a prefix, a keyspace of its own
        before_old = used_memory(conn)
        old_ids = store_old_shape(conn, old_keys, items[1:])
        after_old = used_memory(conn)
        old_parts = breakdown(conn, old_keys, old_ids, devices, (after_old - before_old) / n)
        delete_prefix(conn, old_keys.prefix)
    finally:
        relay.close()
        scope.cleanup()
        conn.close()
    per = (after - before) / n
    beyond = per - cfg.body_len
    old_beyond = (after_old - before_old) / n - cfg.body_len
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
        "shape_0_1": {"bytes_beyond_body": old_beyond, "memory_usage_breakdown": old_parts},
    }
    t = m.target(
        "bytes per message beyond the body", beyond, TARGET_BYTES, at_least=False, unit=" B"
    )
    m.rows = [
        Row("used_memory per message", fmt(per, " B"), f"{n:,} msgs, body {cfg.body_len} B"),
        Row("  beyond the body", fmt(beyond, " B"), "", t),
        Row(
            "  record / lane / event / index",
            " / ".join(fmt(parts[k]) for k in PARTS),
            "0.1 shape: " + " / ".join(fmt(old_parts[k]) for k in PARTS),
        ),
        Row(
            "  0.1's record shape, beyond the body", fmt(old_beyond, " B"), "same run, same server"
        ),
        Row("a million queued", fmt(per * 1_000_000 / 2**20, " MiB")),
    ]
    return m
