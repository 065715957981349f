"""``redis+sentinel://`` against real Sentinels: one ``Relay`` (one connection pool) goes on
through a failover — a primary demoted by ``SENTINEL FAILOVER`` (its clients get READONLY)
and a primary killed with SIGKILL (its clients get refused until a replica is promoted) —
without being made anew. No fakeredis side: Sentinel needs real servers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.sentinel import SentinelConnectionPool
from structlog.testing import capture_logs

from relay.connection import RedisUnavailable
from relay.core import Relay
from relay.errors import NotReplicated
from relay.settings import load_settings
from tests.fixtures.replication import ReplicaSet, replica_set

DEV = 260


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ReplicaSet]:
    """A primary, two replicas (so a promoted one still has one) and three Sentinels."""
    with replica_set(tmp_path / "cluster", replicas=2, sentinels=3) as rs:
        yield rs


@pytest.fixture
def relay(cluster: ReplicaSet) -> Iterator[Relay]:
    settings = load_settings(
        redis_url=cluster.url,
        key_prefix=f"s{uuid.uuid4().hex[:8]}",
        redis_min_replicas=1,
        redis_wait_timeout=2.0,
        redis_reconnect_timeout=30,
        log_json=True,
    )
    with Relay(settings) as relay:
        yield relay


def send(relay: Relay, n: int) -> str:
    return relay.send(sendto="+4915752982212", body=f"message {n}", device_id=DEV, key=f"k{n}")


def send_until_acknowledged(relay: Relay, n: int, timeout: float = 30) -> str:
    """As a client would: the same key again after an error, until relay acknowledges."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return send(relay, n)
        except NotReplicated:  # the new primary's replica is still attaching
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_replaced_primary_is_left_for_the_new_one(cluster: ReplicaSet, relay: Relay) -> None:
    """After ``SENTINEL FAILOVER`` the old primary lives on, without replicas, until the
    Sentinels demote it (seconds later): a send it takes is not acknowledged (no replica has
    it), relay asks the Sentinels again, and the retry goes to the new primary."""
    before = send_until_acknowledged(relay, 0)
    old = cluster.primary.port
    pool = relay.ctx.conn.connection_pool
    assert isinstance(pool, SentinelConnectionPool)  # a redis+sentinel:// URL's
    assert pool.master_address == ("127.0.0.1", old)
    # a switch-over by hand: Sentinel picks the replica by offsets it read up to 10 s ago,
    # so with MIN_REPLICAS below the number of replicas only a replica set in sync is safe
    cluster.wait_synced()
    cluster.sentinels[0].client().sentinel_failover(cluster.master)
    new = cluster.wait_promoted(old)
    after = send_until_acknowledged(relay, 1)
    assert pool.master_address == ("127.0.0.1", new)
    stored = {n.port: n for n in cluster.replicas}[new].client()
    assert stored.exists(relay.ctx.keys.msg(before)) and stored.exists(relay.ctx.keys.msg(after))
    assert relay.status(after).id == after


def test_a_killed_primary_costs_a_pause_not_an_error(cluster: ReplicaSet, relay: Relay) -> None:
    before = send_until_acknowledged(relay, 0)
    old = cluster.kill_primary().port
    with capture_logs() as logs:
        after = send_until_acknowledged(relay, 1)  # waits while no primary answers
    new = cluster.primary_port()
    assert new != old
    waited = [e for e in logs if e["event"] == "redis.reconnected"]
    assert waited and waited[0]["waited_s"] > 0
    by_port = {n.port: n for n in cluster.replicas}
    stored = by_port[new].client()
    assert stored.exists(relay.ctx.keys.msg(before)) and stored.exists(relay.ctx.keys.msg(after))


def test_a_process_starting_during_a_failover_waits_for_the_new_primary(
    cluster: ReplicaSet,
) -> None:
    settings = load_settings(
        redis_url=cluster.url, key_prefix="s-start", redis_reconnect_timeout=30
    )
    cluster.kill_primary()
    with capture_logs() as logs, Relay(settings) as relay:  # the start-up check waits
        assert relay.ctx.conn.ping()
    assert [e for e in logs if e["event"] == "redis.no_primary_yet"]


def test_a_master_name_no_sentinel_monitors_fails_at_once(cluster: ReplicaSet) -> None:
    url = cluster.url.replace(f"/{cluster.master}/", "/no-such-master/")
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match="no-such-master"):
        Relay(load_settings(redis_url=url, redis_reconnect_timeout=30))
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_relay_serve_on_a_sentinel_url_sends_and_streams_through_a_failover(
    cluster: ReplicaSet, relay: Relay
) -> None:
    """``relay serve`` gets its clients from the same connection layer: a Sentinel URL works
    for the /v1 API and its event stream, before and after the primary is killed."""
    from tests.fixtures.http import start_in_thread

    api = start_in_thread(relay.settings)
    body = {"sendto": "+4915752982212", "body": "through the api", "device_id": DEV}
    try:
        with api.client() as c:
            first = c.post("/v1/messages", json={**body, "key": "api-1"})
            assert first.status_code == 202, first.text
            events = c.get("/v1/events", params={"timeout": 1, "last_event_id": "0"})
            assert first.json()["id"] in events.text  # the stream answered on the primary
            old = cluster.kill_primary().port
            deadline = time.monotonic() + 60
            while True:  # a client retries its key on 503 until the new primary answers
                again = c.post("/v1/messages", json={**body, "key": "api-2"})
                if again.status_code == 202 or time.monotonic() > deadline:
                    break
                assert again.status_code == 503, again.text
                time.sleep(0.5)
            assert again.status_code == 202, again.text
            assert cluster.primary_port() != old
            stats = c.get("/v1/stats").json()
            assert stats["states"]["queued"] == 2
    finally:
        api.stop()
