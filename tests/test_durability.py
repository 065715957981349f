"""RELAY_REDIS_MIN_REPLICAS on a real primary and replica (``redis-server`` processes).

The replica's replication is stopped with ``CLIENT PAUSE … WRITE`` on it (its link to the
primary is paused, so it acknowledges nothing) and started again with ``CLIENT UNPAUSE``.
A send then fails with :class:`NotReplicated` instead of answering, a batch goes back to its
lane instead of to the gateway, and both go through once the replica is back. The WAIT
goes on the connection that wrote: on another connection it can answer "replicated" for a
write no replica has (shown here on the server itself).

No fakeredis side: a replica and WAIT need a real server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay import context as context_module
from relay.cli.main import cli
from relay.context import Context
from relay.core import Relay
from relay.devices import sync_devices
from relay.dispatch.ticket import run_ticket
from relay.errors import NotReplicated
from relay.lanes import LaneId, LaneKind
from relay.run.burst import run_until_idle
from relay.settings import Settings, load_settings
from relay.simulator import SimDevice, Simulator
from relay.states import State
from tests.fixtures.replication import ReplicaSet, replica_set
from tests.fixtures.simulator import MakeSimulator

DEV, SIM = 260, 0
WAIT_S = 5.0
"""A healthy replica acknowledges within a millisecond; a loaded CI machine may stall."""
SHORT_WAIT_S = 0.3
"""Where the replica is paused and the wait is meant to run out."""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    """A primary with one replica, shared by the tests of this module (prefixes apart)."""
    with replica_set(tmp_path_factory.mktemp("pair"), replicas=1) as rs:
        yield rs


@pytest.fixture
def prefix() -> str:
    return f"d{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(pair: ReplicaSet, prefix: str) -> Settings:
    return durable_settings(pair, prefix)


def durable_settings(pair: ReplicaSet, prefix: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": pair.url,
        "key_prefix": prefix,
        "redis_min_replicas": 1,
        "redis_wait_timeout": WAIT_S,
        "redis_reconnect_timeout": 5,
        "log_json": True,
        **overrides,
    }
    return load_settings(**values)


@contextmanager
def replica_paused(rs: ReplicaSet) -> Iterator[None]:
    """The replica acknowledges nothing inside the block; it catches up after it."""
    rs.replicas[0].client().client_pause(30_000, all=False)
    try:
        yield
    finally:
        rs.replicas[0].client().client_unpause()
        rs.wait_synced()


def test_send_returns_once_the_replica_has_the_message(
    pair: ReplicaSet, settings: Settings
) -> None:
    relay = Relay(settings)
    msg_id = relay.send(sendto="+4915752982212", body="code 1", device_id=DEV)
    replica = pair.replicas[0].client()
    record = replica.hgetall(relay.ctx.keys.msg(msg_id))
    assert record[b"body"] == b"code 1" and record[b"state"] == b"queued"
    relay.close()


def test_send_fails_clearly_until_the_replica_is_back_and_a_retry_stores_nothing_new(
    pair: ReplicaSet, settings: Settings
) -> None:
    relay = Relay(settings)
    hasty = Relay(durable_settings(pair, settings.key_prefix, redis_wait_timeout=SHORT_WAIT_S))
    with replica_paused(pair), pytest.raises(NotReplicated) as caught:
        hasty.send(sendto="+4915752982212", body="code 2", device_id=DEV, key="order-2")
    hasty.close()
    assert (caught.value.acked, caught.value.wanted) == (0, 1)
    assert "same key" in str(caught.value) and "RELAY_REDIS_MIN_REPLICAS" in str(caught.value)
    # it reached the primary: the retry with the same key answers the id stored then
    again = relay.send(sendto="+4915752982212", body="code 2", device_id=DEV, key="order-2")
    stored = [
        key
        for key in relay.ctx.conn.scan_iter(match=f"{settings.key_prefix}:m:*")
        if relay.ctx.conn.hget(key, "body") == b"code 2"
    ]
    assert stored == [relay.ctx.keys.msg(again).encode()]
    assert pair.replicas[0].client().exists(relay.ctx.keys.msg(again))
    relay.close()


def test_send_many_fails_on_the_chunk_that_is_not_replicated(
    pair: ReplicaSet, settings: Settings
) -> None:
    relay = Relay(durable_settings(pair, settings.key_prefix, redis_wait_timeout=SHORT_WAIT_S))
    items = [{"sendto": "+4915752982212", "body": f"bulk {i}", "device_id": DEV} for i in range(3)]
    with replica_paused(pair), pytest.raises(NotReplicated):
        relay.send_many(items)
    relay.close()


def test_the_wait_must_go_on_the_connection_that_wrote(pair: ReplicaSet) -> None:
    """Why relay sends WAIT in the same pipeline as the write: on a connection whose own last
    write is older (and replicated), WAIT answers at once that a replica has it all — while
    the replica lacks the write just made on another connection."""
    older = pair.primary.client(single_connection_client=True)
    writer = pair.primary.client(single_connection_client=True)
    older.set("durability:older", 1)
    assert older.wait(1, 1000) == 1
    with replica_paused(pair):
        writer.set("durability:new", 1)
        assert older.wait(1, 200) == 1  # a false "replicated" for the writer's write
        assert writer.wait(1, 200) == 0  # the truth, on the writer's own connection
        assert not pair.replicas[0].client().exists("durability:new")
    older.delete("durability:older", "durability:new")


def test_cancel_is_not_acknowledged_before_the_replica_has_it(
    pair: ReplicaSet, settings: Settings
) -> None:
    relay = Relay(settings)
    msg_id = relay.send(
        sendto="+4915752982212", body="later", device_id=DEV, timetosend=time.time() + 3600
    )
    hasty = Relay(durable_settings(pair, settings.key_prefix, redis_wait_timeout=SHORT_WAIT_S))
    with replica_paused(pair), pytest.raises(NotReplicated):
        hasty.cancel(msg_id)
    hasty.close()
    assert relay.status(msg_id).state == State.CANCELLED  # it did take effect on the primary
    relay.close()


def test_no_wait_is_sent_without_min_replicas(pair: ReplicaSet, settings: Settings) -> None:
    conn = pair.primary.client()

    def waits() -> int:
        return int(conn.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

    before = waits()
    plain = Relay(durable_settings(pair, settings.key_prefix, redis_min_replicas=0))
    plain.send_many([{"sendto": "+4915752982212", "body": "x", "device_id": DEV}] * 3)
    plain.send(sendto="+4915752982212", body="y", device_id=DEV)
    assert waits() == before
    durable = Relay(settings)
    durable.send_many([{"sendto": "+4915752982212", "body": "x", "device_id": DEV}] * 3)
    durable.send(sendto="+4915752982212", body="y", device_id=DEV)
    assert waits() == before + 2  # one WAIT per chunk
    plain.close()
    durable.close()


def test_the_cli_says_it_in_one_line(pair: ReplicaSet, settings: Settings) -> None:
    env = {
        "RELAY_REDIS_URL": settings.redis_url,
        "RELAY_KEY_PREFIX": settings.key_prefix,
        "RELAY_REDIS_MIN_REPLICAS": "1",
    }
    args = ["send", "--to", "+4915752982212", "--body", "b", "--device", "260", "--key", "k9"]
    with replica_paused(pair):
        result = CliRunner().invoke(cli, args, env={**env, "RELAY_REDIS_WAIT_TIMEOUT": "0.2"})
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: send: "), result.stderr
    assert "0 of 1 replicas" in lines[0] and "same key" in lines[0]
    again = CliRunner().invoke(cli, args, env=env)
    assert again.exit_code == 0 and again.stdout.strip()


# --- a batch waits for its claim to be replicated --------------------------------------


@pytest.fixture
def sim(make_simulator: MakeSimulator) -> Simulator:
    return make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.0)])


def run_lane(ctx: Context, kind: LaneKind) -> str:
    """Run the lane's ticket here, as the RQ job its key names would (on ``ctx``, made this
    process's context for the call only: this module's servers stop after it)."""
    previous = context_module.swap(ctx)
    try:
        holder = ctx.conn.get(ctx.keys.ticket(LaneId(kind, DEV, SIM)))
        job = holder.decode() if isinstance(holder, bytes) else None
        return run_ticket(kind, DEV, SIM, job_id=job)
    finally:
        context_module.swap(previous)


def test_a_batch_whose_claim_is_not_replicated_waits_and_goes_once_later(
    pair: ReplicaSet, settings: Settings, sim: Simulator, tmp_path: Path
) -> None:
    ctx = Context.from_settings(
        durable_settings(
            pair,
            settings.key_prefix,
            gateway_url=sim.url,
            gateway_token=sim.token,
            redis_wait_timeout=SHORT_WAIT_S,  # a stall here only delays: the batch waits
        )
    )
    sync_devices(ctx)
    items = [{"sendto": f"+491575298{i:04d}", "body": f"m{i}", "device_id": DEV} for i in range(3)]
    with Relay(settings) as relay:
        ids = relay.send_many(items)
    with replica_paused(pair):
        assert run_lane(ctx, "b") == "backoff"
        assert sim.ledger() == []  # no gateway call while the claim is on no replica
        assert {m.state for m in ctx.store.get_many(ids) if m} == {State.QUEUED}
        lane = ctx.conn.lrange(ctx.keys.lane(LaneId("b", DEV, SIM)), 0, -1)
        assert lane == [i.encode() for i in ids]  # back at the head, in order
        assert ctx.conn.get(ctx.keys.ticket(LaneId("b", DEV, SIM))) == b"timer"
        assert ctx.conn.zcard(ctx.keys.inflight) == 0
    assert run_until_idle(ctx, 30)
    assert sorted(e.body for e in sim.ledger()) == ["m0", "m1", "m2"]  # each once
    assert {m.state for m in ctx.store.get_many(ids) if m} == {State.SUBMITTED}
    ctx.close()
