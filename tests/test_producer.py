"""send / send_many / cancel and the Relay facade, on a real Redis and on fakeredis."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import pytest
import redis

import relay as package
from relay import scripts as scripts_module
from relay.clock import FakeClock
from relay.connection import maybe_text, text
from relay.core import Relay
from relay.dispatch.tickets import TICKET_FUNC, enqueue_tickets, queue
from relay.errors import ConflictError, NotFoundError, ValidationError
from relay.ids import ID_LENGTH, id_time_ms
from relay.keys import Keys
from relay.lanes import LaneId
from relay.produce import producer as producer_module
from relay.states import State
from tests.fixtures.replies import entries

PHONE = "+4915752982212"


def hash_of(conn: redis.Redis, key: str) -> dict[str, str]:
    return {text(k): text(v) for k, v in conn.hgetall(key).items()}


def lane(conn: redis.Redis, key: str) -> list[str]:
    return [text(v) for v in conn.lrange(key, 0, -1)]


def events(conn: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [fields for _, fields in entries(conn, keys.events)]


def stored_keys(conn: redis.Redis, keys: Keys) -> set[bytes]:
    return set(conn.scan_iter(match=f"{keys.prefix}:*", count=1000)) | set(
        conn.scan_iter(match=f"rq:*{keys.prefix}*", count=1000)
    )


def counts(conn: redis.Redis, keys: Keys) -> dict[str, int]:
    return {text(k): int(v) for k, v in conn.hgetall(keys.counts).items() if int(v)}


# --- send ------------------------------------------------------------------------------


def test_send_stores_record_lane_count_and_event(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    msg_id = relay.send("+49 157 5298 2212", "Your code is 4711", 260, sim=1)
    # nothing empty or derivable: urgent 0, final 0, attempts 0 and t_queued (the id's time)
    assert hash_of(redis_conn, keys.msg(msg_id)) == {
        "sendto": PHONE,
        "body": "Your code is 4711",
        "device_id": "260",
        "sim": "1",
        "state": "queued",
    }
    assert id_time_ms(msg_id) == 1_800_000_000_000
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 1))) == [msg_id]
    assert redis_conn.llen(keys.lane(LaneId("u", 260, 1))) == 0
    assert redis_conn.smembers(keys.lanes) == {b"260:1"}
    assert counts(redis_conn, keys) == {"queued": 1}
    # the first event is lean: prev, final and at (the id's time) are for readers to fill in
    assert events(redis_conn, keys) == [
        {"id": msg_id, "state": "queued", "device_id": "260", "sim": "1"}
    ]
    msg = relay.status(msg_id)
    assert (msg.state, msg.sendto, msg.final, msg.attempts) == (State.QUEUED, PHONE, False, 0)
    assert msg.times == {"queued": datetime.fromtimestamp(1_800_000_000, UTC)}


def test_optional_fields_are_stored_when_given(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    # Strings as CSV and CLI give them: the library takes them, as validation.py says, though
    # send's signature names the types it prefers.
    msg_id = relay.send(PHONE, "hi", "261", customerid="77", key="order-1", urgent="true")  # type: ignore[arg-type]
    rec = hash_of(redis_conn, keys.msg(msg_id))
    assert (rec["customerid"], rec["key"], rec["urgent"], rec["device_id"]) == (
        "77",
        "order-1",
        "1",
        "261",
    )
    assert events(redis_conn, keys)[0]["customerid"] == "77"
    assert relay.status(msg_id).customerid == 77


def test_urgent_messages_go_to_the_urgent_lane(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    bulk = relay.send(PHONE, "news", 260)
    urgent = relay.send(PHONE, "code 1234", 260, urgent=True)
    assert lane(redis_conn, keys.lane(LaneId("u", 260, 0))) == [urgent]
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [bulk]
    assert relay.status(urgent).urgent is True


def test_ids_are_short_unique_and_time_ordered(relay: Relay, clock: FakeClock) -> None:
    ids = []
    for _ in range(20):
        ids.append(relay.send(PHONE, "x", 260))
        clock.advance(0.001)
    ids += relay.send_many([{"sendto": PHONE, "body": "x", "device_id": 260}] * 50)
    assert len(set(ids)) == len(ids) == 70
    assert ids == sorted(ids)
    assert all(len(i) == ID_LENGTH and i.isalnum() for i in ids)
    assert id_time_ms(ids[0]) == 1_800_000_000_000


def test_seeding_the_global_random_does_not_repeat_ids(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_enqueue(monkeypatch)
    ids = []
    for _ in range(2):  # same clock ms both times: only the random part differs
        random.seed(7)
        ids.append(relay.send(PHONE, "a", 260))
        random.seed(7)
        ids += relay.send_many([{"sendto": PHONE, "body": "b", "device_id": 260}] * 3)
    assert len(set(ids)) == 8
    assert calls == [1, 3, 1, 3]  # no id was taken, so no call was repeated


def test_an_id_that_exists_is_refused_and_replaced(
    relay: Relay, redis_conn: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = relay.send(PHONE, "first", 260)
    made = iter([first, first, "0000000000zzzz"])
    monkeypatch.setattr(producer_module, "new_id", lambda now_ms: next(made))
    second = relay.send(PHONE, "second", 260)
    assert second == "0000000000zzzz"
    assert relay.status(first).body == "first"
    assert relay.status(second).body == "second"
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [first, second]
    assert counts(redis_conn, keys) == {"queued": 2}


def test_a_taken_id_in_a_chunk_stores_nothing_until_replaced(
    relay: Relay, redis_conn: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = relay.send(PHONE, "first", 260)
    monkeypatch.setattr(producer_module, "new_ids", lambda now_ms, n: ["0000000000aaaa", first])
    calls = count_enqueue(monkeypatch)
    ids = relay.send_many([{"sendto": PHONE, "body": f"m{i}", "device_id": 260} for i in range(2)])
    assert ids[0] == "0000000000aaaa" and ids[1] not in (first, ids[0])
    assert len(calls) == 2  # refused whole, then stored with a fresh id
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [first, *ids]
    assert [relay.status(i).body for i in (first, *ids)] == ["first", "m0", "m1"]
    assert len(events(redis_conn, keys)) == 3


# --- tickets ---------------------------------------------------------------------------


def test_one_ticket_job_per_lane_however_many_sends(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    for i in range(5):
        relay.send(PHONE, f"bulk {i}", 260)
    relay.send_many([{"sendto": PHONE, "body": "more", "device_id": 260}] * 3)
    bulk = queue(redis_conn, keys, "b")
    assert bulk.count == 1
    job = bulk.jobs[0]
    assert job.id == maybe_text(redis_conn.get(keys.ticket(LaneId("b", 260, 0))))
    assert (job.func_name, list(job.args)) == (TICKET_FUNC, ["b", 260, 0])
    assert queue(redis_conn, keys, "u").count == 0

    relay.send(PHONE, "urgent", 260, urgent=True)
    relay.send(PHONE, "other device", 261)
    assert queue(redis_conn, keys, "u").count == 1
    assert bulk.count == 2


def test_a_new_ticket_job_once_the_ticket_key_is_cleared(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    relay.send(PHONE, "one", 260)
    relay.send(PHONE, "two", 260)
    bulk = queue(redis_conn, keys, "b")
    first_job = bulk.job_ids
    assert len(first_job) == 1
    redis_conn.delete(keys.ticket(LaneId("b", 260, 0)))  # what a ticket does when its lane is empty
    relay.send(PHONE, "three", 260)
    assert bulk.count == 2
    assert (
        maybe_text(redis_conn.get(keys.ticket(LaneId("b", 260, 0))))
        == bulk.job_ids[1]
        != first_job[0]
    )


def test_the_second_round_trip_happens_only_when_a_ticket_is_set(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueued: list[list[Any]] = []

    def spy(*args: Any) -> None:
        enqueued.append(args[1])
        enqueue_tickets(*args)

    monkeypatch.setattr(producer_module, "enqueue_tickets", spy)
    relay.send(PHONE, "one", 260)
    relay.send(PHONE, "two", 260)
    relay.send(PHONE, "later", 261, timetosend=1_800_000_600)
    assert [[a.lane for a in arms] for arms in enqueued] == [[LaneId("b", 260, 0)]]


# --- send_many -------------------------------------------------------------------------


def count_enqueue(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap ``relay.scripts.call``; the list gets the message count of each enqueue call."""
    calls: list[int] = []
    real = scripts_module.call

    def counting(client: Any, name: str, keys: Any, args: Any) -> Any:
        if name == "enqueue":
            # ARGV: 7 values (the 7th: m), one per message, then m pool-member tickets
            calls.append(len(args) - 7 - int(args[6]))
        return real(client, name, keys, args)

    monkeypatch.setattr(scripts_module, "call", counting)
    return calls


def test_send_many_makes_one_script_call_per_chunk(
    relay: Relay, redis_conn: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_enqueue(monkeypatch)
    items = [
        {"sendto": f"+49157{i:07d}", "body": f"m{i}", "device_id": 260 + i % 3, "sim": i % 2}
        for i in range(2500)
    ]
    ids = relay.send_many(items, chunk_size=1000)
    assert calls == [1000, 1000, 500]
    assert len(set(ids)) == 2500
    stored = relay.ctx.store.get_many(ids)
    assert [m.body for m in stored if m] == [f"m{i}" for i in range(2500)]
    assert lane(redis_conn, keys.lane(LaneId("b", 261, 1)))[:2] == [ids[1], ids[7]]
    assert counts(redis_conn, keys) == {"queued": 2500}
    assert redis_conn.xlen(keys.events) == 2500
    assert redis_conn.scard(keys.lanes) == 6
    assert queue(redis_conn, keys, "b").count == 6


def test_send_many_mixes_lanes_and_schedules(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    ids = relay.send_many(
        [
            {"sendto": PHONE, "body": "a", "device_id": 260},
            {"sendto": PHONE, "body": "b", "device_id": 260, "urgent": 1},
            {"sendto": PHONE, "body": "c", "device_id": 260, "timetosend": "2027-01-15 09:00:00"},
            {"sendto": PHONE, "body": "d", "device_id": 260},
        ]
    )
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [ids[0], ids[3]]
    assert lane(redis_conn, keys.lane(LaneId("u", 260, 0))) == [ids[1]]
    assert redis_conn.zrange(keys.sched(LaneId("b", 260, 0)), 0, -1) == [ids[2].encode()]
    assert counts(redis_conn, keys) == {"queued": 3, "scheduled": 1}
    assert [e["state"] for e in events(redis_conn, keys)] == ["queued"] * 2 + [
        "scheduled",
        "queued",
    ]


def test_send_many_of_nothing_stores_nothing(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    assert relay.send_many([]) == []
    assert redis_conn.exists(keys.counts, keys.events) == 0
    with pytest.raises(ValueError):
        relay.send_many([{"sendto": PHONE, "body": "x", "device_id": 1}], chunk_size=0)


# --- idempotency -----------------------------------------------------------------------


def test_same_key_returns_the_same_id_and_stores_nothing(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    first = relay.send(PHONE, "pay 10", 260, key="invoice-9")
    before = stored_keys(redis_conn, keys), redis_conn.xlen(keys.events), counts(redis_conn, keys)
    again = relay.send(PHONE, "pay 10 (retry)", 261, urgent=True, key="invoice-9")
    assert again == first
    after = stored_keys(redis_conn, keys), redis_conn.xlen(keys.events), counts(redis_conn, keys)
    assert after == before
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [first]
    assert redis_conn.llen(keys.lane(LaneId("u", 261, 0))) == 0
    assert relay.status(first).body == "pay 10"
    ttl = redis_conn.ttl(keys.idem("invoice-9"))
    assert relay.settings.idempotency_ttl - 5 <= ttl <= relay.settings.idempotency_ttl


def test_same_key_within_one_send_many(relay: Relay, redis_conn: redis.Redis, keys: Keys) -> None:
    ids = relay.send_many(
        [
            {"sendto": PHONE, "body": "a", "device_id": 260, "key": "k"},
            {"sendto": PHONE, "body": "b", "device_id": 260, "key": "other"},
            {"sendto": PHONE, "body": "c", "device_id": 260, "key": "k"},
            {"sendto": PHONE, "body": "d", "device_id": 260},
        ]
    )
    assert ids[2] == ids[0] and len({ids[0], ids[1], ids[3]}) == 3
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [ids[0], ids[1], ids[3]]
    assert counts(redis_conn, keys) == {"queued": 3}
    assert relay.send_many([{"sendto": PHONE, "body": "e", "device_id": 1, "key": "other"}]) == [
        ids[1]
    ]


def test_a_key_is_forgotten_when_it_expires(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    first = relay.send(PHONE, "x", 260, key="once")
    redis_conn.pexpire(keys.idem("once"), 1)
    for _ in range(10_000):
        if not redis_conn.exists(keys.idem("once")):
            break
    second = relay.send(PHONE, "x", 260, key="once")
    assert second != first
    assert maybe_text(redis_conn.get(keys.idem("once"))) == second
    assert counts(redis_conn, keys) == {"queued": 2}


# --- scheduled at send -----------------------------------------------------------------


def test_a_future_timetosend_waits_in_the_schedule(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    later = relay.send(PHONE, "later", 260, timetosend=1_800_000_600)
    sooner = relay.send(PHONE, "sooner", 260, timetosend=datetime.fromtimestamp(1_800_000_300, UTC))
    past = relay.send(PHONE, "past", 260, timetosend="2020-01-01")
    assert relay.status(later).state == State.SCHEDULED
    assert relay.status(later).timetosend == datetime.fromtimestamp(1_800_000_600, UTC)
    assert relay.status(past).state == State.QUEUED and relay.status(past).timetosend is None
    assert lane(redis_conn, keys.lane(LaneId("b", 260, 0))) == [past]
    assert redis_conn.zrange(keys.sched(LaneId("b", 260, 0)), 0, -1, withscores=True) == [
        (sooner.encode(), 1_800_000_300_000),
        (later.encode(), 1_800_000_600_000),
    ]
    assert redis_conn.zrange(keys.sched_due, 0, -1, withscores=True) == [
        (b"b:260:0", 1_800_000_300_000)
    ]
    assert "t_scheduled" not in hash_of(redis_conn, keys.msg(later))  # the id says it
    assert relay.status(later).times == {"scheduled": datetime.fromtimestamp(1_800_000_000, UTC)}
    assert counts(redis_conn, keys) == {"scheduled": 2, "queued": 1}


# --- cancel ----------------------------------------------------------------------------


def test_cancel_a_queued_message(relay: Relay, redis_conn: redis.Redis, keys: Keys) -> None:
    keep = relay.send(PHONE, "keep", 260, urgent=True)
    gone = relay.send(PHONE, "cancel me", 260, urgent=True, customerid=3)
    msg = relay.cancel(gone)
    assert (msg.state, msg.final) == (State.CANCELLED, True)
    assert lane(redis_conn, keys.lane(LaneId("u", 260, 0))) == [keep]
    assert counts(redis_conn, keys) == {"queued": 1, "cancelled": 1}
    last = events(redis_conn, keys)[-1]
    assert (last["id"], last["state"], last["prev"], last["final"]) == (
        gone,
        "cancelled",
        "queued",
        "1",
    )
    assert redis_conn.ttl(keys.msg(gone)) > 0  # a final record expires


def test_cancel_a_scheduled_message(relay: Relay, redis_conn: redis.Redis, keys: Keys) -> None:
    msg_id = relay.send(PHONE, "later", 261, sim=1, timetosend=1_800_003_600)
    assert relay.cancel(msg_id).state == State.CANCELLED
    assert redis_conn.zcard(keys.sched(LaneId("b", 261, 1))) == 0
    assert counts(redis_conn, keys) == {"cancelled": 1}


def test_cancel_after_a_worker_claimed_is_a_conflict(
    relay: Relay, redis_conn: redis.Redis, keys: Keys
) -> None:
    msg_id = relay.send(PHONE, "claimed", 260)
    assert redis_conn.lpop(keys.lane(LaneId("b", 260, 0))) == msg_id.encode()  # as claim.lua does
    with pytest.raises(ConflictError, match=r"queued.*claimed"):
        relay.cancel(msg_id)
    assert relay.status(msg_id).state == State.QUEUED
    assert counts(redis_conn, keys) == {"queued": 1}


def test_cancel_in_a_later_state_is_a_conflict_naming_it(relay: Relay) -> None:
    msg_id = relay.send(PHONE, "going", 260)
    assert relay.ctx.store.transition([msg_id], State.SUBMITTING, [State.QUEUED]) == [msg_id]
    with pytest.raises(ConflictError, match="is submitting"):
        relay.cancel(msg_id)
    other = relay.send(PHONE, "twice", 260)
    relay.cancel(other)
    with pytest.raises(ConflictError, match="is cancelled"):
        relay.cancel(other)


def test_cancel_or_status_of_an_unknown_id(relay: Relay) -> None:
    with pytest.raises(NotFoundError):
        relay.cancel("0000000000nope")
    with pytest.raises(NotFoundError):
        relay.status("0000000000nope")


# --- the facade ------------------------------------------------------------------------


def test_from_env_and_context_manager(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_BODY_MAX", "5")
    with Relay.from_env(redis_url=redis_url, key_prefix=key_prefix) as rel:
        assert rel.settings.body_max == 5
        assert rel.settings.key_prefix == key_prefix
        with pytest.raises(ValidationError, match="at most 5"):
            rel.send(PHONE, "too long", 260)
        msg_id = rel.send(PHONE, "short", 260)
        stats = rel.stats()
        assert stats.states.get("queued") == 1
        assert stats.queued == 1
        assert rel.status(msg_id).body == "short"


def test_the_package_exports() -> None:
    assert package.__version__ == version("relay-sms")
    assert package.Relay is Relay
    for name in package.__all__:
        assert hasattr(package, name), name
    assert issubclass(package.ValidationError, package.RelayError)
    # A StrEnum member equals its text; mypy takes the two literals for disjoint.
    assert package.State.QUEUED == "queued"  # type: ignore[comparison-overlap]
