"""Poison messages and ``relay dead``.

A gateway that refuses one particular message (``{"error":1,"message":...}`` for any batch
holding its body; this test's :class:`StubGateway` in front of the simulator) must not
hold up the rest: the dispatcher bisects refused batches, the others go through, and the
poison ends ``rejected`` with the gateway's words after ``RELAY_MAX_ATTEMPTS`` tries (spaced
by a backoff: the words name nothing wrong with the message, so a later try may pass), in
``Keys.dead``; words that do name its fault end it at the first try. ``relay dead`` lists
it, retries it (queued at the head of its lane, attempts reset, ticket armed) and purges it.
Both Redis servers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result

from relay.cli.main import cli
from relay.connection import text
from relay.context import Context
from relay.lanes import LaneId
from relay.produce.producer import Producer
from relay.run.burst import run_until_idle
from relay.settings import Settings, settings_env
from relay.simulator import SimDevice, Simulator
from relay.states import State
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.workers import MakeSettings
from tests.test_gateway_garbage import Reply, StubGateway

DEV, SIM = 260, 0
POISON = "Cheap pills, click here"
WORDS = "Sms could not be saved, please retry"
PERMANENT = "Sms text is not allowed by the operator"
MAX_ATTEMPTS = 3
KEY = "order-4711"


def refuse_poison(endpoint: str, form: Mapping[str, str], words: str = WORDS) -> Reply | None:
    """The gateway's answer to any batch that holds the poisoned body; others pass through."""
    if endpoint != "addalotofsms":
        return None
    items = json.loads(form.get("datajson", "{}")).get("smsdata", [])
    if any(POISON in str(item.get("body")) for item in items):
        return Reply.json({"error": 1, "message": words})
    return None


@dataclass
class Setup:
    ctx: Context
    settings: Settings
    stub: StubGateway
    sim: Simulator

    def send(self, bodies: list[str], urgent: bool = False) -> list[str]:
        """Send ``bodies``; the poisoned one with the idempotency key ``KEY``."""
        items: list[dict[str, Any]] = [
            {"sendto": f"+4915752{i:06d}", "body": body, "device_id": DEV, "urgent": urgent}
            | ({"key": KEY} if body == POISON else {})
            for i, body in enumerate(bodies)
        ]
        return Producer(self.ctx).send_many(items)

    def drain(self) -> None:
        assert run_until_idle(self.ctx, 30), "relay did not settle"

    def refusals(self) -> int:
        return sum(
            1
            for endpoint, form in self.stub.seen
            if endpoint == "addalotofsms" and refuse_poison(endpoint, form) is not None
        )

    def relay(self, *args: str, stdin: str | None = None) -> Result:
        result = CliRunner().invoke(
            cli, list(args), env=settings_env(self.settings), input=stdin, catch_exceptions=True
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"relay {' '.join(args)} raised") from result.exception
        assert "Traceback" not in result.stderr
        return result


@pytest.fixture
def setup(relay_settings: MakeSettings, make_simulator: MakeSimulator) -> Iterator[Setup]:
    sim = make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)])
    stub = StubGateway(sim.url, refuse_poison)
    settings = relay_settings(
        gateway_url=stub.url,
        gateway_token=sim.token,
        batch_max=10,
        max_attempts=MAX_ATTEMPTS,
        device_overrides={str(DEV): 0},
    )
    ctx = Context.from_settings(settings)
    yield Setup(ctx, settings, stub, sim)
    ctx.close()
    stub.stop()


@pytest.fixture
def poisoned(setup: Setup) -> tuple[Setup, list[str], str]:
    """Nine bulk messages and one urgent, the fifth bulk one poisoned, all dispatched."""
    bodies = [f"m{i}" for i in range(9)]
    bodies[4] = POISON
    ids = setup.send(bodies) + setup.send(["otp"], urgent=True)
    setup.drain()
    return setup, ids, ids[4]


def test_a_poison_message_ends_rejected_while_its_batches_go_through(
    poisoned: tuple[Setup, list[str], str],
) -> None:
    s, ids, poison = poisoned
    msg = s.ctx.store.get(poison)
    assert msg is not None and msg.state == State.REJECTED
    assert msg.error == WORDS and msg.attempts == MAX_ATTEMPTS
    assert s.ctx.conn.zscore(s.ctx.keys.dead, poison) is not None
    others = [m for m in s.ctx.store.get_many(ids) if m is not None and m.id != poison]
    assert [m.state for m in others] == [State.SUBMITTED] * 9
    stored = sorted(e.body for e in s.sim.ledger())
    assert stored == sorted([*(f"m{i}" for i in range(9) if i != 4), "otp"])  # each once
    # bounded: the halvings that isolate it (batch of 9: at most 4), then one try per attempt
    assert MAX_ATTEMPTS <= s.refusals() <= MAX_ATTEMPTS + 4


def test_a_poison_whose_words_name_its_fault_ends_at_the_first_try(
    relay_settings: MakeSettings, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)])
    stub = StubGateway(sim.url, lambda e, f: refuse_poison(e, f, PERMANENT))
    settings = relay_settings(
        gateway_url=stub.url,
        gateway_token=sim.token,
        batch_max=10,
        max_attempts=MAX_ATTEMPTS,
        device_overrides={str(DEV): 0},
    )
    s = Setup(Context.from_settings(settings), settings, stub, sim)
    try:
        ids = s.send([f"m{i}" for i in range(3)] + [POISON])
        s.drain()
        msg = s.ctx.store.get(ids[3])
        assert msg is not None and msg.state == State.REJECTED
        assert msg.error == PERMANENT and msg.attempts == 1
        assert sorted(e.body for e in sim.ledger()) == ["m0", "m1", "m2"]
    finally:
        s.ctx.close()
        stub.stop()


def test_relay_dead_lists_the_poison_with_the_gateways_words(
    poisoned: tuple[Setup, list[str], str],
) -> None:
    s, _, poison = poisoned
    listed = s.relay("dead", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["state"], row["body"]) == (poison, "rejected", POISON)
    assert (row["error"], row["attempts"], row["gone"]) == (WORDS, MAX_ATTEMPTS, False)
    assert row["rejected_at"]
    table = s.relay("dead", "list")
    assert table.exit_code == 0 and poison in table.stdout and WORDS in table.stdout


def test_relay_dead_retry_queues_it_at_the_head_with_attempts_reset(
    poisoned: tuple[Setup, list[str], str],
) -> None:
    s, _, poison = poisoned
    k = s.ctx.keys
    assert s.ctx.conn.get(k.ticket(LaneId("b", DEV, SIM))) is None  # idle: no ticket
    later = s.send(["after-1", "after-2"])  # queued behind the lane's new ticket
    s.ctx.conn.delete(k.ticket(LaneId("b", DEV, SIM)))  # ... which the retry must arm again
    s.ctx.conn.delete(f"rq:queue:{k.bulk_queue}")
    retried = s.relay("dead", "retry", poison)
    assert retried.exit_code == 0, retried.stderr
    assert retried.stdout.split() == [poison]
    msg = s.ctx.store.get(poison)
    assert msg is not None and msg.state == State.QUEUED and not msg.final
    assert msg.attempts == 0 and msg.error is None
    assert s.ctx.conn.ttl(k.msg(poison)) == -1  # kept for good again
    assert s.ctx.conn.zscore(k.dead, poison) is None
    lane = [text(i) for i in s.ctx.conn.lrange(k.lane(LaneId("b", DEV, SIM)), 0, -1)]
    assert lane == [poison, *later]
    job = s.ctx.conn.get(k.ticket(LaneId("b", DEV, SIM)))
    assert job is not None and s.ctx.conn.lrange(f"rq:queue:{k.bulk_queue}", 0, -1) == [job]
    # the gateway takes it now: it goes out once, before the messages behind it
    s.stub.rule = lambda endpoint, form: None
    s.drain()
    assert [m.state for m in s.ctx.store.get_many([poison, *later]) if m] == [State.SUBMITTED] * 3
    bodies = [e.body for e in s.sim.ledger()]
    assert bodies.count(POISON) == 1 and bodies.index(POISON) < bodies.index("after-1")


def test_a_retried_poison_that_is_still_refused_ends_rejected_again(
    poisoned: tuple[Setup, list[str], str],
) -> None:
    s, _, poison = poisoned
    before = s.refusals()
    retried = s.relay("dead", "retry", "--all")
    assert retried.exit_code == 0 and retried.stdout.split() == [poison]
    s.drain()
    msg = s.ctx.store.get(poison)
    assert msg is not None and msg.state == State.REJECTED and msg.attempts == MAX_ATTEMPTS
    assert s.refusals() - before == MAX_ATTEMPTS  # alone now: one refusal per attempt
    assert s.ctx.conn.zscore(s.ctx.keys.dead, poison) is not None


def test_relay_dead_purge_asks_then_deletes(poisoned: tuple[Setup, list[str], str]) -> None:
    s, _, poison = poisoned
    k = s.ctx.keys
    declined = s.relay("dead", "purge", poison, stdin="n\n")
    assert declined.exit_code == 2 and "nothing purged" in declined.stderr
    assert s.ctx.store.get(poison) is not None
    purged = s.relay("dead", "purge", poison, "--yes")
    assert purged.exit_code == 0, purged.stderr
    assert purged.stdout.split() == [poison]
    assert s.ctx.store.get(poison) is None and s.ctx.conn.zcard(k.dead) == 0
    assert s.ctx.conn.get(k.idem(KEY)) is None  # the key may be used afresh
    empty = s.relay("dead", "list")
    assert empty.exit_code == 0 and "No rejected messages" in empty.stderr
    assert s.relay("dead", "list", "--json").stdout.strip() == "[]"
    assert s.relay("dead", "purge", "--all", "--yes").exit_code == 0


def test_relay_dead_leaves_other_messages_alone(poisoned: tuple[Setup, list[str], str]) -> None:
    s, ids, poison = poisoned
    fine = ids[0]
    for verb in ("retry", "purge"):
        result = s.relay("dead", verb, fine, "nosuchid", *(["--yes"] if verb == "purge" else []))
        assert result.exit_code == 1
        errors = result.stderr.strip().splitlines()
        assert f"{fine}: is submitted, not rejected; left alone" in errors
        assert any(line.startswith("nosuchid: no such message") for line in errors)
        msg = s.ctx.store.get(fine)
        assert msg is not None and msg.state == State.SUBMITTED
    usage = s.relay("dead", "retry")
    assert usage.exit_code == 2 and "--all" in usage.stderr
    both = s.relay("dead", "retry", poison, "--all")
    assert both.exit_code == 2
    msg = s.ctx.store.get(poison)
    assert msg is not None and msg.state == State.REJECTED


def test_an_expired_record_is_reported_and_leaves_dead(
    poisoned: tuple[Setup, list[str], str],
) -> None:
    s, _, poison = poisoned
    s.ctx.conn.delete(s.ctx.keys.msg(poison))  # as RELAY_RECORD_TTL would
    (row,) = json.loads(s.relay("dead", "list", "--json").stdout)
    assert row == {"id": poison, "rejected_at": row["rejected_at"], "gone": True}
    result = s.relay("dead", "retry", "--all")
    assert result.exit_code == 1 and "no such message" in result.stderr
    assert s.ctx.conn.zcard(s.ctx.keys.dead) == 0
