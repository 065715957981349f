"""Chaos: nothing lost, nothing sent twice, under crashes, gateway faults and Redis restarts.

A real Redis server with AOF (restarted by the test with SIGKILL), the simulator injecting
5xx (before and after storing), slow answers past the client timeout, stored-then-dropped
and dropped-before-storing requests; several worker and reconciler processes killed with
SIGKILL at seeded random moments; urgent, bulk, scheduled and cancelled messages. At the
end, against the simulator's ledger: each message stored at most once, every acknowledged
message in a final state, each final state equal to the simulator's truth.

Size: ``RELAY_CHAOS_SIZE`` messages (CI: the default; ``RELAY_CHAOS_SIZE=20000`` for the
long run), seed ``RELAY_CHAOS_SEED``.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from relay.core import Relay
from relay.errors import ConflictError, RelayError
from relay.settings import load_settings
from relay.simulator import OutcomeRule, SimDevice, Simulator
from relay.states import FINAL_STATES, State
from tests.chaos.harness import CHAOS_TIMINGS, Supervisor, relay_env
from tests.chaos.redis_process import RedisProcess

SIZE = int(os.environ.get("RELAY_CHAOS_SIZE", "600"))
SEED = int(os.environ.get("RELAY_CHAOS_SEED", "20261127"))
DEVICES = (701, 702, 703)
WANTED = {"worker": 3, "reconciler": 2}
GATEWAY_TIMEOUT = 1.0

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(max(900, SIZE // 5))]


@dataclass
class Sent:
    """What the producer did: acknowledged ids, cancelled ids, attempts per (sendto, body)."""

    acked: dict[str, tuple[str, str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    unacked: int = 0


def expected_state(code: int) -> State:
    if code == 7:
        return State.DELIVERED
    if code == 6:
        return State.SENT
    return State.FAILED


def make_simulator(rng: random.Random) -> Simulator:
    devices = [
        SimDevice(id=d, title=f"chaos {d}", delaybetweenrequest=0.2, delaybetweeneachsms=0.002)
        for d in DEVICES
    ]
    sim = Simulator(
        devices,
        outcome=OutcomeRule(fail_rate=0.1, no_report_rate=0.05, seed=SEED, report_delay=0.05),
        seed=SEED,
    ).start()
    faults = sim.faults
    faults.add("addalotofsms", "http_500", rate=0.06)
    faults.add("addalotofsms", "http_502", rate=0.06, store=True)
    faults.add("addalotofsms", "drop_after", rate=0.08)
    faults.add("addalotofsms", "drop_before", rate=0.06)
    faults.add("addalotofsms", "slow", rate=0.05, delay=GATEWAY_TIMEOUT + 0.5)
    faults.add("getallsms", "http_500", rate=0.08)
    faults.add("getallsms", "slow", rate=0.02, delay=GATEWAY_TIMEOUT + 0.5)
    faults.add("getsmsstatus", "http_503", rate=0.05)
    return sim


def settings_env(redis_url: str, sim: Simulator, prefix: str) -> dict[str, str]:
    return {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_KEY_PREFIX": prefix,
        "RELAY_GATEWAY_URL": sim.url,
        "RELAY_GATEWAY_TOKEN": sim.token,
        "RELAY_GATEWAY_TIMEOUT": str(GATEWAY_TIMEOUT),
        "RELAY_GATEWAY_RETRIES": "2",
        "RELAY_MATCH_WINDOW": "120",
        **CHAOS_TIMINGS,
    }


def produce(relay: Relay, rng: random.Random, sent: Sent, count: int, start: int) -> None:
    """Send ``count`` messages: ~10 % urgent, ~10 % scheduled, ~4 % twins, ~5 % cancelled."""
    for i in range(start, start + count):
        roll = rng.random()
        body = f"chaos {SEED} #{i}" if rng.random() > 0.04 else f"chaos twin {i % 7}"
        sendto = f"+4915{rng.randrange(10**8, 10**9)}" if "twin" not in body else "+4915700000007"
        timetosend = time.time() + rng.uniform(0.5, 3.0) if 0.1 <= roll < 0.2 else None
        sent.attempts[(sendto, body)] += 1
        try:
            msg_id = relay.send(
                sendto=sendto,
                body=body,
                device_id=rng.choice(DEVICES),
                urgent=roll < 0.1,
                timetosend=timetosend,
            )
        except (redis.RedisError, RelayError):
            sent.unacked += 1  # not acknowledged: may or may not be stored, never counted lost
            continue
        sent.acked[msg_id] = (sendto, body)
        if rng.random() < 0.05:
            try:
                relay.cancel(msg_id)
                sent.cancelled.add(msg_id)
            except ConflictError:
                pass  # already claimed by a worker: it will be sent, and that is right
            except redis.RedisError:
                pass  # unknown whether it was cancelled; the final check reads the record


def wait_final(relay: Relay, ids: list[str], sup: Supervisor, deadline: float) -> list[str]:
    """Wait (reviving processes) until every id is final; return those that are not."""
    left = ids
    while time.monotonic() < deadline:
        sup.revive(WANTED)
        try:
            msgs = [relay.status(i) for i in left]
        except (redis.RedisError, RelayError):
            time.sleep(0.5)
            continue
        left = [m.id for m in msgs if not (m.final or m.state in FINAL_STATES)]
        if not left:
            return []
        time.sleep(0.5)
    return left


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RELAY_SKIP_CHAOS") == "1", reason="RELAY_SKIP_CHAOS=1")
def test_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    server = RedisProcess(tmp_path / "redis")
    server.start()
    sim = make_simulator(rng)
    prefix = f"chaos{SEED % 1000}"
    env = settings_env(server.url, sim, prefix)
    sup = Supervisor(relay_env(env), tmp_path)
    relay = Relay(load_settings(**{k[6:].lower(): v for k, v in env.items()}))
    sent = Sent()
    try:
        sup.revive(WANTED)
        waves = max(6, SIZE // 400)  # the long run kills and restarts more, not just sends more
        per_wave = max(1, SIZE // waves)
        restarts_at = set(range(2, waves, max(2, waves // 3)))  # 600 messages: waves 2 and 4
        for wave in range(waves):
            produce(relay, rng, sent, per_wave, wave * per_wave)
            for _ in range(rng.randint(1, 3)):
                victims = sup.alive()
                if victims:
                    sup.kill(rng.choice(victims))
                time.sleep(rng.uniform(0.1, 0.6))
            if wave in restarts_at:
                server.restart()
                relay.ctx.conn.connection_pool.disconnect()
            sup.revive(WANTED)
        remaining = wait_final(relay, list(sent.acked), sup, time.monotonic() + 300 + SIZE / 20)
        report = check(relay, sim, sent)
        report["kills"], report["restarts"] = sup.kills, server.restarts
        report["faults"] = sum(sim.faults.counts().values())
        print(
            "chaos: messages={messages} kills={kills} faults={faults} restarts={restarts} "
            "lost={lost} duplicated={duplicated} mismatched={mismatched}".format(**report)
        )
        if remaining:
            example = relay.status(remaining[0])
            pytest.fail(f"{len(remaining)} not final, e.g. {example}\n{sup.tail()}")
        assert report["lost"] == 0, report
        assert report["duplicated"] == 0, report
        assert report["mismatched"] == 0, report
    finally:
        sup.stop_all()
        relay.close()
        sim.stop()
        server.stop()


def check(relay: Relay, sim: Simulator, sent: Sent) -> dict[str, int]:
    """Compare relay's records with the simulator's ledger."""
    ledger = sim.ledger()
    stored: Counter[tuple[str, str]] = Counter((e.sendto, e.body) for e in ledger)
    by_sms = {e.sms_id: e for e in ledger}
    duplicated = sum(max(0, n - sent.attempts[key]) for key, n in stored.items())
    for key, n in stored.items():
        if n > sent.attempts[key]:  # say what happened, for whoever reads a failure
            entries = [e.to_dict() for e in ledger if (e.sendto, e.body) == key]
            ids = [i for i, k in sent.acked.items() if k == key]
            print("duplicated:", key, entries, [relay.status(i).to_dict() for i in ids])
    lost = mismatched = 0
    owners: Counter[int] = Counter()
    for msg_id, key in sent.acked.items():
        msg = relay.status(msg_id)
        if msg.sms_id is not None:
            owners[msg.sms_id] += 1
        if not (msg.final or msg.state in FINAL_STATES):
            lost += 1
            continue
        if msg.state == State.CANCELLED:
            mismatched += msg.sms_id is not None
            continue
        entry = by_sms.get(msg.sms_id) if msg.sms_id is not None else None
        if entry is None or (entry.sendto, entry.body) != key:
            mismatched += 1
            continue
        if msg.state != expected_state(sim.status(entry.sms_id)):
            mismatched += 1
    # a message relay believes cancelled must not be at the gateway (unique bodies only)
    cancelled_keys = [sent.acked[i] for i in sent.cancelled if "twin" not in sent.acked[i][1]]
    mismatched += sum(1 for key in cancelled_keys if stored[key])
    # one gateway record never stands for two relay messages
    mismatched += sum(n - 1 for n in owners.values() if n > 1)
    return {
        "messages": len(sent.acked),
        "lost": lost,
        "duplicated": duplicated,
        "mismatched": mismatched,
    }
