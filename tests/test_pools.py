"""Device pools, offline holding and SIM quotas in claim.lua (FakeClock, both Redis servers),
and the checks of ``pool``/``device_id`` and of RELAY_POOLS / RELAY_DEVICE_LIMITS."""

from __future__ import annotations

from typing import Any

import pytest

from relay.clock import FakeClock
from relay.connection import text
from relay.context import Context
from relay.devices import Pace
from relay.dispatch.claim import OFFLINE_RECHECK_MS, Claim, claim
from relay.dispatch.expiry import ERROR, expire_due
from relay.errors import ConfigError, ValidationError
from relay.lanes import DeviceSim, LaneId, PoolLane
from relay.pools import HOUR_MS
from relay.produce.producer import Producer
from relay.results.events import Event
from relay.results.metrics import gauges
from relay.results.poolstats import HELD
from relay.results.stats import collect
from relay.settings import load_settings
from relay.states import State
from tests.fixtures.context import MakeCtx

PHONE = "+4915752982212"
A, B, C = DeviceSim(260, 0), DeviceSim(261, 0), DeviceSim(262, 1)
POOLS = {"otp": [A.member, B.member, C.member]}
FREE = Pace(interval_s=0.0, burst=1)
PACE = Pace(interval_s=1.0, burst=3, poll_s=3.0)


@pytest.fixture
def pctx(make_ctx: MakeCtx, clock: FakeClock) -> Context:
    return make_ctx(clock=clock, batch_max=10, pools=POOLS)


def claim_for(ctx: Context, lane: LaneId, pace: Pace = FREE, job: str = "job-1") -> Claim:
    ctx.conn.set(ctx.keys.ticket(lane), job)
    return claim(ctx, lane, pace, job=job, worker="w1")


def send(ctx: Context, n: int, tag: str, **fields: Any) -> list[str]:
    items = [{"sendto": PHONE, "body": f"{tag}{i}", **fields} for i in range(n)]
    return Producer(ctx).send_many(items)


def bodies(ctx: Context, ids: list[str]) -> list[str]:
    return [text(ctx.conn.hget(ctx.keys.msg(i), "body") or b"") for i in ids]


# --- claim order and the record rewrite -------------------------------------------------


def test_claim_order_own_urgent_pool_urgent_own_bulk_pool_bulk(pctx: Context) -> None:
    send(pctx, 2, "pb", pool="otp")
    send(pctx, 2, "ob", device_id=A.device)
    send(pctx, 2, "pu", pool="otp", urgent=True)
    send(pctx, 2, "ou", device_id=A.device, urgent=True)
    got = claim_for(pctx, A.bulk)
    assert bodies(pctx, got.ids) == ["ou0", "ou1", "pu0", "pu1", "ob0", "ob1", "pb0", "pb1"]
    assert got.n_urgent == 4
    assert got.verdict == "released"


def test_pooled_ids_get_the_members_device_and_sim(pctx: Context) -> None:
    ids = send(pctx, 2, "p", pool="otp")
    assert pctx.conn.hget(pctx.keys.msg(ids[0]), "device_id") == b"0"
    got = claim_for(pctx, C.bulk)
    assert got.ids == ids
    for msg_id in ids:
        msg = pctx.store.get(msg_id)
        assert msg is not None
        assert (msg.device_id, msg.sim, msg.pool) == (C.device, C.sim, "otp")
    batch = pctx.conn.hgetall(pctx.keys.batch(got.bid))
    assert (batch[b"dev"], batch[b"sim"]) == (b"262", b"1")
    # events: the first says the pool (device 0), the next ones the member that took it
    pctx.store.transition(ids, State.SUBMITTING)
    entries: Any = pctx.conn.xrange(pctx.keys.events)
    events = [Event.from_entry(i, f) for i, f in entries]
    mine = [(e.state, e.device_id, e.sim, e.pool) for e in events if e.id == ids[0]]
    assert mine == [("queued", 0, 0, "otp"), ("submitting", C.device, C.sim, "otp")]


def test_pooled_send_arms_every_members_ticket_of_its_kind(pctx: Context) -> None:
    send(pctx, 1, "u", pool="otp", urgent=True)
    for pair in (A, B, C):
        assert pctx.conn.get(pctx.keys.ticket(pair.urgent)) is not None
        assert pctx.conn.get(pctx.keys.ticket(pair.bulk)) is None
    assert pctx.conn.llen(pctx.keys.pool_lane(PoolLane("u", "otp"))) == 1


def test_members_share_the_pool_lane_each_within_its_pacing(pctx: Context) -> None:
    ids = send(pctx, 8, "p", pool="otp")
    first = claim_for(pctx, A.bulk, PACE)
    second = claim_for(pctx, B.bulk, PACE)
    # each member takes its burst of 3, then waits on a timer for its own pacing
    assert len(first.ids) == 3 and len(second.ids) == 3
    assert first.verdict == second.verdict == "timer"
    assert first.ids + second.ids == ids[:6]
    third = claim_for(pctx, C.bulk, PACE)
    assert third.ids == ids[6:] and third.verdict == "released"


def test_urgent_ticket_releases_only_when_its_pools_urgent_lanes_are_empty(
    pctx: Context,
) -> None:
    pctx.settings.batch_max = 2
    send(pctx, 3, "u", pool="otp", urgent=True)
    got = claim_for(pctx, A.urgent)
    assert got.n_urgent == 2 and got.verdict == "more"
    got = claim_for(pctx, A.urgent)
    assert got.n_urgent == 1 and got.verdict == "released"


# --- offline ----------------------------------------------------------------------------


def test_an_offline_member_takes_no_pooled_ids_and_waits_on_a_timer(pctx: Context) -> None:
    ids = send(pctx, 3, "p", pool="otp")
    pctx.conn.sadd(pctx.keys.offline, str(A.device))
    now = pctx.now_ms()
    got = claim_for(pctx, A.bulk)
    assert got.ids == [] and got.verdict == "timer"
    assert pctx.conn.zscore(pctx.keys.timers, A.bulk.member) == now + OFFLINE_RECHECK_MS
    online = claim_for(pctx, B.bulk, job="job-b")
    assert online.ids == ids and online.verdict == "released"
    # once the pool lane is empty, the offline member's next look releases its ticket
    pctx.conn.set(pctx.keys.ticket(A.bulk), "job-1")
    assert claim_for(pctx, A.bulk).verdict == "released"


def test_an_offline_device_holds_its_own_messages(pctx: Context) -> None:
    ids = send(pctx, 2, "o", device_id=A.device, urgent=True)
    pctx.conn.sadd(pctx.keys.offline, str(A.device))
    held = claim_for(pctx, A.urgent)
    assert held.ids == [] and held.verdict == "timer"
    assert pctx.conn.lrange(pctx.keys.lane(A.urgent), 0, -1) == [i.encode() for i in ids]
    pctx.conn.srem(pctx.keys.offline, str(A.device))
    back = claim_for(pctx, A.urgent)
    assert back.ids == ids and back.verdict == "released"


def test_hold_offline_false_submits_own_messages_but_never_pooled_ones(
    make_ctx: MakeCtx, clock: FakeClock
) -> None:
    ctx = make_ctx(clock=clock, pools=POOLS, hold_offline=False)
    own = send(ctx, 1, "o", device_id=A.device)
    send(ctx, 1, "p", pool="otp")
    ctx.conn.sadd(ctx.keys.offline, str(A.device))
    got = claim_for(ctx, A.bulk)
    assert got.ids == own and got.verdict == "timer"  # the pooled one waits for B or C


# --- quotas -----------------------------------------------------------------------------


def limited(make_ctx: MakeCtx, clock: FakeClock, **limit: Any) -> Context:
    return make_ctx(clock=clock, batch_max=10, pools=POOLS, device_limits={A.member: limit})


def test_quota_stops_bulk_until_the_hour_rolls(make_ctx: MakeCtx, clock: FakeClock) -> None:
    ctx = limited(make_ctx, clock, per_hour=3)
    ids = send(ctx, 5, "b", device_id=A.device)
    now = ctx.now_ms()
    got = claim_for(ctx, A.bulk)
    assert got.ids == ids[:3] and got.verdict == "timer"
    hour_end = (now // HOUR_MS + 1) * HOUR_MS
    assert got.next_free_ms == hour_end
    assert ctx.conn.zscore(ctx.keys.timers, A.bulk.member) == hour_end
    assert claim_for(ctx, A.bulk).ids == []
    clock.advance((hour_end - now) / 1000)
    assert claim_for(ctx, A.bulk).ids == ids[3:]


def test_a_member_at_quota_leaves_pooled_bulk_to_the_others(
    make_ctx: MakeCtx, clock: FakeClock
) -> None:
    ctx = limited(make_ctx, clock, per_day=2)
    ids = send(ctx, 5, "p", pool="otp")
    assert claim_for(ctx, A.bulk).ids == ids[:2]
    assert claim_for(ctx, A.bulk).ids == []
    assert claim_for(ctx, B.bulk, job="job-b").ids == ids[2:]


def test_urgent_counts_against_the_quota_and_passes_it_only_with_urgent_over(
    make_ctx: MakeCtx, clock: FakeClock
) -> None:
    ctx = limited(make_ctx, clock, per_hour=2)
    ids = send(ctx, 3, "u", device_id=A.device, urgent=True)
    got = claim_for(ctx, A.urgent)
    assert got.ids == ids[:2] and got.verdict == "timer"
    # the same SIM with urgent_over: the held one and new ones pass the spent quota, counted
    over = limited(make_ctx, clock, per_hour=2, urgent_over=True)
    over_ids = send(over, 3, "u", device_id=A.device, urgent=True)
    got = claim_for(over, A.urgent)
    assert got.ids == ids[2:] + over_ids and got.verdict == "released"
    hour = ctx.now_ms() // HOUR_MS
    assert over.conn.get(over.keys.quota(A, "h", hour)) == b"6"


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({}, "device_id", "give exactly one of device_id and pool (neither was given)"),
        ({"device_id": 260, "pool": "otp"}, "device_id", "both were given"),
        ({"pool": "nope"}, "pool", "unknown pool 'nope'"),
        ({"pool": "otp", "sim": 1}, "sim", "pool member's"),
    ],
)
def test_pool_or_device_id_is_checked(
    pctx: Context, fields: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Producer(pctx).send_many([{"sendto": PHONE, "body": "x", **fields}])
    assert info.value.field == field and words in str(info.value)
    assert pctx.conn.keys(pctx.keys.prefix + ":m:*") == []


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"pools": {"otp": []}}, "pool 'otp' must list at least one member"),
        ({"pools": {"o:t": ["260:0"]}}, "pool name 'o:t'"),
        ({"pools": {"otp": ["260:0", "x"]}}, "pool 'otp': member 'x' is not"),
        ({"pools": {"otp": ["260", "260:0"]}}, "member '260:0' is listed twice"),
        ({"device_limits": {"26x": {"per_hour": 1}}}, "limit: member '26x'"),
        ({"device_limits": {"260:0": {"per_hour": -1}}}, "limit '260:0': per_hour"),
        ({"device_limits": {"260:0": {"per_week": 1}}}, "unknown field 'per_week'"),
    ],
)
def test_pool_and_limit_settings_are_checked(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert words in str(info.value)


# --- stats ------------------------------------------------------------------------------


def test_stats_show_pools_held_and_quotas_used(make_ctx: MakeCtx, clock: FakeClock) -> None:
    ctx = limited(make_ctx, clock, per_hour=2, per_day=5)
    send(ctx, 3, "p", pool="otp")
    send(ctx, 1, "u", pool="otp", urgent=True)
    assert claim_for(ctx, A.bulk).ids  # A takes the urgent one and one bulk: its hour is spent
    ctx.conn.sadd(ctx.keys.offline, str(B.device), str(C.device))
    stats = collect(ctx)
    (pool,) = stats.pools
    assert (pool.name, pool.urgent, pool.bulk, pool.online, pool.open) == ("otp", 0, 2, 1, 0)
    assert pool.held and pool.status == HELD
    assert stats.offline == [B.device, C.device]
    (quota,) = stats.quotas
    assert (quota.member, quota.hour_used, quota.hour_limit) == (A.member, 2, 2)
    assert (quota.day_used, quota.day_limit, quota.spent) == (2, 5, True)
    assert stats.queued == 2 and stats.to_dict()["pools"][0]["status"] == HELD
    # every member has its row (the dashboard groups them by pool), A with its tightest window
    rows = {(lane.device_id, lane.sim): lane for lane in stats.lanes}
    assert set(rows) == {(p.device, p.sim) for p in (A, B, C)}
    assert {lane.pool for lane in stats.lanes} == {"otp"}
    assert (rows[(A.device, A.sim)].quota_used, rows[(A.device, A.sim)].quota_limit) == (2, 2)
    assert rows[(B.device, B.sim)].quota_limit is None
    samples = {
        (m.name, tuple(sorted(smp.labels.items()))): smp.value
        for m in gauges(stats)
        for smp in m.samples
    }
    assert samples[("relay_pool_held", (("pool", "otp"),))] == 1
    assert samples[("relay_pool_depth", (("lane", "bulk"), ("pool", "otp")))] == 2
    hour = (("device", "260"), ("sim", "0"), ("window", "hour"))
    assert samples[("relay_quota_used", hour)] == 2 and samples[("relay_quota_limit", hour)] == 2
    ctx.conn.srem(ctx.keys.offline, str(C.device))
    assert not collect(ctx).pools[0].held


def test_a_pooled_message_past_its_ttl_leaves_the_pool_lane_expired(
    pctx: Context, clock: FakeClock
) -> None:
    (short,) = send(pctx, 1, "otp", pool="otp", urgent=True, ttl=30)
    (kept,) = send(pctx, 1, "otp", pool="otp", urgent=True, ttl=600)
    for member in (A, B, C):  # every member offline: the pool holds them
        pctx.conn.sadd(pctx.keys.offline, str(member.device))
    assert claim_for(pctx, A.urgent).ids == []
    clock.advance(31)
    assert expire_due(pctx) == [short]
    lane = pctx.conn.lrange(pctx.keys.pool_lane(PoolLane("u", "otp")), 0, -1)
    assert lane == [kept.encode()]
    msg = pctx.store.get(short)
    assert msg is not None and (msg.state, msg.error) == (State.EXPIRED, ERROR)
