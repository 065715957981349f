"""The lean record shape: bodies in chunks that keep a hash a listpack, nothing derivable
stored, lean first events, and records written by relay 0.1 still read, dispatched and
followed. Both Redis servers; the simulator over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from relay.clock import FakeClock
from relay.connection import text
from relay.context import Context
from relay.devices import sync_devices
from relay.ids import id_time_ms
from relay.lanes import DeviceSim
from relay.produce.producer import Producer
from relay.reconcile.reconciler import Reconciler
from relay.results.events import Event
from relay.run.burst import run_until_idle
from relay.simulator import Simulator
from relay.states import State
from tests.fixtures.context import MakeCtx
from tests.fixtures.redis import is_real

PHONE = "+4915752982212"
LONG = "Grüße aus Köln — 東京から 🎉 " * 60  # multi-byte characters, about 2,000 bytes


def record(conn: redis.Redis, ctx: Context, msg_id: str) -> dict[str, str]:
    return {text(k): text(v) for k, v in conn.hgetall(ctx.keys.msg(msg_id)).items()}


def test_a_long_body_is_kept_whole_in_chunks_of_whole_characters(
    ctx: Context, redis_conn: redis.Redis, redis_url: str
) -> None:
    msg_id = Producer(ctx).send(PHONE, LONG, 260)
    rec = record(redis_conn, ctx, msg_id)  # every chunk decodes: no character is cut
    chunks = [rec["body"]] + [rec[f"body{n}"] for n in range(1, len(rec)) if f"body{n}" in rec]
    assert "".join(chunks) == LONG and len(chunks) > 30
    assert all(len(c.encode()) <= 64 for c in chunks)
    msg = ctx.store.get(msg_id)
    assert msg is not None and msg.body == LONG
    if is_real(redis_url):  # fakeredis does not model encodings
        assert redis_conn.object("encoding", ctx.keys.msg(msg_id)) == b"listpack"


def test_the_first_event_is_lean_and_read_whole(ctx: Context, redis_conn: redis.Redis) -> None:
    msg_id = Producer(ctx).send(PHONE, "hi", 260)
    ((entry_id, fields),) = redis_conn.xrange(ctx.keys.events) or []
    assert entry_id is not None and fields is not None
    assert set(fields) == {b"id", b"state", b"device_id"}
    event = Event.from_entry(entry_id, fields)
    assert (event.state, event.prev, event.final, event.sim, event.urgent) == (
        "queued",
        None,
        False,
        0,
        False,
    )
    assert event.at_ms == id_time_ms(msg_id)


def test_a_long_body_reaches_the_gateway_byte_for_byte(
    make_ctx: MakeCtx, simulator: Simulator
) -> None:
    ctx = make_ctx(simulator, device_overrides={"260": 0})
    msg_id = Producer(ctx).send(PHONE, LONG, 260, urgent=True)
    assert run_until_idle(ctx, 30)
    (entry,) = simulator.ledger()
    assert entry.body == LONG
    msg = ctx.store.get(msg_id)
    assert msg is not None and msg.state == State.SUBMITTED


OLD_ID = "0mxb9zz0aaaaaa"  # a relay 0.1 record: every field written, the body in one field


def write_old_record(ctx: Context, now_ms: int) -> None:
    """A queued message exactly as relay 0.1's enqueue.lua stored it, in its lane."""
    ctx.conn.hset(
        ctx.keys.msg(OLD_ID),
        mapping={
            "sendto": PHONE,
            "body": "an old message " * 8,
            "device_id": "260",
            "sim": "0",
            "urgent": "0",
            "state": "queued",
            "final": "0",
            "t_queued": str(now_ms),
            "attempts": "0",
        },
    )
    pair = DeviceSim(260, 0)
    ctx.conn.rpush(ctx.keys.lane(pair.bulk), OLD_ID)
    ctx.conn.sadd(ctx.keys.lanes, pair.member)
    ctx.conn.hincrby(ctx.keys.counts, "queued", 1)


def test_a_record_of_relay_0_1_is_read_dispatched_and_followed(
    make_ctx: MakeCtx, simulator: Simulator
) -> None:
    ctx = make_ctx(simulator, device_overrides={"260": 0})
    now_ms = ctx.now_ms()
    write_old_record(ctx, now_ms)
    msg = ctx.store.get(OLD_ID)
    assert msg is not None and msg.body == "an old message " * 8 and msg.sim == 0
    assert msg.times == {"queued": datetime.fromtimestamp(now_ms / 1000, UTC)}
    sync_devices(ctx)
    Producer(ctx).send(PHONE, "a new one", 260)  # arms the lane's ticket
    assert run_until_idle(ctx, 30)
    assert sorted(e.body for e in simulator.ledger()) == ["a new one", "an old message " * 8]
    assert Reconciler(ctx).run_once().matched == 2
    done = ctx.store.get(OLD_ID)
    assert done is not None and done.state in (State.SUBMITTED, State.SENT, State.DELIVERED)
    assert done.sms_id is not None


def test_times_are_only_what_happened(make_ctx: MakeCtx, clock: FakeClock) -> None:
    ctx = make_ctx(clock=clock)
    msg_id = Producer(ctx).send(PHONE, "later", 260, timetosend=clock.now() + 60)
    msg = ctx.store.get(msg_id)
    assert msg is not None and set(msg.times) == {"scheduled"}
    assert "t_scheduled" not in record(ctx.conn, ctx, msg_id)
