"""The events stream as readers see it: parsed events, consumer groups, acknowledgement and
taking over what a dead consumer left, on both Redis servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.typing import EncodableT, FieldT

from relay.context import Context
from relay.results.events import Event, ack, ensure_group, pending_ids, read_events
from relay.settings import load_settings
from relay.states import State
from tests.fixtures.replies import entries


@pytest.fixture
def ctx(redis_url: str, key_prefix: str) -> Iterator[Context]:
    settings = load_settings(redis_url=redis_url, key_prefix=key_prefix)
    context = Context.from_settings(settings, conn=redis.Redis.from_url(redis_url))
    yield context
    context.close()


def new_message(ctx: Context, msg_id: str, **fields: str | int) -> None:
    record: dict[FieldT, EncodableT] = {
        "sendto": "+4915752982212",
        "body": "hi",
        "device_id": 260,
        "sim": 1,
        "urgent": 1,
        "state": "submitted",
        "final": 0,
    }
    record.update(**fields)
    ctx.conn.hset(ctx.keys.msg(msg_id), mapping=record)


def changes(ctx: Context, n: int) -> list[str]:
    """``n`` messages each moved submitted → delivered: ``n`` events."""
    ids = [f"m{i:03d}" for i in range(n)]
    for msg_id in ids:
        new_message(ctx, msg_id, customerid=7)
    per = [{"sms_id": 62800000 + i, "status": 7, "statustitle": "delivered"} for i in range(n)]
    ctx.store.transition(ids, State.DELIVERED, [State.SUBMITTED], per_message=per)
    return ids


def test_an_event_carries_every_field_of_the_change(ctx: Context) -> None:
    new_message(ctx, "m1", customerid=42)
    ctx.store.transition(
        ["m1"],
        State.FAILED,
        [State.SUBMITTED],
        fields={"sms_id": 62800001, "status": 9, "statustitle": "not sent", "error": "not sent"},
    )
    (event,) = read_events(ctx, "readers", "r1", 10)
    ((entry_id, _),) = entries(ctx.conn, ctx.keys.events)
    assert event.event_id == entry_id
    assert (event.id, event.state, event.prev, event.final) == ("m1", "failed", "submitted", True)
    assert (event.device_id, event.sim, event.customerid, event.urgent) == (260, 1, 42, True)
    assert (event.sms_id, event.status, event.statustitle, event.error) == (
        62800001,
        9,
        "not sent",
        "not sent",
    )
    assert event.at_ms == int(ctx.conn.hget(ctx.keys.msg("m1"), "t_failed") or 0)
    assert event.is_final
    assert Event.from_dict(event.to_dict()) == event
    assert event.to_dict()["at"].endswith("+00:00")


def test_consumers_of_one_group_share_entries_and_groups_each_get_all(ctx: Context) -> None:
    changes(ctx, 10)
    first = read_events(ctx, "billing", "a", 6)
    second = read_events(ctx, "billing", "b", 6)
    other = read_events(ctx, "audit", "x", 100)
    assert len(first) == 6 and len(second) == 4
    assert {e.event_id for e in first}.isdisjoint(e.event_id for e in second)
    assert sorted(e.event_id for e in first + second) == sorted(e.event_id for e in other)
    assert read_events(ctx, "billing", "a", 6) == []


def test_unacknowledged_entries_go_to_another_consumer_after_the_idle_time(ctx: Context) -> None:
    changes(ctx, 5)
    dead = read_events(ctx, "hooks", "dead-one", 5)
    assert ack(ctx, "hooks", [e.event_id for e in dead[:2]]) == 2
    assert read_events(ctx, "hooks", "alive", 10, min_idle_ms=60_000) == []

    time.sleep(0.05)
    taken = read_events(ctx, "hooks", "alive", 10, min_idle_ms=20)
    assert [e.event_id for e in taken] == [e.event_id for e in dead[2:]]
    assert pending_ids(ctx, "hooks", [e.event_id for e in dead]) == {e.event_id for e in dead[2:]}
    ack(ctx, "hooks", [e.event_id for e in taken])
    assert pending_ids(ctx, "hooks", [e.event_id for e in dead]) == set()


def test_a_new_group_starts_where_it_is_told(ctx: Context) -> None:
    changes(ctx, 3)
    assert ensure_group(ctx, "from-now", start="$") is True
    assert ensure_group(ctx, "from-now", start="$") is False
    assert read_events(ctx, "from-now", "c", 10) == []
    assert len(read_events(ctx, "from-start", "c", 10)) == 3


def test_a_blocking_read_returns_an_event_added_meanwhile(ctx: Context) -> None:
    ensure_group(ctx, "waiters", start="$")
    timer = threading.Timer(0.2, lambda: changes(ctx, 1))
    timer.start()
    try:
        got = read_events(ctx, "waiters", "w", 10, block_ms=5000)
    finally:
        timer.join()
    assert [e.id for e in got] == ["m000"]


def test_a_deleted_stream_gets_its_group_back(ctx: Context) -> None:
    changes(ctx, 2)
    assert len(read_events(ctx, "g", "c", 10)) == 2
    ctx.conn.delete(ctx.keys.events)
    assert read_events(ctx, "g", "c", 10) == []
    changes(ctx, 1)
    assert [e.id for e in read_events(ctx, "g", "c", 10)] == ["m000"]
