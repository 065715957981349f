"""``relay.results.stats.collect`` and the Prometheus metrics against a Redis whose contents
we know.

Messages go in through the library (``Relay.send``); the later steps a worker and the
reconciler would take (a claimed batch in flight, a batch being verified, submitted
messages awaiting their status, a ticket on a timer, a device sync) are written with the
documented layout (``docs/internals.md``), so every number has a known true value.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from relay.clock import FakeClock, to_ms
from relay.context import Context
from relay.core import Relay
from relay.keys import Keys
from relay.lanes import BULK, URGENT, DeviceSim, LaneId, LaneKind
from relay.results.metrics import serve
from relay.results.stats import Stats, collect
from relay.settings import load_settings
from relay.states import State
from tests.fixtures.context import T0
from tests.fixtures.replies import pop


def send(relay: Relay, n: int, dev: int, sim: int, **kw: Any) -> list[str]:
    return relay.send_many(
        [
            {
                "sendto": f"+49157{dev}{sim}{i:05d}",
                "body": f"m{i}",
                "device_id": dev,
                "sim": sim,
                **kw,
            }
            for i in range(n)
        ]
    )


def claim(
    ctx: Context, dev: int, sim: int, kind: LaneKind, n: int, bid: str, index: str
) -> list[str]:
    """What a worker's claim does: pop ``n`` ids, record the batch, mark them submitting."""
    keys, conn = ctx.keys, ctx.conn
    ids = pop(conn, keys.lane(LaneId(kind, dev, sim)), n)
    assert len(ids) == n
    conn.hset(
        keys.batch(bid),
        mapping={
            "dev": dev,
            "sim": sim,
            "kind": kind,
            "ids": ",".join(ids),
            "claimed": ctx.now_ms(),
            "worker": "w",
        },
    )
    conn.zadd(index, {bid: ctx.now_ms()})
    ctx.store.transition(ids, State.SUBMITTING, [State.QUEUED])
    return ids


def submit(ctx: Context, dev: int, sim: int, kind: LaneKind, n: int) -> list[str]:
    """What a successful submission does: the ids become submitted and join ``pending:<dev>``."""
    ids = pop(ctx.conn, ctx.keys.lane(LaneId(kind, dev, sim)), n)
    ctx.store.transition(ids, State.SUBMITTING, [State.QUEUED])
    ctx.store.transition(ids, State.SUBMITTED, [State.SUBMITTING], add_index=ctx.keys.pending(dev))
    ctx.conn.sadd(ctx.keys.pending_devices, dev)
    return ids


@dataclass
class Truth:
    stats: Stats
    keys: Keys


@pytest.fixture
def known(relay: Relay, clock: FakeClock) -> Truth:
    """260/0: 4 urgent, 10 bulk; 260/1: 3 bulk; 261/0: 5 bulk, 2 scheduled; then steps."""
    ctx = relay.ctx
    send(relay, 4, 260, 0, urgent=True)
    send(relay, 10, 260, 0)
    clock.advance(2.0)
    send(relay, 3, 260, 1)
    send(relay, 5, 261, 0)
    send(relay, 2, 261, 0, timetosend=T0 + 3600)
    clock.advance(5.0)
    claim(ctx, 260, 0, BULK, 3, "b1", ctx.keys.inflight)  # 260/0: bulk 10 -> 7, 3 in flight
    claim(ctx, 261, 0, BULK, 2, "b2", ctx.keys.verify)  # 261/0: bulk 5 -> 3, 2 verifying
    submit(ctx, 260, 0, URGENT, 1)  # 260/0: urgent 4 -> 3, 1 awaiting
    submit(ctx, 260, 1, BULK, 2)  # 260/1: bulk 3 -> 1, 2 awaiting
    ctx.conn.zadd(ctx.keys.timers, {"b:261:0": to_ms(T0 + 30)})
    ctx.conn.hset(
        ctx.keys.devices,
        mapping={
            "260": json.dumps({"id": 260, "online": True}),
            "261": json.dumps({"id": 261, "online": False}),
            "262": json.dumps({"id": 262, "lastseen": "2020-01-01T00:00:00+00:00"}),
        },
    )
    ctx.conn.hset(ctx.keys.pace(DeviceSim(260, 0)), "tat", to_ms(T0 + 9))
    return Truth(collect(ctx), ctx.keys)


def lane(stats: Stats, dev: int, sim: int) -> Any:
    [found] = [x for x in stats.lanes if (x.device_id, x.sim) == (dev, sim)]
    return found


def test_every_lane_number(known: Truth) -> None:
    s = known.stats
    assert [(x.device_id, x.sim) for x in s.lanes] == [(260, 0), (260, 1), (261, 0)]
    a, b, c = lane(s, 260, 0), lane(s, 260, 1), lane(s, 261, 0)
    assert (a.urgent, a.bulk, a.scheduled, a.inflight, a.verifying, a.awaiting) == (
        3,
        7,
        0,
        3,
        0,
        1,
    )
    assert (b.urgent, b.bulk, b.scheduled, b.inflight, b.verifying, b.awaiting) == (
        0,
        1,
        0,
        0,
        0,
        2,
    )
    assert (c.urgent, c.bulk, c.scheduled, c.inflight, c.verifying, c.awaiting) == (
        0,
        3,
        2,
        0,
        2,
        0,
    )
    # oldest queued: 260/0 heads were queued at T0 (now T0+7); the others at T0+2
    assert a.oldest_queued_s == pytest.approx(7.0)
    assert b.oldest_queued_s == pytest.approx(5.0)
    assert c.oldest_queued_s == pytest.approx(5.0)
    # next send: 261/0 waits on its timer; the others have work and no timer: now
    assert c.next_send_at == pytest.approx(T0 + 30)
    assert a.next_send_at == pytest.approx(T0 + 7) and b.next_send_at == pytest.approx(T0 + 7)
    assert a.pace_tat == pytest.approx(T0 + 9) and b.pace_tat is None
    assert (a.online, b.online, c.online) == (True, True, False)


def test_totals_states_and_devices(known: Truth) -> None:
    s = known.stats
    assert s.queued == 3 + 7 + 1 + 3
    assert s.scheduled == 2 and s.inflight == 3
    assert s.inflight_batches == 1 and s.verify_batches == 1
    assert s.awaiting_by_device == {260: 3, 261: 0}
    assert s.awaiting == 3
    assert s.states["queued"] == 14
    assert s.states["scheduled"] == 2
    assert s.states["submitting"] == 5
    assert s.states["submitted"] == 3
    assert sum(s.states.values()) == 4 + 10 + 3 + 5 + 2
    assert set(s.states) == {state.value for state in State}
    assert s.devices_online == {260: True, 261: False, 262: False}
    assert s.idle is False


def test_to_dict_is_json_and_complete(known: Truth) -> None:
    data = json.loads(json.dumps(known.stats.to_dict()))
    assert data["totals"] == {
        "queued": 14,
        "scheduled": 2,
        "inflight": 3,
        "awaiting": 3,
        "inflight_batches": 1,
        "verify_batches": 1,
    }
    assert data["idle"] is False and data["states"]["submitted"] == 3
    assert len(data["lanes"]) == 3 and data["lanes"][0]["urgent"] == 3
    assert data["devices"]["261"] == {"online": False, "lastseen": None, "awaiting": 0}


def test_empty_relay_is_idle(relay: Relay) -> None:
    stats = collect(relay.ctx)
    assert stats.idle and stats.lanes == [] and stats.queued == 0
    assert set(stats.states.values()) == {0}


def test_idle_only_when_every_message_is_final(relay: Relay) -> None:
    ctx = relay.ctx
    [msg_id] = send(relay, 1, 260, 0)
    assert not collect(ctx).idle
    submit(ctx, 260, 0, BULK, 1)
    assert not collect(ctx).idle  # submitted, awaiting its status
    ctx.store.transition([msg_id], State.SENT, [State.SUBMITTED])
    assert not collect(ctx).idle  # sent, still in pending: a delivery report may come
    ctx.store.transition([msg_id], State.DELIVERED, [State.SENT], rem_index=ctx.keys.pending(260))
    assert collect(ctx).idle


class CountingRedis(redis.Redis):
    """Counts round trips: direct commands and pipeline executions."""

    commands = 0
    pipelines = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingRedis.commands += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            CountingRedis.pipelines += 1
            return execute(raise_on_error)

        # counting this pipeline's round trips: replacing its method is the point
        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def test_three_round_trips_whatever_the_number_of_lanes(
    relay: Relay, redis_url: str, key_prefix: str
) -> None:
    for dev in range(300, 340):
        send(relay, 2, dev, dev % 2)
        submit(relay.ctx, dev, dev % 2, BULK, 1)
    conn = CountingRedis.from_url(redis_url)
    ctx = Context(settings=relay.settings, conn=conn)
    CountingRedis.commands = CountingRedis.pipelines = 0
    stats = collect(ctx)
    assert (CountingRedis.commands, CountingRedis.pipelines) == (0, 3)
    assert len(stats.lanes) == 40 and stats.queued == 40 and stats.awaiting == 40
    conn.close()


def test_awaiting_is_split_by_sim(relay: Relay) -> None:
    ctx = relay.ctx
    send(relay, 3, 270, 0)
    send(relay, 3, 270, 4)
    submit(ctx, 270, 0, BULK, 1)
    submit(ctx, 270, 4, BULK, 3)
    stats = collect(ctx)
    assert (lane(stats, 270, 0).awaiting, lane(stats, 270, 4).awaiting) == (1, 3)
    assert stats.awaiting_by_device == {270: 4}


# --- metrics --------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_show_the_same_numbers(known: Truth, relay: Relay) -> None:
    server = serve(relay.ctx, 0, addr="127.0.0.1")
    try:
        m = scrape(server.port)
    finally:
        server.stop()

    def val(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert val("relay_stats_up") == 1
    assert val("relay_lane_depth", device="260", sim="0", lane="urgent") == 3
    assert val("relay_lane_depth", device="260", sim="0", lane="bulk") == 7
    assert val("relay_lane_depth", device="261", sim="0", lane="scheduled") == 2
    assert val("relay_inflight", device="260", sim="0") == 3
    assert val("relay_verifying", device="261", sim="0") == 2
    assert val("relay_awaiting_status", device="260") == 3
    assert val("relay_oldest_queued_seconds", device="260", sim="0") == pytest.approx(7.0)
    assert val("relay_messages", state="submitting") == 5
    assert val("relay_messages", state="delivered") == 0
    assert val("relay_device_online", device="260") == 1
    assert val("relay_device_online", device="261") == 0
    assert val("relay_device_lastseen_seconds", device="262") == 1_577_836_800  # 2020-01-01
    assert ("relay_device_lastseen_seconds", (("device", "260"),)) not in m  # never seen


def test_metrics_report_down_when_redis_is_gone() -> None:
    settings = load_settings(redis_url="redis://127.0.0.1:1/0")
    ctx = Context(settings=settings, conn=redis.Redis.from_url(settings.redis_url))
    server = serve(ctx, 0, addr="127.0.0.1")
    try:
        m = scrape(server.port)
    finally:
        server.stop()
    assert m == {("relay_stats_up", ()): 0.0}
