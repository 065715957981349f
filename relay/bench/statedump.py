"""What relay's keys say about a lane that stands still: the soak's failure dump.

:func:`dump_state` reads one key prefix — lanes (length and head ids), tickets with their
progress keys, timers, in-flight batches, heartbeats, the RQ state of every ticket job and
of the queues, and the records of the messages that did not arrive — as one JSON-ready dict.
Read-only: the keys stay as they were, for a look with ``redis-cli`` afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq.job import Job
from rq.registry import StartedJobRegistry

from relay.connection import maybe_text, text
from relay.keys import Keys
from relay.lanes import KINDS, device_sims
from relay.store import read_records

HEAD_IDS = 10
"""Ids shown from the head of each lane."""
JOB_FIELDS = (
    "status",
    "worker_name",
    "origin",
    "enqueued_at",
    "started_at",
    "ended_at",
    "timeout",
    "description",
)


def dump_state(conn: redis.Redis, prefix: str, missing_ids: Sequence[str]) -> dict[str, Any]:
    """Everything the sweep judges, for prefix ``prefix`` (see the module docstring)."""
    k = Keys(prefix)
    lanes = _lanes(conn, k)
    holders = [t["ticket"] for t in lanes if t["ticket"] and t["ticket"] != "timer"]
    records = read_records(conn, k, list(missing_ids))
    return {
        "prefix": prefix,
        "now_ms": int(time.time() * 1000),
        "lanes": lanes,
        "timers": _zset(conn, k.timers),
        "inflight": _inflight(conn, k),
        "heartbeats": _heartbeats(conn, k),
        "rq": _rq(conn, k, holders),
        "missing": dict(zip(missing_ids, records, strict=True)),
    }


def _lanes(conn: redis.Redis, k: Keys) -> list[dict[str, Any]]:
    lanes = [pair.lane(kind) for pair in device_sims(conn, k) for kind in KINDS]
    with conn.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.llen(k.lane(lane))
            pipe.lrange(k.lane(lane), 0, HEAD_IDS - 1)
            pipe.get(k.ticket(lane))
            pipe.get(k.progress(lane))
            pipe.pttl(k.progress(lane))
        raw = pipe.execute()
    return [
        {
            "lane": lane.member,
            "length": int(raw[5 * i]),
            "head": [text(v) for v in raw[5 * i + 1]],
            "ticket": maybe_text(raw[5 * i + 2]),
            "progress": maybe_text(raw[5 * i + 3]),
            "progress_ttl_ms": int(raw[5 * i + 4]),
        }
        for i, lane in enumerate(lanes)
    ]


def _zset(conn: redis.Redis, key: str) -> dict[str, float]:
    entries: Any = conn.zrange(key, 0, -1, withscores=True)
    return {text(member): float(score) for member, score in entries}


def _inflight(conn: redis.Redis, k: Keys) -> dict[str, Any]:
    batches = _zset(conn, k.inflight)
    with conn.pipeline(transaction=False) as pipe:
        for bid in batches:
            pipe.hgetall(k.batch(bid))
        raw = pipe.execute()
    return {
        bid: {"claimed_ms": at, **{text(f): text(v) for f, v in row.items()}}
        for (bid, at), row in zip(batches.items(), raw, strict=True)
    }


def _heartbeats(conn: redis.Redis, k: Keys) -> dict[str, Any]:
    raw: Any = conn.hgetall(k.processes)
    now_ms = time.time() * 1000
    beats = {}
    for name, value in raw.items():
        try:
            data = json.loads(value)
        except ValueError:
            data = {"raw": text(value)}
        if isinstance(data.get("seen"), int | float):
            data["age_s"] = round((now_ms - data["seen"]) / 1000, 3)
        beats[text(name)] = data
    return beats


def _rq(conn: redis.Redis, k: Keys, holders: Sequence[str]) -> dict[str, Any]:
    with conn.pipeline(transaction=False) as pipe:
        for job in holders:
            pipe.hmget(Job.key_for(job), list(JOB_FIELDS))
        raw = pipe.execute()
    jobs = {
        job: {f: maybe_text(v) for f, v in zip(JOB_FIELDS, row, strict=True)}
        for job, row in zip(holders, raw, strict=True)
    }
    queues = {}
    for name in (k.urgent_queue, k.bulk_queue):
        started = StartedJobRegistry(name, connection=conn)
        queues[name] = {
            "queued": int(conn.llen(f"rq:queue:{name}")),
            "started": [text(j) for j in started.get_job_ids()],
        }
    return {"ticket_jobs": jobs, "queues": queues}
