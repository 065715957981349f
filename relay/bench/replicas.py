"""What ``RELAY_REDIS_MIN_REPLICAS=1`` costs: sends and batches with WAIT beside the same
without, on a primary and a replica of the measurement's own.

Two ``redis-server`` processes (this machine's; no persistence, in a temporary directory)
are started for it and stopped after it, so the bench's own Redis needs no replica. Both
settings run on the same pair in the same run, alternating in rounds, so the machine's
load falls on both alike:

- one ``send`` at a time: latency of each (p50, p99) and sends per second;
- ``send_many`` in chunks of 1,000: messages per second;
- per batch: messages per second through one ``relay worker --burst`` process (each batch's
  ``queued → submitting`` waits for the replica before its ``addalotofsms``), phones with
  zero delays, default batch size; the median of two runs of each, alternating.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from relay.bench.config import BenchConfig
from relay.bench.env import BenchError, Scope, SimProcess, messages, phones, start_workers
from relay.bench.ledger import flow, percentile
from relay.bench.report import Measurement, Row, fmt
from relay.closing import Closing
from relay.core import Relay

ROUNDS = 3
WORKER_ROUNDS = 2
TIMEOUT_S = 600.0
WARMUP = 50


class Pair(Closing):
    """A primary and one replica (``redis-server`` processes on free ports)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("the replicas measure starts redis-server, which is not installed")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="relay-bench-replicas-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.primary = self._start("primary")
        self.replica = self._start("replica", "--replicaof", "127.0.0.1", str(self.primary))
        self._wait_synced()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.primary}/0"

    def _start(self, name: str, *args: str) -> int:
        port = _free_port()
        workdir = self.dir / name
        workdir.mkdir()
        cmd = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
        cmd += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", *args]
        self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        _wait(lambda: redis.Redis(port=port).ping(), f"redis-server {name} on port {port}")
        return port

    def _wait_synced(self) -> None:
        conn = redis.Redis(port=self.primary)

        def synced() -> bool:
            info = conn.info("replication")
            slave: dict[str, Any] = info.get("slave0") or {}
            return slave.get("state") == "online"

        _wait(synced, "the replica to sync")
        conn.close()

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise BenchError(f"timed out waiting for {what}")


def _sends(relay: Relay, items: list[dict[str, Any]]) -> list[float]:
    """Seconds each ``send`` of ``items`` took, one at a time."""
    took = []
    for item in items:
        start = time.perf_counter()
        relay.send(item["sendto"], item["body"], item["device_id"])
        took.append(time.perf_counter() - start)
    return took


def _send_many_rate(relay: Relay, items: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    relay.send_many(items)
    return len(items) / (time.perf_counter() - start)


def _worker_rate(cfg: BenchConfig, url: str, replicas: int, count: int) -> tuple[float, int]:
    """(messages per second, requests) of ``count`` messages through one burst worker."""
    devices = phones(4, poll=0.5, each=0.0)
    with SimProcess(devices) as sim:
        scope = Scope(url, f"replicas{replicas}")
        settings = scope.settings(
            sim,
            redis_min_replicas=replicas,
            device_overrides={str(d.id): 0.0 for d in devices},
        )
        with Relay(settings) as relay:
            relay.send_many(messages(count, [d.id for d in devices], seed=40 + replicas))
        workers = start_workers(settings, 1, cfg.log_dir, burst=True)
        if not workers.wait(TIMEOUT_S):
            workers.stop()
            raise BenchError("the relay worker did not finish in time")
        if workers.failed():
            raise BenchError("the relay worker failed: " + workers.failed()[0])
        got = flow(sim.ledger())
        if got.stored != count or got.duplicates:
            raise BenchError(f"stored {got.stored} of {count}, {got.duplicates} twice")
        return got.rate, got.requests


def measure(cfg: BenchConfig) -> Measurement:
    """Both settings on one pair, alternating: sends, send_many, then a worker's batches."""
    m = Measurement("replicas")
    devices = list(range(7101, 7111))
    single: dict[int, list[float]] = {0: [], 1: []}
    many: dict[int, list[float]] = {0: [], 1: []}
    with Pair() as pair:
        relays = {
            n: Relay(Scope(pair.url, f"replicas-sends{n}").settings(redis_min_replicas=n))
            for n in (0, 1)
        }
        try:
            for n, relay in relays.items():
                _sends(relay, messages(WARMUP, devices, seed=30 + n))
            per_round = max(1, cfg.replicas_single // ROUNDS)
            per_many = max(1, cfg.replicas_many // ROUNDS)
            for r in range(ROUNDS):
                for n, relay in relays.items():
                    seed = 100 * r + n
                    single[n] += _sends(relay, messages(per_round, devices, seed=seed))
                    items = messages(per_many, devices, body_len=cfg.body_len, seed=seed + 50)
                    many[n].append(_send_many_rate(relay, items))
        finally:
            for relay in relays.values():
                relay.close()
        worker: dict[int, list[tuple[float, int]]] = {0: [], 1: []}
        for _ in range(WORKER_ROUNDS):
            for n in (0, 1):
                worker[n].append(_worker_rate(cfg, pair.url, n, cfg.replicas_batches))
    values: dict[str, Any] = {}
    for n in (0, 1):
        took = single[n]
        values[f"min_replicas_{n}"] = {
            "send_p50_ms": percentile(took, 0.5) * 1000,
            "send_p99_ms": percentile(took, 0.99) * 1000,
            "sends_per_s": len(took) / sum(took),
            "send_many_per_s": sum(many[n]) / len(many[n]),
            "worker_msgs_per_s": statistics.median(rate for rate, _ in worker[n]),
            "worker_runs_msgs_per_s": [rate for rate, _ in worker[n]],
            "worker_requests": worker[n][0][1],
        }
    a, b = values["min_replicas_0"], values["min_replicas_1"]
    values["sends"] = len(single[0])
    values["send_many_messages"] = per_many * ROUNDS
    values["worker_messages"] = cfg.replicas_batches
    values["rounds"] = ROUNDS
    values["worker_rounds"] = WORKER_ROUNDS
    m.values = values
    m.rows = [
        Row(
            "send p50 / p99 (ms), MIN_REPLICAS=1",
            f"{fmt(b['send_p50_ms'])} / {fmt(b['send_p99_ms'])}",
            f"0: {fmt(a['send_p50_ms'])} / {fmt(a['send_p99_ms'])}",
        ),
        Row("sends/s, one at a time", fmt(b["sends_per_s"]), f"0: {fmt(a['sends_per_s'])}"),
        Row("send_many (msgs/s)", fmt(b["send_many_per_s"]), f"0: {fmt(a['send_many_per_s'])}"),
        Row(
            "one worker (msgs/s, median)",
            fmt(b["worker_msgs_per_s"]),
            f"0: {fmt(a['worker_msgs_per_s'])} ({b['worker_requests']} batches)",
        ),
    ]
    m.notes.append(
        "a primary and a replica on this machine (loopback): a replica across a network adds "
        "its round trip to every send and every batch"
    )
    return m
