"""A pool of three phones over HTTP with two real ``relay worker`` processes: one phone is
switched off mid-campaign and the other two carry the rest; urgent pooled messages go out;
a SIM quota holds exactly across the two workers."""

from __future__ import annotations

from collections import Counter

from relay.context import Context
from relay.devices import sync_devices
from relay.produce.producer import Producer
from relay.simulator import SimDevice, Simulator
from tests.fixtures.context import MakeCtx
from tests.fixtures.simulator import MakeSimulator, switch_online
from tests.fixtures.waiting import eventually
from tests.fixtures.workers import StartWorkers

PHONES = (401, 402, 403)
POOLS = {"trio": [f"{dev}:0" for dev in PHONES]}


def phones() -> list[SimDevice]:
    return [SimDevice(id=dev, delaybetweenrequest=0.2, delaybetweeneachsms=0.02) for dev in PHONES]


def send_pooled(ctx: Context, n: int, tag: str, urgent: bool = False) -> list[str]:
    items = [
        {"sendto": f"+49157{i:07d}", "body": f"{tag}{i}", "pool": "trio", "urgent": urgent}
        for i in range(n)
    ]
    return Producer(ctx).send_many(items)


def on_phone(sim: Simulator) -> Counter[int]:
    return Counter(entry.device_id for entry in sim.ledger())


def taken_by(ctx: Context, ids: list[str], dev: int) -> set[str]:
    return {m.id for m in ctx.store.get_many(ids) if m is not None and m.device_id == dev}


def offline(ctx: Context) -> set[int]:
    return {int(d) for d in ctx.conn.smembers(ctx.keys.offline)}


def test_pool_of_three_carries_on_when_a_phone_goes_offline(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator(phones())
    # detection: a sync every 0.3 s, offline after 1 s without a poll (the phones poll every
    # 0.2 s, so three polls are less)
    ctx = make_ctx(sim, pools=POOLS, batch_max=20, device_refresh=0.3, device_offline_after=1.0)
    sync_devices(ctx)
    n = 600
    ids = send_pooled(ctx, n, "c")
    start_workers(2, ctx.settings)
    eventually(lambda: on_phone(sim)[403] >= 20, 60, "the campaign under way on 403")
    switch_online(sim, 403, False)  # the phone stops polling: its lastseen freezes
    eventually(lambda: offline(ctx) == {403}, 30, "relay's device sync finding 403 offline")
    # from here claim.lua gives 403 no pooled id: what it holds now is all it ever gets
    kept = taken_by(ctx, ids, 403)
    assert len(kept) < n, "the campaign ended before the detection: make it longer"
    urgent = send_pooled(ctx, 5, "otp", urgent=True)
    eventually(lambda: len(sim.ledger()) == n + 5, 90, "every message stored")
    assert taken_by(ctx, ids + urgent, 403) == kept
    assert offline(ctx) == {403}
    assert on_phone(sim)[403] == len(kept) < n
    assert on_phone(sim)[401] + on_phone(sim)[402] == n + 5 - len(kept)
    sendtos = Counter((e.body[:3] == "otp", e.sendto) for e in sim.ledger())
    assert len(sendtos) == n + 5 and max(sendtos.values()) == 1  # nothing lost or doubled
    assert all(not e.body.startswith("otp") or e.device_id != 403 for e in sim.ledger())
    records = ctx.store.get_many(ids + urgent)
    assert all(m is not None and m.device_id in PHONES and m.pool == "trio" for m in records)


def test_a_sim_quota_is_exact_across_two_workers(
    make_ctx: MakeCtx, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator(phones())
    limits = {"401:0": {"per_hour": 37}, "402:0": {"per_day": 11}}
    ctx = make_ctx(sim, pools=POOLS, batch_max=7, device_limits=limits)
    sync_devices(ctx)
    ids = send_pooled(ctx, 200, "q")
    # and some addressed straight to the limited phone: they wait for its window to roll
    own = Producer(ctx).send_many(
        [{"sendto": f"+49158{i:07d}", "body": f"own{i}", "device_id": 402} for i in range(5)]
    )
    start_workers(2, ctx.settings)
    eventually(lambda: len(sim.ledger()) == 205, 90, "every message stored")
    counts = on_phone(sim)
    # each limited SIM took exactly its quota (own messages first, then the pool's), the
    # rest went to the unlimited one; nothing twice
    assert counts == {401: 37, 402: 11, 403: 200 - 37 - 6}
    assert Counter(e.sendto for e in sim.ledger()).most_common(1)[0][1] == 1
    assert {m.device_id for m in ctx.store.get_many(own) if m is not None} == {402}
    hour_used = [ctx.conn.get(k) for k in ctx.conn.keys(ctx.keys.prefix + ":quota:401:0:h*")]
    assert hour_used == [b"37"]
    taken = Counter(m.device_id for m in ctx.store.get_many(ids) if m is not None)
    assert taken == {401: 37, 402: 6, 403: 157}
