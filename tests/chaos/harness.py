"""Pieces of the chaos suite: relay processes that a test kills with SIGKILL and replaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Proc:
    kind: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Supervisor:
    """Starts ``python -m relay <kind>`` processes with ``env``; kills and replaces them."""

    env: dict[str, str]
    logdir: Path
    procs: list[Proc] = field(default_factory=list)
    kills: int = 0
    started: int = 0

    def start(self, kind: str) -> Proc:
        self.started += 1
        log = self.logdir / f"{kind}-{self.started}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "relay", kind],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = Proc(kind, popen, log)
        self.procs.append(proc)
        return proc

    def alive(self, kind: str | None = None) -> list[Proc]:
        return [p for p in self.procs if p.popen.poll() is None and kind in (None, p.kind)]

    def kill(self, proc: Proc) -> None:
        """SIGKILL, then a replacement of the same kind."""
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=10)
        self.kills += 1
        self.start(proc.kind)

    def revive(self, wanted: dict[str, int]) -> int:
        """Start processes until ``wanted[kind]`` are alive (one may exit on a Redis restart)."""
        started = 0
        for kind, count in wanted.items():
            for _ in range(count - len(self.alive(kind))):
                self.start(kind)
                started += 1
        return started

    def stop_all(self) -> None:
        for proc in self.alive():
            proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=5)

    def tail(self, lines: int = 30) -> str:
        """The last lines of every process log, for a failure message."""
        out = []
        for proc in self.procs:
            text = proc.log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {proc.log.name} (rc={proc.popen.poll()})\n" + "\n".join(text))
        return "\n".join(out)


CHAOS_TIMINGS = {
    "RELAY_BATCH_MAX": "20",
    "RELAY_DEFAULT_SEND_INTERVAL": "0.002",
    "RELAY_INFLIGHT_TIMEOUT": "4",
    "RELAY_VERIFY_GRACE": "2",
    "RELAY_MAX_ATTEMPTS": "50",
    "RELAY_RECONCILE_INTERVAL": "0.3",
    "RELAY_RECONCILE_URGENT_INTERVAL": "0.2",
    "RELAY_DELIVERY_REPORT_WAIT": "1.5",
    "RELAY_STATUS_TTL": "3600",
    "RELAY_LOG_LEVEL": "INFO",
    "RELAY_LOG_JSON": "true",
}
"""Settings both chaos runs share: small batches, fast recovery and reconciling, JSON logs."""


def relay_env(base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(base)
    env["PYTHONUNBUFFERED"] = "1"
    return env
