"""The sweep judges pool lanes too: a pooled message waiting past ``RELAY_LANE_STALL_AFTER``
while no online member's lane of its kind made progress re-arms those members' tickets
(once: the new jobs then wait their turn) and logs ``sweep.lane_stalled`` with the pool
lane; offline members are skipped, and a pool whose members are all offline or at quota is
held on purpose: no warning. (FakeClock, fake stuck ticket jobs; real Redis and fakeredis.)"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.context import Context
from relay.lanes import DeviceSim, LaneId, LaneKind, PoolLane
from relay.pools import HOUR_MS
from relay.presence import Presence, record
from relay.processes import beat
from relay.run.sweep import sweep
from tests.fixtures.context import MakeCtx
from tests.test_pools import POOLS, A, B, C, send
from tests.test_sweep_stalls import STALL_S, later, queued_jobs, started_job, ticket

URGENT_POOL = PoolLane("u", "otp")
MEMBERS = (A, B, C)


@pytest.fixture
def pctx(make_ctx: MakeCtx, clock: FakeClock) -> Context:
    return make_ctx(clock=clock, pools=POOLS, device_limits={B.member: {"per_hour": 1}})


def stuck_members(ctx: Context, kind: LaneKind = "u") -> dict[LaneId, str]:
    """Each member's ticket of ``kind`` held by a job a live worker started that never
    claims; lane → job id."""
    beat(ctx, "w-alive", "worker")
    return {p.lane(kind): started_job(ctx, "w-alive", p.lane(kind)) for p in MEMBERS}


def offline(ctx: Context, *pairs: DeviceSim) -> None:
    record(ctx, [Presence(p.device, False, ctx.now_ms() - 600_000) for p in pairs])


def stall_logs(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "sweep.lane_stalled"]


def test_a_pool_lane_whose_members_tickets_are_stuck_is_rearmed_after_the_bound(
    pctx: Context,
) -> None:
    send(pctx, 1, "otp", pool="otp", urgent=True)
    stuck = stuck_members(pctx)
    later(pctx, STALL_S - 1, "w-alive")
    assert sweep(pctx).rearmed == []  # waited less than the bound
    later(pctx, 2, "w-alive")
    with capture_logs() as logs:
        assert sorted(sweep(pctx).rearmed) == sorted(lane.member for lane in stuck)
    [warning] = stall_logs(logs)
    assert warning["log_level"] == "warning" and warning["lane"] == URGENT_POOL.member
    assert warning["waited_s"] > STALL_S
    assert warning["holders"] == {lane.member: job for lane, job in stuck.items()}
    for lane, job in stuck.items():
        assert ticket(pctx, lane) not in (None, job)
        assert ticket(pctx, lane) in queued_jobs(pctx, lane)
    assert sweep(pctx).rearmed == []  # the new jobs wait their turn: never two per lane


def test_progress_on_one_online_member_means_the_pool_moves(pctx: Context) -> None:
    send(pctx, 1, "otp", pool="otp", urgent=True)
    stuck = stuck_members(pctx)
    pctx.conn.set(pctx.keys.progress(B.urgent), stuck[B.urgent], px=600_000)
    later(pctx, 5 * STALL_S, "w-alive")
    with capture_logs() as logs:
        assert sweep(pctx).rearmed == []
    assert stall_logs(logs) == []


def test_offline_members_are_skipped(pctx: Context) -> None:
    send(pctx, 1, "otp", pool="otp", urgent=True)
    stuck = stuck_members(pctx)
    offline(pctx, A)
    later(pctx, STALL_S + 1, "w-alive")
    assert sorted(sweep(pctx).rearmed) == sorted([B.urgent.member, C.urgent.member])
    assert ticket(pctx, A.urgent) == stuck[A.urgent]


def test_a_pool_with_every_member_offline_or_at_quota_is_held_without_a_warning(
    pctx: Context,
) -> None:
    send(pctx, 1, "news", pool="otp")
    stuck_members(pctx, "b")
    offline(pctx, A, C)
    later(pctx, 5 * STALL_S, "w-alive")
    pctx.conn.set(pctx.keys.quota(B, "h", pctx.now_ms() // HOUR_MS), 1)  # B's hour is spent
    with capture_logs() as logs:
        assert sweep(pctx).rearmed == []
    assert stall_logs(logs) == []
    pctx.conn.delete(pctx.keys.quota(B, "h", pctx.now_ms() // HOUR_MS))  # the hour rolled
    assert sweep(pctx).rearmed == [B.bulk.member]
