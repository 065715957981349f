"""``relay bench --soak MINUTES``: the urgent-latency scenario again and again, under added
CPU load, until the minutes are up or an urgent message does not arrive.

Each run is the latency scenario of :mod:`relay.bench.latency` from scratch — two setups
(a bulk backlog, and empty lanes), each with its own simulator, key prefix and ``relay
worker`` processes, the urgent samples alternating between them — while
:class:`CpuLoad` keeps every core busy with spinning processes. A run waits for every
urgent message up to ``RELAY_LANE_STALL_AFTER`` + :data:`HEAL_MARGIN_S` (time for the sweep
to re-arm a stalled lane), and counts the ``sweep.lane_stalled`` warnings in its workers'
logs.

When an urgent message does not arrive, the soak stops there: it asks every worker of that
run for its threads' stacks (SIGUSR1: :mod:`faulthandler`, into the worker's log), writes
the state of both prefixes (:func:`relay.bench.statedump.dump_state`) to a JSON file, and
leaves the run's keys in Redis.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from relay.bench.config import BenchConfig
from relay.bench.env import stop_process, wait_until
from relay.bench.latency import Setup
from relay.bench.ledger import percentile
from relay.bench.statedump import dump_state
from relay.closing import Closing
from relay.run.worker import STACKS_SIGNAL

HEAL_MARGIN_S = 30.0
"""Beyond ``RELAY_LANE_STALL_AFTER``: a sweep (every 3 s) re-arms the lane, a worker runs it."""
STACKS_WAIT_S = 2.0
"""Time the workers get to write their stacks before they are stopped."""
STALL_EVENT = "sweep.lane_stalled"


class CpuLoad(Closing):
    """``count`` processes spinning on a core each, until closed."""

    def __init__(self, count: int) -> None:
        spin = [sys.executable, "-c", "while True: pass"]
        self.procs = [subprocess.Popen(spin) for _ in range(count)]

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, wait=5.0)


@dataclass
class SoakRun:
    """One run of the scenario: urgent messages sent and arrived, latency, stalls healed."""

    number: int
    sent: int = 0
    arrived: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    stalls: int = 0
    seconds: float = 0.0
    dump: str | None = None
    kept_prefixes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.sent - self.arrived

    def line(self) -> str:
        text = (
            f"run {self.number}: {self.arrived}/{self.sent} urgent arrived, "
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms, "
            f"stalls re-armed {self.stalls}, {self.seconds:.0f} s"
        )
        return text if not self.missing else f"{text}; {self.missing} MISSING"


@dataclass
class SoakResult:
    """Every run, and the load they ran under."""

    minutes: float
    load_processes: int
    runs: list[SoakRun] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.runs)

    @property
    def missing(self) -> int:
        return sum(r.missing for r in self.runs)

    @property
    def stalls(self) -> int:
        return sum(r.stalls for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"sent": self.sent, "missing": self.missing, "stalls": self.stalls}


def soak(
    cfg: BenchConfig,
    minutes: float,
    *,
    load: int | None = None,
    on_run: Callable[[SoakRun], None] | None = None,
) -> SoakResult:
    """Runs of the latency scenario under ``load`` spinning processes (default: one per
    core) for ``minutes`` (at least one run), stopping at the first run that lost one."""
    if load is None:
        load = os.cpu_count() or 1
    result = SoakResult(minutes, load)
    deadline = time.monotonic() + minutes * 60
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    with CpuLoad(load):
        while True:
            run = one_run(cfg, len(result.runs) + 1)
            result.runs.append(run)
            if on_run is not None:
                on_run(run)
            if run.missing or time.monotonic() >= deadline:
                return result


def one_run(cfg: BenchConfig, number: int) -> SoakRun:
    """The latency scenario once (see the module docstring)."""
    run = SoakRun(number)
    start = time.monotonic()
    prefix = f"soak{number}"
    with (
        Setup(cfg, prefix, cfg.latency_backlog) as loaded,
        Setup(cfg, f"{prefix}-empty", 0) as empty,
    ):
        setups = (loaded, empty)
        for setup in setups:
            setup.ready()
        time.sleep(cfg.latency_settle)
        rng = random.Random(number)
        for i in range(2 * cfg.latency_samples):
            setups[i % 2].send(i)
            time.sleep(cfg.latency_gap * rng.uniform(0.5, 1.5))
        wait = loaded.settings.lane_stall_after + HEAL_MARGIN_S
        found = _wait_arrivals(setups, wait)
        latencies = [
            (found[s][cid] - at) * 1000
            for s in setups
            for cid, at in s.sent.items()
            if cid in found[s]
        ]
        run.sent = sum(len(s.sent) for s in setups)
        run.arrived = len(latencies)
        if latencies:
            run.p50_ms = percentile(latencies, 0.50)
            run.p99_ms = percentile(latencies, 0.99)
            run.max_ms = max(latencies)
        run.stalls = sum(_stalls_logged(s) for s in setups)
        if run.missing:
            run.dump = str(_fail(cfg, number, setups, found))
            run.kept_prefixes = [s.settings.key_prefix for s in setups]
    run.seconds = time.monotonic() - start
    return run


def _wait_arrivals(setups: tuple[Setup, ...], wait: float) -> dict[Setup, dict[int, float]]:
    found: dict[Setup, dict[int, float]] = {s: {} for s in setups}

    def all_arrived() -> bool:
        for s in setups:
            if len(found[s]) < len(s.sent):
                found[s] = s.arrivals()
        return all(len(found[s]) == len(s.sent) for s in setups)

    wait_until(all_arrived, wait, poll=0.5)
    return found


def _stalls_logged(setup: Setup) -> int:
    if setup.workers is None:
        return 0
    return sum(
        path.read_text(errors="replace").count(STALL_EVENT)
        for path in setup.workers.logs
        if path.exists()
    )


def _fail(
    cfg: BenchConfig, number: int, setups: tuple[Setup, ...], found: dict[Setup, dict[int, float]]
) -> Path:
    """Stacks from the workers, the state of both prefixes in a file (its path); keys kept."""
    workers = [w for s in setups if s.workers is not None for w in s.workers.procs]
    for proc in workers:
        if proc.poll() is None:
            os.kill(proc.pid, STACKS_SIGNAL)
    time.sleep(STACKS_WAIT_S)
    state = {}
    for s in setups:
        s.keep_keys = True
        missing = [s.ids[cid] for cid in s.sent if cid not in found[s]]
        state[s.settings.key_prefix] = {
            **dump_state(s.conn, s.settings.key_prefix, missing),
            "worker_logs": [str(p) for p in s.workers.logs] if s.workers else [],
        }
    path = cfg.log_dir / f"soak-run{number}-state-{int(time.time())}.json"
    path.write_text(json.dumps(state, indent=2, default=str))
    return path
