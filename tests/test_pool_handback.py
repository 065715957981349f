"""Pooled messages put back on a member that is (or goes) offline return to the head of
their pool's lane, in order, for another member to take; messages sent to the device
itself stay held. The sweep does the same for devices already offline. (FakeClock; real
Redis and fakeredis.)"""

from __future__ import annotations

import pytest

from relay.clock import FakeClock
from relay.connection import maybe_text, text
from relay.context import Context
from relay.dispatch.tickets import Arm, enqueue_tickets, fresh_jobs
from relay.handback import hand_back
from relay.lanes import DeviceSim, PoolLane, put_back
from relay.presence import Presence, record
from relay.run.sweep import sweep
from relay.states import State
from tests.fixtures.context import MakeCtx
from tests.test_pools import POOLS, A, B, C, bodies, claim_for, send

BULK_POOL = PoolLane("b", "otp")


@pytest.fixture
def pctx(make_ctx: MakeCtx, clock: FakeClock) -> Context:
    return make_ctx(clock=clock, batch_max=2, pools=POOLS)


def refused(ctx: Context, pair: DeviceSim, ids: list[str]) -> None:
    """The gateway refused ``ids`` that ``pair`` took: back to the head of its lanes, as
    recovery puts them back (``relay.lanes.put_back``), and their tickets enqueued."""
    ctx.store.transition(ids, State.SUBMITTING)
    with ctx.conn.pipeline(transaction=True) as pipe:
        ctx.store.queue_transition(pipe, ids, State.QUEUED, [State.SUBMITTING])
        back = put_back(pipe, ctx.keys, pair, ids, batch=None, jobs=fresh_jobs(ctx.keys, pair.bulk))
        answers = pipe.execute()
    enqueue_tickets(ctx, [Arm(lane, job) for lane, job in back.result(answers).armed.items()])


def goes_offline(ctx: Context, pair: DeviceSim) -> list[int]:
    """A device sync finds ``pair``'s device offline; what went offline."""
    return record(ctx, [Presence(pair.device, False, ctx.now_ms() - 600_000)]).gone


def lane_ids(ctx: Context, key: str) -> list[str]:
    return [text(i) for i in ctx.conn.lrange(key, 0, -1)]


def owner(ctx: Context, msg_id: str) -> tuple[str | None, str | None]:
    """device_id and sim of a record, as stored."""
    raw = ctx.conn.hmget(ctx.keys.msg(msg_id), ["device_id", "sim"])
    return maybe_text(raw[0]), maybe_text(raw[1])


def test_a_pooled_id_put_back_on_an_offline_member_goes_to_the_pool_head_for_another(
    pctx: Context,
) -> None:
    ids = send(pctx, 4, "p", pool="otp")
    taken = claim_for(pctx, C.bulk).ids  # C has SIM 1: its record gets sim 1
    assert taken == ids[:2] and owner(pctx, ids[0]) == (str(C.device), "1")
    refused(pctx, C, taken)
    assert lane_ids(pctx, pctx.keys.lane(C.bulk)) == taken
    pctx.conn.delete(pctx.keys.ticket(B.bulk))  # B's ticket ran out meanwhile
    gone = goes_offline(pctx, C)
    assert gone == [C.device]
    [done] = hand_back(pctx, gone)
    assert (done.pair, done.moved) == (C, {BULK_POOL: 2})
    assert lane_ids(pctx, pctx.keys.lane(C.bulk)) == []
    assert lane_ids(pctx, pctx.keys.pool_lane(BULK_POOL)) == ids  # at the head, in order
    for msg_id in taken:  # as enqueue.lua leaves a pooled record before a claim
        assert owner(pctx, msg_id) == ("0", None)
        msg = pctx.store.get(msg_id)
        assert msg is not None and (msg.state, msg.pool) == (State.QUEUED, "otp")
    assert pctx.conn.get(pctx.keys.ticket(B.bulk)) is not None  # woken to take them
    got = claim_for(pctx, B.bulk, job=text(pctx.conn.get(pctx.keys.ticket(B.bulk)) or b""))
    assert got.ids == taken
    assert owner(pctx, taken[0]) == (str(B.device), None)


def test_ids_sent_to_the_offline_device_itself_stay_held_in_order(pctx: Context) -> None:
    pctx.settings.batch_max = 4
    mine = send(pctx, 2, "own", device_id=A.device)
    pooled = send(pctx, 2, "p", pool="otp")
    taken = claim_for(pctx, A.bulk).ids
    assert taken == mine + pooled
    refused(pctx, A, [pooled[0], mine[0], pooled[1], mine[1]])
    hand_back(pctx, goes_offline(pctx, A))
    assert lane_ids(pctx, pctx.keys.lane(A.bulk)) == [mine[0], mine[1]]
    assert lane_ids(pctx, pctx.keys.pool_lane(BULK_POOL)) == pooled
    assert owner(pctx, mine[0]) == (str(A.device), None)
    assert bodies(pctx, lane_ids(pctx, pctx.keys.pool_lane(BULK_POOL))) == ["p0", "p1"]


def test_an_online_member_keeps_what_was_put_back_on_it(pctx: Context) -> None:
    ids = send(pctx, 2, "p", pool="otp")
    refused(pctx, A, claim_for(pctx, A.bulk).ids)
    assert hand_back(pctx, [A.device]) == []  # not in Keys.offline
    assert lane_ids(pctx, pctx.keys.lane(A.bulk)) == ids
    assert owner(pctx, ids[0]) == (str(A.device), None)


def test_a_message_no_longer_queued_is_not_moved(pctx: Context) -> None:
    ids = send(pctx, 2, "p", pool="otp")
    refused(pctx, A, claim_for(pctx, A.bulk).ids)
    pctx.store.transition(ids[:1], State.SUBMITTING)  # a run took it meanwhile
    [done] = hand_back(pctx, goes_offline(pctx, A))
    assert done.moved == {BULK_POOL: 1}
    assert lane_ids(pctx, pctx.keys.lane(A.bulk)) == ids[:1]
    assert lane_ids(pctx, pctx.keys.pool_lane(BULK_POOL)) == ids[1:]
    assert owner(pctx, ids[0]) == (str(A.device), None)


def test_the_sweep_hands_back_what_was_put_back_after_the_device_went_offline(
    pctx: Context,
) -> None:
    ids = send(pctx, 2, "p", pool="otp", urgent=True)
    taken = claim_for(pctx, A.urgent).ids
    goes_offline(pctx, A)  # offline while the batch was at the gateway
    refused(pctx, A, taken)
    assert lane_ids(pctx, pctx.keys.lane(A.urgent)) == ids
    report = sweep(pctx)
    assert report.handed_back == 2
    assert lane_ids(pctx, pctx.keys.lane(A.urgent)) == []
    assert lane_ids(pctx, pctx.keys.pool_lane(PoolLane("u", "otp"))) == ids
    assert sweep(pctx).handed_back == 0
