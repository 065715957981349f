"""The failover scenario: a Sentinel failover with SIGKILL while sends and dispatch go on.

A primary, two replicas and three Sentinels (``redis-server`` processes); two ``relay
worker`` processes and one ``relay reconciler`` on ``redis+sentinel://``; the simulator as
the gateway. The test sends through the library, as a client would: a send that fails is
sent again with the same ``key`` until relay acknowledges it. Midway the primary is cut off
from its replicas (its replication links dropped, what they held lost — as when its
network to them fails, or its host dies with the stream still in its buffers) and, after
``isolate_s``, killed with SIGKILL; the Sentinels promote a replica, the other replica
follows it, and the sends go on. Then every acknowledged message must reach a final state,
the simulator's ledger must hold each message at most once, and no relay process may have
needed a restart.

``python -m tests.chaos.failover --min-replicas 0`` runs it without
``RELAY_REDIS_MIN_REPLICAS`` and prints what a failover does then (timing-dependent, so not
a test): acknowledged messages vanish, and batches whose claim vanished are sent again.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

from relay.connection import text
from relay.core import Relay
from relay.errors import NotFoundError, RelayError
from relay.lanes import DeviceSim
from relay.settings import load_settings
from relay.simulator import OutcomeRule, SimDevice, Simulator
from relay.states import FINAL_STATES, State
from tests.chaos.harness import CHAOS_TIMINGS, Supervisor, relay_env
from tests.fixtures.replication import ReplicaSet, replica_set

DEVICES = (711, 712, 713)
PROCESSES = {"worker": 2, "reconciler": 1}
CUT_BY_S = 90.0
"""The primary is cut off at half the messages, or after this long if that comes first (a
Sentinel re-points a replica replicating through a link after its failover-timeout)."""
SEND_GIVE_UP_S = 90.0
"""A client gives a send up after retrying it this long (it then counts as not acknowledged)."""


@dataclass
class Report:
    """What a failover run did and found."""

    size: int
    min_replicas: int
    isolate_s: float
    acknowledged: int = 0
    gave_up: int = 0
    send_retries: int = 0
    longest_send_s: float = 0.0
    kills: int = 0
    promoted_after_s: float = 0.0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    not_final: int = 0
    processes_exited: int = 0
    batches_held_back: int = 0
    sent_while_cut_off: int = 0
    batches_recovered: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"failover: messages={self.size} min_replicas={self.min_replicas} "
            f"isolated={self.isolate_s}s kills={self.kills} acknowledged={self.acknowledged} "
            f"gave_up={self.gave_up} retries={self.send_retries} "
            f"longest_send={self.longest_send_s:.2f}s promoted_after={self.promoted_after_s:.2f}s "
            f"lost={self.lost} duplicated={self.duplicated} mismatched={self.mismatched} "
            f"exited={self.processes_exited} held_back={self.batches_held_back} "
            f"acknowledged_while_cut_off={self.sent_while_cut_off} "
            f"recovered={self.batches_recovered} time={self.seconds:.1f}s"
        )


def settings_env(url: str, sim: Simulator, prefix: str, min_replicas: int) -> dict[str, str]:
    return {
        "RELAY_REDIS_URL": url,
        "RELAY_KEY_PREFIX": prefix,
        "RELAY_REDIS_MIN_REPLICAS": str(min_replicas),
        "RELAY_REDIS_WAIT_TIMEOUT": "0.5",
        "RELAY_REDIS_RECONNECT_TIMEOUT": "60",
        "RELAY_GATEWAY_URL": sim.url,
        "RELAY_GATEWAY_TOKEN": sim.token,
        "RELAY_GATEWAY_TIMEOUT": "2",
        "RELAY_MATCH_WINDOW": "300",
        **CHAOS_TIMINGS,
    }


def make_simulator(seed: int) -> Simulator:
    devices = [
        SimDevice(id=d, title=f"failover {d}", delaybetweenrequest=0.2, delaybetweeneachsms=0.002)
        for d in DEVICES
    ]
    rule = OutcomeRule(fail_rate=0.1, no_report_rate=0.05, seed=seed, report_delay=0.05)
    return Simulator(devices, outcome=rule, seed=seed).start()


def expected_state(code: int) -> State:
    return State.DELIVERED if code == 7 else State.SENT if code == 6 else State.FAILED


@dataclass
class Producer:
    """Sends through the library like a client: an error means "send it again, same key"."""

    relay: Relay
    rng: random.Random
    report: Report
    seed: int
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)

    def send(self, i: int) -> None:
        body = f"failover {self.seed} #{i}"
        sendto = f"+4915{self.rng.randrange(10**8, 10**9)}"
        urgent = self.rng.random() < 0.1
        timetosend = None
        if self.rng.random() < 0.1:
            timetosend = time.time() + self.rng.uniform(0.5, 2.0)
        device = self.rng.choice(DEVICES)
        started = time.monotonic()
        while True:
            try:
                msg_id = self.relay.send(
                    sendto=sendto,
                    body=body,
                    device_id=device,
                    urgent=urgent,
                    timetosend=timetosend,
                    key=f"fo{self.seed}-{i}",
                )
                break
            except (redis.RedisError, RelayError) as exc:
                self.report.errors[type(exc).__name__] += 1
                self.report.send_retries += 1
                if time.monotonic() - started > SEND_GIVE_UP_S:
                    self.report.gave_up += 1
                    return
                time.sleep(0.05)
        self.report.longest_send_s = max(self.report.longest_send_s, time.monotonic() - started)
        self.acked[msg_id] = (sendto, body)


def run_failover(
    workdir: Path, *, size: int, min_replicas: int, isolate_s: float = 1.0, seed: int = 7
) -> Report:
    """The whole scenario in ``workdir``; returns its :class:`Report`."""
    started = time.monotonic()
    report = Report(size=size, min_replicas=min_replicas, isolate_s=isolate_s)
    with replica_set(workdir / "redis", replicas=2, sentinels=3) as rs:
        sim = make_simulator(seed)
        env = settings_env(rs.url, sim, f"fo{seed}", min_replicas)
        sup = Supervisor(relay_env(env), workdir)
        relay = Relay(load_settings(**{k[6:].lower(): v for k, v in env.items()}))
        producer = Producer(relay, random.Random(seed), report, seed)
        try:
            sup.revive(PROCESSES)
            _wait_processes(relay, sum(PROCESSES.values()))
            _produce(producer, rs, size, isolate_s, report)
            _wait_final(relay, producer.acked, time.monotonic() + 120 + size / 50)
            _check(relay, sim, producer.acked, report)
            report.processes_exited = sup.started - len(sup.alive())
            logs = "".join(proc.log.read_text(errors="replace") for proc in sup.procs)
            report.batches_held_back = logs.count('"dispatch.not_replicated"')
            report.batches_recovered = logs.count('"recovery.inflight_stale"')
            if report.lost or report.duplicated or report.processes_exited:
                print(sup.tail(15))
        finally:
            sup.stop_all()
            relay.close()
            sim.stop()
    report.acknowledged = len(producer.acked)
    report.seconds = time.monotonic() - started
    return report


def _produce(
    producer: Producer, rs: ReplicaSet, size: int, isolate_s: float, report: Report
) -> None:
    """Send ``size`` messages; midway cut the primary off, then kill it after ``isolate_s``."""
    killed = threading.Event()
    old_port = rs.primary.port

    def kill() -> None:
        rs.kill_primary()
        report.kills += 1
        began = time.monotonic()
        try:
            rs.wait_promoted(old_port)
            report.promoted_after_s = time.monotonic() - began
        finally:
            killed.set()

    began, cut = time.monotonic(), 0.0
    for i in range(size):
        if not cut and (i == size // 2 or time.monotonic() - began > CUT_BY_S):
            rs.isolate_primary()
            threading.Timer(isolate_s, kill).start()
            cut = time.monotonic()
        producer.send(i)
        if cut and report.kills == 0:
            report.sent_while_cut_off += 1
    killed.wait(isolate_s + 90)


def _wait_processes(relay: Relay, count: int, timeout: float = 60) -> None:
    """Until ``count`` relay processes beat (they run before the failover, as in production)."""
    deadline = time.monotonic() + timeout
    while relay.ctx.conn.hlen(relay.ctx.keys.processes) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} relay processes started in {timeout} s")
        time.sleep(0.1)


def _wait_final(relay: Relay, acked: dict[str, tuple[str, str]], deadline: float) -> None:
    left = list(acked)
    while left and time.monotonic() < deadline:
        still = []
        for msg_id in left:
            try:
                msg = relay.status(msg_id)
            except NotFoundError:
                continue  # gone: counted lost by the check, nothing to wait for
            except (redis.RedisError, RelayError):
                still.append(msg_id)
                continue
            if not (msg.final or msg.state in FINAL_STATES):
                still.append(msg_id)
        left = still
        if left:
            time.sleep(0.5)


def _check(relay: Relay, sim: Simulator, acked: dict[str, tuple[str, str]], report: Report) -> None:
    """Relay's records against the simulator's ledger."""
    ledger = sim.ledger()
    stored = Counter((e.sendto, e.body) for e in ledger)
    by_sms = {e.sms_id: e for e in ledger}
    report.duplicated = sum(n - 1 for n in stored.values() if n > 1)
    owners: Counter[int] = Counter()
    for msg_id, key in acked.items():
        try:
            msg = relay.status(msg_id)
        except NotFoundError:
            report.lost += 1  # acknowledged, then gone with the primary
            continue
        if not (msg.final or msg.state in FINAL_STATES):
            report.lost += 1
            report.not_final += 1
            _describe(relay, msg_id)
            continue
        if msg.sms_id is not None:
            owners[msg.sms_id] += 1
        entry = by_sms.get(msg.sms_id) if msg.sms_id is not None else None
        if entry is None or (entry.sendto, entry.body) != key:
            report.mismatched += 1
            continue
        report.mismatched += msg.state != expected_state(sim.status(entry.sms_id))
    report.mismatched += sum(n - 1 for n in owners.values() if n > 1)


def _describe(relay: Relay, msg_id: str) -> None:
    """Print where a message that is not final stands, for whoever reads a failure."""
    conn, k = relay.ctx.conn, relay.ctx.keys
    record = {text(key): text(v) for key, v in conn.hgetall(k.msg(msg_id)).items()}
    pair = DeviceSim(int(record.get("device_id", 0)), int(record.get("sim", 0)))
    lanes = (pair.urgent, pair.bulk)
    where = {
        "lanes": [lane.kind for lane in lanes if conn.lpos(k.lane(lane), msg_id) is not None],
        "tickets": [conn.get(k.ticket(lane)) for lane in lanes],
        "inflight": conn.zrange(k.inflight, 0, -1, withscores=True),
        "verify": conn.zrange(k.verify, 0, -1, withscores=True),
        "pending": conn.zscore(k.pending(pair.device), msg_id),
        "timers": conn.zrange(k.timers, 0, -1, withscores=True),
        "now_ms": int(time.time() * 1000),
    }
    print("not final:", msg_id, record, where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--min-replicas", type=int, default=0)
    parser.add_argument(
        "--isolate", type=float, default=1.0, help="seconds cut off before the kill"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-failover-") as tmp:
        report = run_failover(
            Path(tmp),
            size=args.size,
            min_replicas=args.min_replicas,
            isolate_s=args.isolate,
            seed=args.seed,
        )
    print(report.line())
    print("errors retried:", dict(report.errors))


if __name__ == "__main__":
    main()
