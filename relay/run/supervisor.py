"""The supervisor: worker processes (each with its duties thread) and reconcilers, watched.

Behind ``relay run`` (workers and a reconciler) and ``relay worker --processes N``. The
children are ordinary ``relay worker`` and ``relay reconciler`` processes started with
the parent's settings in their environment (``RELAY_*``, from :func:`settings_env`), so
``--env-file`` and programmatic overrides reach them. A child that dies is restarted
(after a short backoff); one that keeps dying right after start stops the run with an
error instead of looping. SIGTERM/SIGINT to the parent stop the children gracefully
(SIGTERM, then SIGKILL after ``stop_timeout``).

With ``until_idle`` the parent watches :func:`relay.results.stats.collect` and returns once relay
is idle (every message final, nothing queued, scheduled, in flight, being verified or
awaiting a status), or gives up after ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from relay.clock import SYSTEM_CLOCK, Clock
from relay.errors import RelayError
from relay.log import get_logger
from relay.processes import read_beats
from relay.settings import ENV_PREFIX, Settings, settings_env

if TYPE_CHECKING:
    from relay.context import Context

log = get_logger(__name__)

FAST_EXIT_S = 5.0
"""A child that exits sooner than this after its start counts as failing to start."""
FAST_EXITS_MAX = 3
"""Consecutive failed starts of one child after which the run stops."""
IDLE_POLL_S = 0.2


class ChildFailed(RelayError):
    """A worker or reconciler process keeps exiting right after it starts (its log says why)."""


def child_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this one without ``RELAY_*``, plus ``settings`` and ``extra``.

    ``RELAY_METRICS_PORT`` is left out: the parent serves the metrics (they are relay-wide),
    and children sharing one port would fight over it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings_env(settings))
    env.pop(f"{ENV_PREFIX}METRICS_PORT", None)
    env.update(extra or {})
    return env


@dataclass
class Child:
    """One supervised process: its command, the running ``Popen`` and its restart history."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    fast_exits: int = 0
    restarts: int = 0
    restart_at: float | None = None
    done: bool = False
    """A burst child that finished its work (exit code 0): not restarted."""


@dataclass
class Runner:
    """Starts, watches and stops relay's worker and reconciler processes."""

    settings: Settings
    workers: int = 1
    reconcilers: int = 1
    clock: Clock = SYSTEM_CLOCK
    stop_timeout: float = 20.0
    output: IO[Any] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    burst: bool = False
    """Workers run ``--burst``: one that exits 0 is done, not restarted."""
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = [sys.executable, "-m", "relay"]
        worker = [*base, "worker", *(["--burst"] if self.burst else [])]
        self.children = [Child(f"worker-{i + 1}", worker) for i in range(self.workers)]
        self.children += [
            Child(f"reconciler-{i + 1}", [*base, "reconciler"]) for i in range(self.reconcilers)
        ]

    def start(self) -> None:
        """Start every child."""
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv,
            env=child_env(self.settings, self.extra_env),
            stdout=self.output if self.output is not None else subprocess.DEVNULL,
            stderr=self.output,
            start_new_session=True,
        )
        child.started = self.clock.now()
        child.restart_at = None
        log.info("child_started", child=child.name, pid=child.proc.pid)

    def supervise(self) -> None:
        """Restart dead children (after a backoff); :class:`ChildFailed` if one cannot start."""
        now = self.clock.now()
        for child in self.children:
            proc = child.proc
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                continue
            if child.done or proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            if self.burst and code == 0 and child.name.startswith("worker"):
                child.done = True
                log.info("child_done", child=child.name, pid=proc.pid)
                continue
            fast = now - child.started < FAST_EXIT_S
            child.fast_exits = child.fast_exits + 1 if fast else 0
            log.warning("child_exited", child=child.name, pid=proc.pid, code=code)
            if child.fast_exits >= FAST_EXITS_MAX:
                raise ChildFailed(
                    f"{child.name} exited with code {code} right after starting "
                    f"{child.fast_exits} times; see its log"
                )
            child.restart_at = now + min(30.0, 0.5 * 2**child.fast_exits)

    @property
    def finished(self) -> bool:
        """Every child is done (burst workers that finished their work)."""
        return all(child.done for child in self.children)

    def alive(self) -> list[int]:
        """Pids of the children running now."""
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]

    def wait_ready(self, ctx: Context, timeout: float) -> bool:
        """Wait until every child wrote its heartbeat (``Keys.processes``); False on timeout.

        Workers beat as their scheduler thread starts, the reconciler after its first pass.
        """
        deadline = self.clock.now() + timeout
        while self.clock.now() < deadline:
            self.supervise()
            if set(self.alive()) == {c.proc.pid for c in self.children if c.proc} <= _beating(ctx):
                return True
            self.clock.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM every child, wait up to ``stop_timeout``, SIGKILL what is left."""
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            _signal(proc, signal.SIGTERM)
        deadline = self.clock.now() + self.stop_timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - self.clock.now()))
            except subprocess.TimeoutExpired:
                log.warning("child_killed", pid=proc.pid)
                _signal(proc, signal.SIGKILL)
                proc.wait()
        for child in self.children:
            child.restart_at = None
        log.info("children_stopped", count=len(running))


def _beating(ctx: Context) -> set[int]:
    """Pids of the relay processes with a heartbeat in ``Keys.processes``."""
    return {b.pid for b in read_beats(ctx).values() if b.pid is not None}


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """While inside, SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere a no-op).

    The previous handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: Any) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(
    settings: Settings,
    *,
    workers: int = 1,
    until_idle: bool = False,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    output: IO[Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """Run workers and a reconciler until ``stop`` is set, or (``until_idle``) until relay is idle.

    Returns True when it stopped because relay was idle (or was asked to stop), False when
    ``timeout`` passed first. The children are always stopped before it returns.
    """
    from relay.context import Context
    from relay.results.stats import collect

    stop = stop or threading.Event()
    ctx = Context.from_settings(settings, clock=clock)
    runner = Runner(settings, workers=workers, clock=clock, output=output)
    deadline = clock.now() + timeout if timeout is not None else None
    runner.start()
    try:
        while not stop.is_set():
            runner.supervise()
            if until_idle and collect(ctx).idle:
                log.info("run_idle")
                return True
            if deadline is not None and clock.now() >= deadline:
                log.info("run_timeout", timeout=timeout)
                return False
            stop.wait(IDLE_POLL_S)
        return True
    finally:
        runner.stop()
        ctx.close()


def describe_open(settings: Settings) -> str:
    """What keeps relay from idle, in a few words (for the ``--until-idle`` timeout message)."""
    from relay.context import Context
    from relay.results.stats import OPEN_STATES, collect

    ctx = Context.from_settings(settings)
    try:
        stats = collect(ctx)
    finally:
        ctx.close()
    parts = [
        f"{stats.states.get(s.value, 0)} {s.value}"
        for s in OPEN_STATES
        if stats.states.get(s.value)
    ]
    parts += [f"{stats.awaiting} awaiting a status"] if stats.awaiting else []
    return ", ".join(parts) or "nothing open"


def run_workers(
    settings: Settings, processes: int, *, burst: bool, stop: threading.Event | None = None
) -> None:
    """``relay worker --processes N``: ``processes`` worker processes until ``stop`` is set
    (SIGTERM/SIGINT), or with ``burst`` until each has found relay idle and exited."""
    stop = stop or threading.Event()
    runner = Runner(settings, workers=processes, reconcilers=0, burst=burst)
    runner.start()
    try:
        while not stop.is_set() and not runner.finished:
            runner.supervise()
            stop.wait(IDLE_POLL_S)
    finally:
        runner.stop()
