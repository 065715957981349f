"""The drop-in's integer ids (issued by Redis, consecutive per request, unique under
concurrency, mapped both ways), its index by device and time and the index's pruning, on a
real Redis and on fakeredis; and the status codes the drop-in answers for each state."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from relay.clock import FakeClock
from relay.context import Context
from relay.dropin.ids import DropinIds
from relay.dropin.statuses import RELAY_ENDING, gateway_status
from relay.ids import id_time_ms
from relay.produce.producer import Producer
from relay.states import State
from relay.store import Message
from tests.fixtures.workers import MakeSettings


@pytest.fixture
def ctx(relay_settings: MakeSettings) -> Iterator[Context]:
    context = Context.from_settings(relay_settings(), clock=FakeClock(time.time()))
    yield context
    context.close()


def stored(ctx: Context, n: int, dev: int = 260) -> list[str]:
    items = [{"sendto": f"+4915{i:07d}", "body": f"b{i}", "device_id": dev} for i in range(n)]
    return Producer(ctx).send_many(items)


def test_ids_are_consecutive_per_call_and_mapped_both_ways(ctx: Context) -> None:
    ids = DropinIds(ctx)
    first_batch = stored(ctx, 3)
    first = ids.assign(first_batch, [260] * 3)
    assert first == 1
    second = ids.assign(stored(ctx, 1, dev=261), [261])
    assert second == 4
    for n, msg_id in enumerate(first_batch, start=first):
        assert ids.lookup(n) == msg_id
        record = ctx.store.get(msg_id)
        assert record is not None and record.dropin_id == n
        assert record.to_dict()["dropin_id"] == n
    assert ids.lookup(99) is None
    assert ids.devices() == [260, 261]


def test_ids_are_unique_under_concurrency(ctx: Context) -> None:
    ids = DropinIds(ctx)
    msgs = [stored(ctx, 2) for _ in range(40)]
    firsts: list[int] = []
    lock = threading.Lock()

    def assign(batch: list[str]) -> None:
        first = ids.assign(batch, [260, 260])
        with lock:
            firsts.append(first)

    threads = [threading.Thread(target=assign, args=(batch,)) for batch in msgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    issued = sorted(n for first in firsts for n in (first, first + 1))
    assert issued == list(range(1, 81))  # 80 distinct ids, none lost, none repeated
    assert {ids.lookup(n) for n in issued} == {m for batch in msgs for m in batch}


def test_entries_by_window_and_order(ctx: Context) -> None:
    ids = DropinIds(ctx)
    clock = ctx.clock
    assert isinstance(clock, FakeClock)
    made = []
    for _ in range(3):
        batch = stored(ctx, 1)
        ids.assign(batch, [260])
        made.append(batch[0])
        clock.advance(10)
    times = [id_time_ms(m) for m in made]
    assert [e.msg_id for e in ids.entries(260)] == made
    assert [e.msg_id for e in ids.entries(260, desc=True)] == made[::-1]
    assert [e.number for e in ids.entries(260, times[1], times[2])] == [2, 3]
    assert [e.created_ms for e in ids.entries(260, None, times[0])] == times[:1]
    assert list(ids.entries(999)) == []


def test_prune_removes_only_entries_whose_record_expired(ctx: Context) -> None:
    ids = DropinIds(ctx)
    clock = ctx.clock
    assert isinstance(clock, FakeClock)
    old = stored(ctx, 5)
    ids.assign(old, [260] * 5)
    clock.advance(ctx.settings.record_ttl + 60)
    young = stored(ctx, 2)
    ids.assign(young, [260] * 2)
    assert ids.prune(260) == 0  # every record still exists
    ctx.conn.delete(ctx.keys.msg(old[0]), ctx.keys.msg(old[3]), ctx.keys.msg(young[0]))
    assert ids.prune(260) == 2  # the young one is not old enough to be looked at
    assert ids.lookup(1) is None and ids.lookup(4) is None
    assert ids.lookup(2) == old[1]
    assert [e.number for e in ids.entries(260)] == [2, 3, 5, 6, 7]
    assert ids.prune(260) == 0


# --- status codes ---------------------------------------------------------------------------


def message(state: State, **fields: Any) -> Message:
    base = Message("x", "+491", "b", device_id=260, sim=0, urgent=False, state=state, final=False)
    return dataclasses.replace(base, **fields)


@pytest.mark.parametrize(
    "state", [State.SCHEDULED, State.QUEUED, State.SUBMITTING, State.UNKNOWN, State.SUBMITTED]
)
def test_new_while_relay_holds_it_or_the_gateway_said_nothing_yet(state: State) -> None:
    assert gateway_status(message(state)) == (1, "New")


def test_the_gateways_codes_and_words_once_known() -> None:
    taken = message(State.SUBMITTED, sms_id=5, status=2, statustitle="sending")
    assert gateway_status(taken) == (2, "sending")
    assert gateway_status(message(State.SENT, status=6, statustitle="sent")) == (6, "sent")
    assert gateway_status(message(State.SENT)) == (6, "Sent")
    assert gateway_status(message(State.DELIVERED, status=7)) == (7, "Delivered")
    failed = message(State.FAILED, status=10, statustitle="not sent: no service")
    assert gateway_status(failed) == (10, "not sent: no service")
    assert gateway_status(message(State.FAILED)) == (RELAY_ENDING, "Not sent: generic failure")


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (State.REJECTED, "Not sent: rejected by the gateway: Device 1 not found"),
        (State.CANCELLED, "Not sent: cancelled in relay"),
        (State.EXPIRED, "Expired in relay: no final status in time"),
    ],
)
def test_relays_own_endings_are_a_final_failure_code(state: State, words: str) -> None:
    error = "Device 1 not found" if state == State.REJECTED else None
    assert gateway_status(message(state, final=True, error=error)) == (RELAY_ENDING, words)


def test_a_message_past_its_ttl_is_not_sent() -> None:
    lapsed = message(State.EXPIRED, final=True, error="not submitted within its ttl")
    assert gateway_status(lapsed) == (RELAY_ENDING, "Not sent: not submitted within its ttl")
