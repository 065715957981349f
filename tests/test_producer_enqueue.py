"""``Producer.enqueue`` (ids with whether each was stored now), ``validate_all``, and a send
whose ticket job cannot be enqueued: on a real Redis and fakeredis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from relay.core import Relay
from relay.keys import Keys
from relay.lanes import LaneId
from relay.produce.validation import validate, validate_all
from relay.settings import load_settings

MSG: dict[str, Any] = {"sendto": "+4915752982212", "body": "hi", "device_id": 260}


@pytest.fixture
def r(redis_url: str, key_prefix: str) -> Iterator[Relay]:
    rel = Relay(load_settings(redis_url=redis_url, key_prefix=key_prefix))
    yield rel
    rel.close()


def test_enqueue_says_which_messages_were_stored_now(r: Relay) -> None:
    now = time.time()
    msgs = [
        validate({**MSG, "key": "a"}, r.settings, now),
        validate(MSG, r.settings, now),
        validate({**MSG, "key": "a"}, r.settings, now),
    ]
    first = r.producer.enqueue(msgs)
    assert [d.created for d in first] == [True, True, False]
    assert first[2].id == first[0].id
    again = r.producer.enqueue(msgs[:1])
    assert again[0].id == first[0].id and not again[0].created
    assert r.status(first[1].id).state.value == "queued"


def test_validate_all_lists_every_bad_item(r: Relay) -> None:
    items = [MSG, {**MSG, "sim": 7}, {"body": "x"}, MSG, 5]
    valid, errors = validate_all(items, r.settings, time.time())
    assert len(valid) == 2
    assert [(e.index, e.field) for e in errors] == [(1, "sim"), (2, "sendto"), (4, "item")]


def test_a_failed_ticket_enqueue_does_not_fail_a_stored_send(
    r: Relay, monkeypatch: pytest.MonkeyPatch, redis_conn: redis.Redis, key_prefix: str
) -> None:
    # Injected fault: a real connection cannot be made to drop exactly between the script
    # and the ticket's RQ enqueue on demand.
    def broken(*_args: object, **_kwargs: object) -> None:
        raise redis.ConnectionError("lost the connection after the script ran")

    monkeypatch.setattr("relay.produce.producer.enqueue_tickets", broken)
    msg_id = r.send(MSG["sendto"], MSG["body"], MSG["device_id"])
    keys = Keys(key_prefix)
    assert redis_conn.lrange(keys.lane(LaneId("b", 260, 0)), 0, -1) == [msg_id.encode()]
    assert redis_conn.get(keys.ticket(LaneId("b", 260, 0))) is not None  # the sweep re-arms its job
