"""Submission recovery: outcome-unknown batches are looked for at the gateway before any
resend; batches of dead workers are taken over. Simulator over HTTP, both Redis servers."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from relay.clock import FakeClock
from relay.connection import text
from relay.context import Context, use
from relay.dispatch import recovery, verify
from relay.dispatch.batch import load as load_batch
from relay.dispatch.recovery import recover_inflight
from relay.dispatch.ticket import run_ticket
from relay.dispatch.tickets import queue
from relay.dispatch.verify import verify_due
from relay.errors import OutcomeUnknown
from relay.lanes import BULK, URGENT, LaneId, LaneKind
from relay.produce.producer import Producer
from relay.reconcile.reconciler import Reconciler
from relay.states import State
from tests.fixtures.context import MakeCtx
from tests.fixtures.replies import members
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.waiting import eventually
from tests.test_reconciler import (
    PHONE,
    claim,
    events_by_message,
    outgoing,
    put_records,
    state_of,
    submit,
)

MIN_GRACE_S = 3.0
"""``RELAY_VERIFY_MIN_GRACE`` by default."""
ITEMS: list[dict[str, Any]] = [
    {"sendto": PHONE, "body": f"batch {i}", "urgent": i == 0} for i in range(4)
]


def send_in_doubt(ctx: Context, items: Sequence[dict[str, Any]] = ITEMS) -> tuple[str, list[str]]:
    """A batch whose addalotofsms failed without an answer: what dispatch leaves behind."""
    ids = put_records(ctx, items)
    bid = claim(ctx, ids)
    with pytest.raises(OutcomeUnknown):
        ctx.gateway.add_many(outgoing(ctx, ids))
    ctx.store.transition(ids, State.UNKNOWN, [State.SUBMITTING], fields={"error": "timeout"})
    ctx.conn.zrem(ctx.keys.inflight, bid)
    ctx.conn.zadd(ctx.keys.verify, {bid: ctx.now_ms()})
    ctx.conn.hset(ctx.keys.batch(bid), "doubted", ctx.now_ms())
    return bid, ids


def lane(ctx: Context, kind: LaneKind = BULK, dev: int = 260, sim: int = 0) -> list[str]:
    return [text(i) for i in ctx.conn.lrange(ctx.keys.lane(LaneId(kind, dev, sim)), 0, -1)]


def stored_bodies(make_sim_ledger: Any) -> Counter[str]:
    return Counter(entry.body for entry in make_sim_ledger())


def test_stored_then_dropped_batch_is_found_never_resent(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock)
    sim.faults.add("addalotofsms", "drop_after")
    bid, ids = send_in_doubt(ctx)

    assert verify_due(ctx) == 1

    ledger = {e.body: e.sms_id for e in sim.ledger()}
    for msg_id, item in zip(ids, ITEMS, strict=True):
        state, _, sms_id = state_of(ctx, msg_id)
        assert state == State.SUBMITTED and sms_id == ledger[item["body"]]
    assert ctx.conn.zcard(ctx.keys.verify) == 0 and not ctx.conn.exists(ctx.keys.batch(bid))
    assert ctx.conn.zscore(ctx.keys.urgent_waiting, ids[0]) is not None
    assert sorted(members(ctx.conn, ctx.keys.pending(260))) == sorted(ids)
    assert lane(ctx) == [] and lane(ctx, URGENT) == []

    clock.advance(1)
    Reconciler(ctx).run_once()
    assert all(state_of(ctx, i)[0] == State.DELIVERED for i in ids)
    assert all(n == 1 for n in stored_bodies(sim.ledger).values()), "each stored once"
    assert sim.stats()["requests"]["addalotofsms"] == 1


def test_batch_never_stored_goes_back_to_the_lane_head_after_the_grace(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    # grace 4 s: the poll grace (2 x 2 s) and the request's lifetime (1 s time-out + 3 s) agree
    ctx = make_ctx(sim, clock, default_poll_interval=2.0, verify_grace=2.0, gateway_timeout=1.0)
    waiting = put_records(ctx, [{"sendto": PHONE, "body": "behind"}])
    ctx.conn.rpush(ctx.keys.lane(LaneId(BULK, 260, 0)), *waiting)
    sim.faults.add("addalotofsms", "drop_before")
    bid, ids = send_in_doubt(ctx)

    clock.advance(1)
    assert verify_due(ctx) == 0
    assert all(state_of(ctx, i)[0] == State.UNKNOWN for i in ids)
    assert ctx.conn.zscore(ctx.keys.verify, bid) == pytest.approx(ctx.now_ms() + 3000, abs=5)

    clock.advance(3.1)
    assert verify_due(ctx) == 1

    assert lane(ctx, URGENT) == ids[:1]
    assert lane(ctx) == ids[1:] + waiting, "back at the head, in batch order"
    for msg_id in ids:
        message = ctx.store.get(msg_id)
        assert message is not None and message.state == State.QUEUED and message.attempts == 1
    for kind in (URGENT, BULK):
        job_id = ctx.conn.get(ctx.keys.ticket(LaneId(kind, 260, 0)))
        assert job_id is not None and text(job_id) in queue(ctx.conn, ctx.keys, kind).job_ids
    assert ctx.conn.zcard(ctx.keys.verify) == 0 and not ctx.conn.exists(ctx.keys.batch(bid))
    assert sim.ledger() == []


def test_grace_counts_from_the_moment_of_doubt(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    """A slow gateway may store a batch after the client gave up: the grace starts then."""
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, default_poll_interval=0.5, verify_grace=2.0, gateway_timeout=10.0)
    sim.faults.add("addalotofsms", "drop_before")
    bid, ids = send_in_doubt(ctx)
    clock.advance(8)  # the request took its time before it failed
    ctx.conn.hset(ctx.keys.batch(bid), "doubted", ctx.now_ms())
    clock.advance(MIN_GRACE_S - 0.5)
    assert verify_due(ctx) == 0
    assert all(state_of(ctx, i)[0] == State.UNKNOWN for i in ids)
    clock.advance(1)
    assert verify_due(ctx) == 1
    assert all(state_of(ctx, i)[0] == State.QUEUED for i in ids)


def test_without_a_moment_of_doubt_the_grace_outlasts_the_request_time_out(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, default_poll_interval=0.5, verify_grace=2.0, gateway_timeout=10.0)
    sim.faults.add("addalotofsms", "drop_before")
    bid, ids = send_in_doubt(ctx)
    ctx.conn.hdel(ctx.keys.batch(bid), "doubted")
    clock.advance(MIN_GRACE_S + 5)  # past the grace, inside the time-out (10 s + 3 s)
    assert verify_due(ctx) == 0
    assert all(state_of(ctx, i)[0] == State.UNKNOWN for i in ids)
    clock.advance(5.5)
    assert verify_due(ctx) == 1
    assert all(state_of(ctx, i)[0] == State.QUEUED for i in ids)


TWIN = {"sendto": PHONE, "body": "your code is 1234"}


def test_a_doubtful_twin_never_takes_the_record_of_a_sure_one(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    """Two identical messages, one record: it belongs to the one surely stored."""
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, default_poll_interval=0.5, verify_grace=2.0, gateway_timeout=1.0)
    sim.faults.add("addalotofsms", "drop_before")
    _bid, doubtful = send_in_doubt(ctx, [TWIN])  # older, never stored
    clock.advance(0.5)
    sure = submit(ctx, [TWIN])  # younger, stored, not matched yet
    clock.advance(5)
    assert verify_due(ctx) == 1
    assert state_of(ctx, doubtful[0])[0] == State.QUEUED, "not found, so sent again"
    [entry] = sim.ledger()
    assert state_of(ctx, sure[0])[2] == entry.sms_id


def test_verification_waits_for_a_batch_still_in_flight_on_its_device(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    """A batch claimed before the look-up may hold a twin's record: wait for its outcome."""
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, default_poll_interval=0.5, verify_grace=2.0, gateway_timeout=1.0)
    sim.faults.add("addalotofsms", "drop_before")
    _bid, doubtful = send_in_doubt(ctx, [TWIN])
    clock.advance(0.5)
    flying = put_records(ctx, [TWIN])
    bid = claim(ctx, flying)
    ctx.gateway.add_many(outgoing(ctx, flying))  # stored; its worker has not recorded it yet
    clock.advance(5)
    assert verify_due(ctx) == 0
    assert state_of(ctx, doubtful[0])[0] == State.UNKNOWN
    k = ctx.keys
    ctx.store.transition(flying, State.SUBMITTED, [State.SUBMITTING], add_index=k.pending(260))
    ctx.conn.zrem(k.inflight, bid)
    clock.advance(1)
    assert verify_due(ctx) == 1
    assert state_of(ctx, doubtful[0])[0] == State.QUEUED
    assert state_of(ctx, flying[0])[2] == sim.ledger()[0].sms_id


def test_gateway_unavailable_during_verification_waits_and_never_resends(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock)
    sim.faults.add("addalotofsms", "drop_before")
    bid, ids = send_in_doubt(ctx)
    clock.advance(60)  # long past any grace
    sim.faults.add("getallsms", "http_503", times=10)

    assert verify_due(ctx) == 0
    assert all(state_of(ctx, i)[0] == State.UNKNOWN for i in ids)
    due = ctx.conn.zscore(ctx.keys.verify, bid)
    assert lane(ctx) == [] and due is not None and due > ctx.now_ms()

    sim.faults.clear()
    clock.advance(RETRY_AFTER_FAILURE)
    assert verify_due(ctx) == 1
    assert lane(ctx) == ids[1:] and lane(ctx, URGENT) == ids[:1]


RETRY_AFTER_FAILURE = 3.0


def test_worker_death_recovered_after_the_inflight_timeout(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, inflight_timeout=30)
    # died after the gateway stored the batch, before recording it
    stored = put_records(ctx, [{"sendto": PHONE, "body": f"stored {i}"} for i in range(3)])
    stored_bid = claim(ctx, stored)
    ctx.gateway.add_many(outgoing(ctx, stored))
    # died right after the claim, before the first transition
    claimed = put_records(ctx, [{"sendto": PHONE, "body": f"claimed {i}"} for i in range(2)])
    claimed_bid = claim(ctx, [])
    ctx.conn.hset(ctx.keys.batch(claimed_bid), "ids", ",".join(claimed))
    clock.advance(10)
    young = claim(ctx, put_records(ctx, [{"sendto": PHONE, "body": "young"}]))

    assert recover_inflight(ctx) == 0
    clock.advance(25)
    assert recover_inflight(ctx) == 2
    assert recover_inflight(ctx) == 0, "each batch is taken once"

    assert ctx.conn.zrange(ctx.keys.inflight, 0, -1) == [young.encode()]
    assert lane(ctx) == claimed, "claimed but never sent: straight back, no attempt"
    assert all(m is not None and m.attempts == 0 for m in ctx.store.get_many(claimed))
    assert all(state_of(ctx, i)[0] == State.UNKNOWN for i in stored)

    ctx.conn.delete(ctx.keys.batch(stored_bid))  # the worker wakes late and drops its batch
    assert verify_due(ctx) == 2
    ledger = {e.body: e.sms_id for e in sim.ledger()}
    for msg_id in stored:
        message = ctx.store.get(msg_id)
        assert message is not None and message.state == State.SUBMITTED
        assert message.sms_id == ledger[message.body]
    assert lane(ctx) == claimed, "nothing put back twice"


def test_batches_of_a_silent_worker_are_taken_before_the_timeout(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, inflight_timeout=600, gateway_timeout=10)
    batches = {}
    for worker in ("dead-worker", "live-worker", "host:123"):
        ids = put_records(ctx, [{"sendto": PHONE, "body": worker}])
        batches[worker] = claim(ctx, ids)
        ctx.conn.hset(ctx.keys.batch(batches[worker]), "worker", worker)
    beat = {"kind": "worker", "seen": ctx.now_ms() - 20_000}  # silent 20 s already
    ctx.conn.hset(ctx.keys.processes, "dead-worker", json.dumps(beat))

    clock.advance(10)
    ctx.conn.hset(ctx.keys.processes, "live-worker", json.dumps({**beat, "seen": ctx.now_ms()}))
    assert recover_inflight(ctx) == 0, "younger than the gateway timeout: may still be sending"

    clock.advance(6)
    ctx.conn.hset(ctx.keys.processes, "live-worker", json.dumps({**beat, "seen": ctx.now_ms()}))
    assert recover_inflight(ctx) == 1
    inflight = set(members(ctx.conn, ctx.keys.inflight))
    assert inflight == {batches["live-worker"], batches["host:123"]}, "no heartbeat: only timed out"
    assert ctx.conn.zscore(ctx.keys.verify, batches["dead-worker"] + ".r") is not None


def test_concurrent_verifiers_settle_each_batch_once(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock)
    sim.faults.add("addalotofsms", "drop_before", times=6)
    batches = [
        send_in_doubt(ctx, [{"sendto": PHONE, "body": f"b{n}-{i}"} for i in range(5)])
        for n in range(6)
    ]
    clock.advance(MIN_GRACE_S + 60)
    settled: list[int] = []
    contexts = [make_ctx(sim, clock) for _ in range(4)]
    threads = [threading.Thread(target=lambda c=c: settled.append(verify_due(c))) for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(settled) == 6
    every = lane(ctx)
    assert sorted(every) == sorted(i for _, ids in batches for i in ids)
    events = events_by_message(ctx)
    assert all(Counter(s for s, _ in events[i])["queued"] == 1 for i in every)


def test_messages_end_rejected_after_the_last_attempt(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock, max_attempts=2)
    sim.faults.add("addalotofsms", "drop_before")
    _, ids = send_in_doubt(ctx, [{"sendto": PHONE, "body": "doomed"}])
    ctx.conn.hset(ctx.keys.msg(ids[0]), "attempts", 1)
    clock.advance(60)

    assert verify_due(ctx) == 1

    message = ctx.store.get(ids[0])
    assert message is not None and message.state == State.REJECTED and message.final
    assert message.attempts == 2 and message.error
    assert ctx.conn.zscore(ctx.keys.dead, ids[0]) is not None and lane(ctx) == []


def test_dispatch_outcome_unknown_end_to_end(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    """Producer → dispatch (drop_after: unknown) → verification → reconciler → delivered."""
    sim = make_simulator()
    ctx = use(make_ctx(sim, default_send_interval=0))
    ids = Producer(ctx).send_many(
        [{"sendto": PHONE, "body": f"e2e {i}", "device_id": 260} for i in range(5)]
    )
    sim.faults.add("addalotofsms", "drop_after")
    ticket = ctx.conn.get(ctx.keys.ticket(LaneId(BULK, 260, 0)))
    assert ticket is not None
    run_ticket(BULK, 260, 0, text(ticket))
    assert all(state_of(ctx, i)[0] == State.UNKNOWN for i in ids)
    assert ctx.conn.zcard(ctx.keys.verify) == 1

    ctx.conn.zadd(ctx.keys.verify, {members(ctx.conn, ctx.keys.verify, 0, 0)[0]: 0})  # due now
    assert verify_due(ctx) == 1
    reconciler = Reconciler(ctx)
    eventually(
        lambda: reconciler.run_once() and all(state_of(ctx, i)[0] == State.DELIVERED for i in ids)
    )
    assert sorted(Counter(e.body for e in sim.ledger()).values()) == [1] * 5


def test_a_verifier_whose_read_predates_another_sweeps_move_still_checks_them(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    """Two sweeps at once (every worker's, right after a Redis failover): one takes a dead
    worker's batch and moves its messages submitting -> unknown just after the other, already
    verifying that batch, read them as submitting. The reader's own move then finds nothing
    to do; it must still count them unknown, or it settles the batch without them and they
    stay unknown for ever (seen in tests/chaos/test_failover.py)."""
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock)
    ids = put_records(ctx, [{"sendto": PHONE, "body": f"raced {i}"} for i in range(2)])
    bid = claim(ctx, ids)
    ctx.gateway.add_many(outgoing(ctx, ids))  # stored; its worker died before recording it
    ctx.conn.zrem(ctx.keys.inflight, bid)  # taken for verification (take.lua)
    batch = load_batch(ctx, bid)
    assert batch is not None
    read_before = recovery.load_doubts(ctx, batch)
    ctx.store.transition(ids, State.UNKNOWN, [State.SUBMITTING])  # the other sweep's move
    doubts = recovery.settle_claimed(ctx, batch, read_before)
    assert [d.state for d in doubts] == [State.UNKNOWN, State.UNKNOWN]
    clock.advance(MIN_GRACE_S + 1)
    assert verify.verify_batch(ctx, batch)
    assert {state_of(ctx, i)[0] for i in ids} == {State.SUBMITTED}
