"""Message TTLs: validation and the default, the deadline in the record and the deadlines
zset, the duty that ends held messages ``expired`` (queued, scheduled), the submitter that
drops an expired id of a claimed batch, a submitted message never expiring, and a real
``relay worker`` process expiring a message that never reaches the simulator."""

from __future__ import annotations

import math
from typing import Any

import pytest

from relay.clock import FakeClock
from relay.connection import maybe_text
from relay.context import Context
from relay.devices import Pace, sync_devices
from relay.dispatch.claim import claim
from relay.dispatch.expiry import ERROR, expire_due
from relay.dispatch.submit import Submitter
from relay.errors import ConfigError, ValidationError
from relay.lanes import DeviceSim
from relay.produce.producer import Producer
from relay.produce.validation import validate
from relay.results.events import Event
from relay.settings import load_settings
from relay.simulator import Simulator
from relay.states import State
from tests.fixtures.context import T0, MakeCtx
from tests.fixtures.replies import entries
from tests.fixtures.waiting import eventually
from tests.fixtures.workers import MakeSettings, StartWorkers

MSG: dict[str, Any] = {"sendto": "+4915752982212", "body": "Your code is 4711", "device_id": 260}
PAIR = DeviceSim(260, 0)


# --- validation and settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "words"),
    [
        (0, "must be more than 0"),
        (-5, "must be more than 0"),
        ("0", "must be more than 0"),
        (math.nan, "must be more than 0"),
        (math.inf, "must be more than 0"),
        ("five minutes", "must be a number of seconds"),
        (True, "not a bool"),
        ([300], "must be a number of seconds"),
        (10**12, "too long"),
    ],
)
def test_a_bad_ttl_is_refused_naming_the_field(ttl: Any, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as raised:
        validate({**MSG, "ttl": ttl}, load_settings(), T0)
    assert raised.value.field == "ttl"


def test_ttl_in_seconds_or_text_and_the_default() -> None:
    plain = load_settings()
    assert validate({**MSG, "ttl": 300}, plain, T0).ttl_ms == 300_000
    assert validate({**MSG, "ttl": "2.5"}, plain, T0).ttl_ms == 2_500
    assert validate({**MSG, "ttl": ""}, plain, T0).ttl_ms is None
    assert validate(MSG, plain, T0).ttl_ms is None
    otp = load_settings(default_ttl=120)
    assert validate(MSG, otp, T0).ttl_ms == 120_000
    assert validate({**MSG, "ttl": 30}, otp, T0).ttl_ms == 30_000
    assert validate({**MSG, "ttl": 30}, otp, T0).deadline_ms(1_000) == 31_000


@pytest.mark.parametrize(
    ("setting", "value"),
    [("default_ttl", 0), ("default_ttl", -1), ("device_offline_after", 0), ("device_refresh", 0)],
)
def test_settings_refuse_nonpositive_windows(setting: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"RELAY_{setting.upper()}"):
        load_settings(**{setting: value})


# --- the duty --------------------------------------------------------------------------------


@pytest.fixture
def fctx(make_ctx: MakeCtx, clock: FakeClock) -> Context:
    return make_ctx(clock=clock)


def expired_events(ctx: Context) -> list[Event]:
    raw: list[Any] = entries(ctx.conn, ctx.keys.events)
    return [e for e in (Event.from_entry(i, f) for i, f in raw) if e.state == "expired"]


def test_the_deadline_is_in_the_record_and_the_zset_only_with_a_ttl(fctx: Context) -> None:
    producer = Producer(fctx)
    with_ttl = producer.send(**MSG, ttl=300)
    without = producer.send(**MSG)
    record = fctx.conn.hgetall(fctx.keys.msg(with_ttl))
    assert record[b"exp"] == str(fctx.now_ms() + 300_000).encode()
    assert b"exp" not in fctx.conn.hgetall(fctx.keys.msg(without))
    assert fctx.conn.zrange(fctx.keys.deadlines, 0, -1, withscores=True) == [
        (with_ttl.encode(), fctx.now_ms() + 300_000)
    ]
    message = fctx.store.get(with_ttl)
    assert message is not None and message.expires is not None
    assert message.to_dict()["expires"] == message.expires.isoformat()


def test_held_queued_and_scheduled_messages_expire_with_the_error_and_event(
    fctx: Context, clock: FakeClock
) -> None:
    producer = Producer(fctx)
    queued = producer.send(**MSG, urgent=True, ttl=60)
    later = producer.send(**MSG, timetosend=T0 + 86_400, ttl=60)
    patient = producer.send(**MSG, ttl=600)
    clock.advance(59)
    assert expire_due(fctx) == []
    clock.advance(2)
    assert sorted(expire_due(fctx)) == sorted([queued, later])
    for msg_id in (queued, later):
        message = fctx.store.get(msg_id)
        assert message is not None and message.state == State.EXPIRED and message.final
        assert message.error == ERROR
    assert fctx.conn.lrange(fctx.keys.lane(PAIR.urgent), 0, -1) == []
    assert fctx.conn.zcard(fctx.keys.sched(PAIR.bulk)) == 0
    assert fctx.conn.lrange(fctx.keys.lane(PAIR.bulk), 0, -1) == [patient.encode()]
    assert fctx.conn.zrange(fctx.keys.deadlines, 0, -1) == [patient.encode()]
    events = expired_events(fctx)
    assert sorted(e.id for e in events) == sorted([queued, later])
    assert {(e.prev, e.error, e.final) for e in events} == {
        ("queued", ERROR, True),
        ("scheduled", ERROR, True),
    }
    counts = fctx.conn.hgetall(fctx.keys.counts)
    assert counts[b"expired"] == b"2" and counts[b"queued"] == b"1"
    assert expire_due(fctx) == []  # once


def test_a_message_held_by_an_offline_device_expires(fctx: Context, clock: FakeClock) -> None:
    fctx.conn.sadd(fctx.keys.offline, "260")  # what the sync writes; claim.lua holds the lane
    msg_id = Producer(fctx).send(**MSG, urgent=True, ttl=300)
    clock.advance(301)
    assert expire_due(fctx) == [msg_id]
    assert fctx.conn.llen(fctx.keys.lane(PAIR.urgent)) == 0


def test_a_message_being_submitted_or_submitted_never_expires(
    fctx: Context, clock: FakeClock
) -> None:
    producer = Producer(fctx)
    busy, done = producer.send(**MSG, ttl=10), producer.send(**MSG, ttl=10)
    fctx.conn.lrem(fctx.keys.lane(PAIR.bulk), 0, busy)
    fctx.conn.lrem(fctx.keys.lane(PAIR.bulk), 0, done)
    fctx.store.transition([busy, done], State.SUBMITTING)
    fctx.store.transition([done], State.SUBMITTED)
    clock.advance(11)
    assert expire_due(fctx) == []
    assert [m.state for m in fctx.store.get_many([busy, done]) if m] == [
        State.SUBMITTING,
        State.SUBMITTED,
    ]
    # the submitted one leaves the deadlines; the one in submission is looked at later
    assert fctx.conn.zrange(fctx.keys.deadlines, 0, -1) == [busy.encode()]
    assert fctx.conn.zscore(fctx.keys.deadlines, busy) == fctx.now_ms() + 5_000


# --- the submitter ----------------------------------------------------------------------------


def test_an_expired_id_of_a_claimed_batch_is_not_submitted(
    make_ctx: MakeCtx, simulator: Simulator, clock: FakeClock
) -> None:
    ctx = make_ctx(simulator, clock)
    sync_devices(ctx)
    producer = Producer(ctx)
    short = producer.send(**MSG, ttl=5)
    kept = producer.send(**{**MSG, "body": "kept"}, ttl=600)
    job = maybe_text(ctx.conn.get(ctx.keys.ticket(PAIR.bulk)))
    assert job is not None
    pace = Pace(interval_s=0.0, burst=1)
    claimed = claim(ctx, PAIR.bulk, pace, job=job, worker="w1")
    assert claimed.ids == [short, kept]
    clock.advance(6)  # the ttl ends between the claim and the submission
    assert Submitter(ctx, PAIR.bulk, job).submit(claimed.bid, claimed.ids, pace) == "ok"
    states = {m.id: (m.state, m.error) for m in ctx.store.get_many([short, kept]) if m}
    assert states == {short: (State.EXPIRED, ERROR), kept: (State.SUBMITTED, None)}
    assert [entry.body for entry in simulator.ledger()] == ["kept"]
    (event,) = expired_events(ctx)
    assert (event.id, event.prev, event.error) == (short, "queued", ERROR)


# --- a worker process ------------------------------------------------------------------------


def test_a_worker_expires_a_scheduled_message_that_never_reaches_the_gateway(
    relay_settings: MakeSettings, simulator: Simulator, start_workers: StartWorkers
) -> None:
    settings = relay_settings(simulator)
    start_workers(1, settings)
    ctx = Context.from_settings(settings)
    try:
        producer = Producer(ctx)
        late = producer.send(**MSG, timetosend=ctx.clock.now() + 3600, ttl=0.5)
        now = producer.send(**{**MSG, "body": "now"}, ttl=600)
        eventually(
            lambda: (m := ctx.store.get(late)) is not None and m.state == State.EXPIRED,
            what="the scheduled message expired",
        )
        eventually(
            lambda: (m := ctx.store.get(now)) is not None and m.state != State.QUEUED,
            what="the other one submitted",
        )
        message = ctx.store.get(late)
        assert message is not None and message.error == ERROR
        assert [entry.body for entry in simulator.ledger()] == ["now"]
        assert [e.id for e in expired_events(ctx)] == [late]
    finally:
        ctx.close()
