"""Scheduled messages join their lanes when due: promote_due, on both Redis servers."""

from __future__ import annotations

import threading
from collections import Counter

import redis

from relay.clock import FakeClock
from relay.connection import text
from relay.context import Context
from relay.core import Relay
from relay.dispatch.tickets import queue
from relay.keys import Keys
from relay.lanes import LaneId
from relay.produce.schedule import promote_due
from relay.settings import load_settings
from relay.states import State
from tests.fixtures.context import T0
from tests.fixtures.replies import entries

PHONE = "+4915752982212"


def lane(conn: redis.Redis, key: str) -> list[str]:
    return [text(v) for v in conn.lrange(key, 0, -1)]


def states(conn: redis.Redis, keys: Keys) -> dict[str, int]:
    return {text(k): int(v) for k, v in conn.hgetall(keys.counts).items() if int(v)}


def test_nothing_moves_before_its_time(
    relay: Relay, clock: FakeClock, redis_conn: redis.Redis, keys: Keys
) -> None:
    msg_id = relay.send(PHONE, "later", 260, timetosend=T0 + 60)
    assert promote_due(relay.ctx) == 0
    clock.advance(59.999)
    assert promote_due(relay.ctx) == 0
    assert relay.status(msg_id).state == State.SCHEDULED
    assert redis_conn.llen(keys.lane(LaneId("b", 260, 0))) == 0
    assert queue(redis_conn, keys, "b").count == 0


def test_a_due_message_is_queued_in_its_lane_with_a_ticket(
    relay: Relay, clock: FakeClock, redis_conn: redis.Redis, keys: Keys
) -> None:
    now = relay.send(PHONE, "now", 260, urgent=True)
    later = relay.send(PHONE, "later", 260, urgent=True, timetosend=T0 + 60)
    redis_conn.delete(keys.ticket(LaneId("u", 260, 0)))  # the first message's ticket has run
    clock.advance(61)
    assert promote_due(relay.ctx) == 1
    msg = relay.status(later)
    assert msg.state == State.QUEUED
    assert set(msg.times) == {"scheduled", "queued"}
    assert lane(redis_conn, keys.lane(LaneId("u", 260, 0))) == [now, later]
    assert redis_conn.zcard(keys.sched(LaneId("u", 260, 0))) == 0
    assert redis_conn.zcard(keys.sched_due) == 0
    urgent = queue(redis_conn, keys, "u")
    assert urgent.count == 2
    assert redis_conn.get(keys.ticket(LaneId("u", 260, 0))) == urgent.job_ids[-1].encode()
    assert states(redis_conn, keys) == {"queued": 2}
    last = entries(redis_conn, keys.events)[-1][1]
    assert (last["id"], last["state"], last["prev"]) == (later, "queued", "scheduled")
    assert promote_due(relay.ctx) == 0


def test_due_messages_join_in_due_order_and_sched_due_follows(
    relay: Relay, clock: FakeClock, redis_conn: redis.Redis, keys: Keys
) -> None:
    ids = {
        due: relay.send(PHONE, f"at {due}", 261, sim=1, timetosend=T0 + due) for due in (30, 10, 20)
    }
    last = relay.send(PHONE, "much later", 261, sim=1, timetosend=T0 + 100)
    assert redis_conn.zscore(keys.sched_due, "b:261:1") == (T0 + 10) * 1000
    clock.advance(40)
    assert promote_due(relay.ctx) == 3
    assert lane(redis_conn, keys.lane(LaneId("b", 261, 1))) == [ids[10], ids[20], ids[30]]
    assert redis_conn.zscore(keys.sched_due, "b:261:1") == (T0 + 100) * 1000
    assert relay.status(last).state == State.SCHEDULED
    assert states(redis_conn, keys) == {"queued": 3, "scheduled": 1}


def test_limit_caps_one_call(
    relay: Relay, clock: FakeClock, redis_conn: redis.Redis, keys: Keys
) -> None:
    relay.send_many(
        [
            {"sendto": PHONE, "body": str(i), "device_id": 260 + i % 2, "timetosend": T0 + 1 + i}
            for i in range(5)
        ]
    )
    clock.advance(10)
    assert promote_due(relay.ctx, limit=2) == 2
    assert promote_due(relay.ctx, limit=2) == 2
    assert promote_due(relay.ctx, limit=2) == 1
    assert promote_due(relay.ctx, limit=2) == 0
    assert states(redis_conn, keys) == {"queued": 5}
    assert redis_conn.zcard(keys.sched_due) == 0


def test_a_running_ticket_is_not_armed_again(
    relay: Relay, clock: FakeClock, redis_conn: redis.Redis, keys: Keys
) -> None:
    relay.send(PHONE, "now", 260)  # arms the bulk ticket, still "running"
    relay.send(PHONE, "later", 260, timetosend=T0 + 5)
    clock.advance(5)
    assert promote_due(relay.ctx) == 1
    assert queue(redis_conn, keys, "b").count == 1
    assert redis_conn.llen(keys.lane(LaneId("b", 260, 0))) == 2


def test_a_cancelled_message_is_not_promoted_and_the_schedule_heals(
    relay: Relay, clock: FakeClock, redis_conn: redis.Redis, keys: Keys
) -> None:
    first = relay.send(PHONE, "first", 260, timetosend=T0 + 10)
    second = relay.send(PHONE, "second", 260, timetosend=T0 + 50)
    relay.cancel(first)
    clock.advance(20)
    assert promote_due(relay.ctx) == 0  # sched-due still said T0+10: corrected now
    assert redis_conn.zscore(keys.sched_due, "b:260:0") == (T0 + 50) * 1000
    assert redis_conn.llen(keys.lane(LaneId("b", 260, 0))) == 0
    assert relay.status(first).state == State.CANCELLED
    clock.advance(30)
    assert promote_due(relay.ctx) == 1
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [second]
    assert states(redis_conn, keys) == {"cancelled": 1, "queued": 1}


def test_malformed_sched_due_members_are_dropped(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    redis_conn.zadd(keys.sched_due, {"x:1:0": 1, "b:one:0": 1, "b:260": 1})
    assert promote_due(relay.ctx) == 0
    assert redis_conn.zcard(keys.sched_due) == 0
    assert LaneId.parse(b"u:260:1") == LaneId("u", 260, 1)
    assert LaneId.parse("b:260:x") is None


def test_concurrent_promoters_never_duplicate(
    relay: Relay,
    clock: FakeClock,
    redis_url: str,
    key_prefix: str,
    redis_conn: redis.Redis,
    keys: Keys,
) -> None:
    items = [
        {
            "sendto": PHONE,
            "body": f"m{i}",
            "device_id": 260 + i % 3,
            "urgent": i % 4 == 0,
            "timetosend": T0 + 1 + (i % 7),
        }
        for i in range(600)
    ]
    ids = relay.send_many(items)
    clock.advance(10)
    settings = load_settings(redis_url=redis_url, key_prefix=key_prefix)
    ctxs = [Context.from_settings(settings, clock=clock) for _ in range(4)]
    moved = [0] * len(ctxs)
    start = threading.Barrier(len(ctxs))

    def promoter(n: int) -> None:
        start.wait()
        while True:
            got = promote_due(ctxs[n], limit=50)
            if not got and not redis_conn.zcard(keys.sched_due):
                return
            moved[n] += got

    threads = [threading.Thread(target=promoter, args=(n,)) for n in range(len(ctxs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for ctx in ctxs:
        ctx.close()
    assert sum(moved) == 600
    in_lanes: Counter[str] = Counter()
    for dev in (260, 261, 262):
        for kind in ("u", "b"):
            in_lanes.update(lane(redis_conn, keys.lane(LaneId(kind, dev, 0))))
    assert in_lanes == Counter(ids)
    assert states(redis_conn, keys) == {"queued": 600}
    queued_events = Counter(
        f["id"] for _, f in entries(redis_conn, keys.events) if f["state"] == "queued"
    )
    assert set(queued_events.values()) == {1} and len(queued_events) == 600
    assert queue(redis_conn, keys, "u").count + queue(redis_conn, keys, "b").count == 6
