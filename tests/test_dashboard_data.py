"""What the dashboard reads, kept in Redis by relay itself: changes of state per minute
(``lua/transition.lua``), urgent latency samples (``lua/latency.lua``, written where urgent
messages are stored), and the lookup by relay id, drop-in id and phone. Both Redis servers;
messages moved by the real dispatcher against the simulator where it matters."""

from __future__ import annotations

import time

import pytest

from relay.clock import FakeClock
from relay.context import Context
from relay.dropin.ids import DropinIds
from relay.produce.producer import Producer
from relay.results import history
from relay.results.history import LATENCY_TTL_S, minute_of, percentile, read_history
from relay.results.lookup import kinds_of, lookup
from relay.run.burst import run_until_idle
from relay.simulator import Simulator
from relay.states import State
from tests.fixtures.workers import MakeSettings

START = 1_800_000_000.0  # a minute boundary (30,000,000 minutes)


def msg(i: int, **extra: object) -> dict[str, object]:
    return {"sendto": f"+4915752{i:06d}", "body": f"m{i}", "device_id": 260, **extra}


def test_changes_of_state_are_counted_per_minute_and_expire(relay_settings: MakeSettings) -> None:
    clock = FakeClock(START + 5)
    ctx = Context.from_settings(relay_settings(), clock=clock)
    ids = Producer(ctx).send_many([msg(i) for i in range(5)])
    store = ctx.store
    assert store.transition(ids[:3], State.SUBMITTING, [State.QUEUED]) == ids[:3]
    assert store.transition(ids[:3], State.SUBMITTED, [State.SUBMITTING]) == ids[:3]
    assert store.transition(ids[:3], State.SUBMITTED, [State.SUBMITTING]) == []  # no change
    clock.advance(60)  # the next minute
    assert store.transition(ids[:2], State.DELIVERED, [State.SUBMITTED]) == ids[:2]
    assert store.transition(ids[3:4], State.CANCELLED, [State.QUEUED]) == ids[3:4]

    doc = read_history(Context.from_settings(ctx.settings, clock=clock), minutes=3)
    assert [row["minute"] for row in doc["throughput"]] == [START - 60, START, START + 60]
    _, first, second = doc["throughput"]
    assert (first["submitted"], first["delivered"], first["cancelled"]) == (3, 0, 0)
    assert (second["submitted"], second["delivered"], second["cancelled"]) == (0, 2, 1)
    assert doc["states"][0] == "submitted" and "queued" not in doc["states"]
    key = ctx.keys.history(minute_of(int((START + 60) * 1000)))
    assert 89_000 < ctx.conn.ttl(key) <= 90_000  # kept 25 h


def test_history_spans_the_asked_minutes(relay_settings: MakeSettings) -> None:
    ctx = Context.from_settings(relay_settings(), clock=FakeClock(START))
    doc = read_history(ctx, minutes=5000)
    assert doc["minutes"] == 1440 and len(doc["throughput"]) == 1440
    assert doc["throughput"][-1]["minute"] == START
    assert [w["minutes"] for w in doc["latency"]] == [5, 60]
    assert all(w["count"] == 0 and w["p50_ms"] is None for w in doc["latency"])


def test_urgent_latency_is_recorded_where_urgent_messages_are_stored(
    relay_settings: MakeSettings, simulator: Simulator
) -> None:
    ctx = Context.from_settings(relay_settings(simulator))
    producer = Producer(ctx)
    before = time.time()
    urgent = producer.send_many([msg(i, urgent=True) for i in range(3)])
    producer.send_many([msg(10 + i) for i in range(4)])  # bulk: no samples
    assert run_until_idle(ctx, 30)
    elapsed_ms = (time.time() - before) * 1000
    records = ctx.store.get_many(urgent)
    assert all(r is not None and r.state == State.SUBMITTED for r in records)
    doc = read_history(ctx)
    five, sixty = doc["latency"]
    assert five["count"] == sixty["count"] == 3
    assert 0 <= five["p50_ms"] <= five["p99_ms"] <= elapsed_ms
    # each sample is stored at the gateway minus queued, from the records' own times (the
    # dispatcher reads its clock for the sample a moment before the transition reads it)
    expected = sorted(
        round(r.times[State.SUBMITTED].timestamp() * 1000)
        - round(r.times[State.QUEUED].timestamp() * 1000)
        for r in records
        if r is not None
    )
    samples = []
    for minute in {
        minute_of(round(r.times[State.SUBMITTED].timestamp() * 1000)) for r in records if r
    }:
        key = ctx.keys.latency(minute)
        samples += [int(v) for v in ctx.conn.lrange(key, 0, -1)]
        assert 0 < ctx.conn.ttl(key) <= LATENCY_TTL_S
    assert len(samples) == 3
    assert all(0 <= want - got <= 5 for got, want in zip(sorted(samples), expected, strict=True))
    submitted = sum(row["submitted"] for row in doc["throughput"])
    assert submitted == 7


def test_a_minute_keeps_its_newest_latency_samples(
    relay_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "LATENCY_CAP", 3)
    clock = FakeClock(START)
    ctx = Context.from_settings(relay_settings(), clock=clock)
    ids = Producer(ctx).send_many([msg(i, urgent=True) for i in range(5)])
    for step, msg_id in enumerate(ids):
        with ctx.conn.pipeline(transaction=True) as pipe:
            history.record_latency(ctx, pipe, [msg_id], int(START * 1000) + 100 * (step + 1))
            pipe.execute()
    assert [
        int(v) for v in ctx.conn.lrange(ctx.keys.latency(minute_of(int(START * 1000))), 0, -1)
    ] == [
        300,
        400,
        500,
    ]
    assert read_history(ctx)["latency"][0] == {
        "minutes": 5,
        "count": 3,
        "p50_ms": 400,
        "p99_ms": 500,
    }


def test_percentile_is_the_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([7], 99) == 7 and percentile([], 50) is None
    assert percentile([1, 2, 3], 50) == 2


def test_what_a_query_may_be() -> None:
    assert kinds_of("0mhx3k2p4a7fq1") == ["id"]
    assert kinds_of("48213") == ["dropin"]
    assert kinds_of("4915752982212") == ["dropin", "phone"]
    assert kinds_of("+49 157 52982212") == ["phone"]
    assert kinds_of("hello") == [] and kinds_of("+49") == []


def test_lookup_by_relay_id_dropin_id_and_phone(relay_settings: MakeSettings) -> None:
    ctx = Context.from_settings(relay_settings())
    producer = Producer(ctx)
    first = producer.send_many([msg(1), msg(2)])
    again = producer.send_many([msg(1, body="second to the same number")])
    number = DropinIds(ctx).assign(again, [260])
    ctx.store.transition(again, State.CANCELLED, [State.QUEUED])

    by_id = lookup(ctx, first[1])
    assert [(f.via, f.message.id) for f in by_id.found] == [("id", first[1])]
    assert [e.state for e in by_id.found[0].events] == ["queued"]

    by_number = lookup(ctx, str(number))
    assert [(f.via, f.message.id) for f in by_number.found] == [("dropin", again[0])]
    assert [e.state for e in by_number.found[0].events] == ["queued", "cancelled"]
    assert by_number.to_dict()["messages"][0]["dropin_id"] == number

    by_phone = lookup(ctx, "0157 52000001")  # national form of +4915752000001
    assert [(f.via, f.message.id) for f in by_phone.found] == [
        ("phone", again[0]),
        ("phone", first[0]),
    ]
    assert by_phone.complete and by_phone.scanned_events == 4  # 3 queued, 1 cancelled
    assert by_phone.scanned_since_ms is not None

    assert lookup(ctx, "0157 52000001", limit=1).to_dict()["messages"][0]["id"] == again[0]
    assert lookup(ctx, "nothing at all").found == []
    assert lookup(ctx, "0000000000000z").found == []


def test_lookup_by_phone_reads_no_further_than_its_budget(relay_settings: MakeSettings) -> None:
    ctx = Context.from_settings(relay_settings())
    producer = Producer(ctx)
    old = producer.send_many([msg(1)])
    producer.send_many([msg(100 + i) for i in range(30)])
    narrow = lookup(ctx, "+4915752000001", scan=10)
    assert narrow.found == [] and narrow.scanned_events == 10 and not narrow.complete
    wide = lookup(ctx, "+4915752000001", scan=1000)
    assert [f.message.id for f in wide.found] == old and wide.complete
