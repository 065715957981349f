"""``relay worker``: an RQ worker for dispatch tickets, with relay's scheduler thread.

The worker is an RQ :class:`~rq.SimpleWorker` (jobs run in the worker process: no fork per
job, the gateway's HTTP connection pool stays warm) with the JSON serializer, listening to
``<prefix>-urgent`` before ``<prefix>-bulk`` (and ``<prefix>-webhooks`` last), so ``rq
info`` and rq-dashboard show relay's queues and workers like any RQ app's.

Each worker process also runs a **scheduler thread** (daemon, its own Redis connection and
gateway client) that every :data:`TICK_S` (sooner when a timer is due sooner):

- pops due ticket timers (``lua/pop_due.lua``) and enqueues their jobs;
- promotes due scheduled messages (``relay.produce.schedule.promote_due``) and pumps webhooks
  (``relay.results.webhook``), when those modules exist;
- refreshes the devices when stale (``relay.devices.refresh_if_stale``) and writes this
  process's heartbeat to ``Keys.processes``;
- every :data:`SWEEP_EVERY_S` runs the sweep (``relay.run.sweep``).

SIGTERM/SIGINT: RQ's warm shutdown — the running ticket hands its lane over after its
current batch, then the worker and the scheduler thread stop. Nothing stays ``submitting``.
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import redis
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from relay import context as context_module
from relay import scripts
from relay.connection import connect
from relay.context import Context
from relay.devices import await_first_sync, refresh_if_stale
from relay.dispatch import ticket as dispatch
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.dispatch.tickets import queue as ticket_queue
from relay.keys import BULK, URGENT, Keys
from relay.log import get_logger
from relay.run import sweep
from relay.settings import Settings

log = get_logger(__name__)

TICK_S = 0.05
"""Longest wait of the scheduler thread between two ticks."""
SWEEP_EVERY_S = 3.0
HEARTBEAT_EVERY_S = 1.0
DEVICES_EVERY_S = 1.0
WEBHOOK_EVERY_S = 0.2
TIMERS_PER_TICK = 200
FAILED_TICK_WAIT_S = 1.0
PUBSUB_WAIT_S = 1.0
"""Longest read of the worker's RQ command channel (bounds how long its teardown waits)."""


class RelayWorker(SimpleWorker):
    """relay's RQ worker: no fork per job, tolerant of servers without ``CLIENT INFO``.

    With ``install_signals=False`` (in-process runs) RQ's signal handlers are not installed.
    A warm shutdown tells running tickets to hand over after their current batch.
    """

    install_signals = True
    stop_event: threading.Event | None = None

    def _set_ip_address(self, connection: redis.Redis) -> None:
        # fakeredis's TCP server answers CLIENT INFO in a form RQ cannot parse.
        try:
            super()._set_ip_address(connection)
        except (redis.RedisError, ValueError, KeyError, IndexError):
            self.ip_address = "unknown"

    def _install_signal_handlers(self) -> None:
        if self.install_signals:
            super()._install_signal_handlers()  # type: ignore[no-untyped-call]

    def check_for_suspension(self, burst: bool) -> None:
        # Checked by RQ before each job: an in-process run stops here once told to.
        if self.stop_event is not None and self.stop_event.is_set():
            raise StopRequested()
        super().check_for_suspension(burst)

    def handle_warm_shutdown_request(self) -> None:
        dispatch.request_stop()
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]

    def subscribe(self) -> None:
        # RQ's own subscribe reads its command channel in a thread that waits up to 60 s per
        # read; redis-py 8's PubSubWorkerThread.stop() joins that thread, so a worker's
        # teardown (every burst run) could hang for up to a minute when the unsubscribe
        # reply arrived before the thread's stop flag was cleared. Reads of 1 s bound it.
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_WAIT_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )


def worker_name() -> str:
    """A name unique to this process, readable in ``rq info``."""
    return f"relay-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def make_worker(
    ctx: Context, name: str | None = None, *, install_signals: bool = True
) -> RelayWorker:
    """A :class:`RelayWorker` on ``ctx``'s connection and queues (urgent, bulk, webhooks)."""
    keys = ctx.keys
    worker = RelayWorker(
        [keys.urgent_queue, keys.bulk_queue, keys.webhook_queue],
        name=name or worker_name(),
        connection=ctx.conn,
        serializer=JSONSerializer,
    )
    worker.install_signals = install_signals
    return worker


# --- timers ------------------------------------------------------------------------------


def fire_timers(ctx: Context, limit: int = TIMERS_PER_TICK) -> tuple[int, float | None]:
    """Enqueue the tickets whose timer is due; returns (how many, seconds to the next timer)."""
    k, now_ms = ctx.keys, ctx.now_ms()
    head = cast(list[tuple[bytes, float]], ctx.conn.zrange(k.timers, 0, limit - 1, withscores=True))
    due = [member.decode() for member, score in head if score <= now_ms]
    later = [score for _, score in head if score > now_ms]
    wait = (min(later) - now_ms) / 1000 if later else None
    if not due:
        return 0, wait
    arms = [_arm_for(member) for member in due]
    keys = [k.timers, *(k.ticket(a.kind, a.dev, a.sim) for a in arms)]
    args: list[str | int] = [now_ms, len(due), *due, *(a.job_id for a in arms)]
    armed = [arms[int(i) - 1] for i in scripts.run(ctx.conn, "pop_due", keys, args)]
    enqueue_tickets(ctx.conn, k, armed)
    return len(armed), 0.0 if len(due) == limit else wait


def _arm_for(member: str) -> Arm:
    kind, dev, sim = member.split(":")
    return Arm.new(URGENT if kind == URGENT else BULK, int(dev), int(sim))


# --- the scheduler -------------------------------------------------------------------------


class Scheduler:
    """The periodic duties of a worker process; :meth:`tick` does one round of them."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._last: dict[str, float] = {}
        self._failed = False

    def _due(self, what: str, every: float) -> bool:
        now = self.ctx.clock.now()
        if now - self._last.get(what, -math.inf) < every:
            return False
        self._last[what] = now
        return True

    def tick(self, *, sweep_now: bool = False) -> float:
        """One round; returns how long to wait before the next (at most :data:`TICK_S`, or
        :data:`FAILED_TICK_WAIT_S` after a failure, so an outage does not flood the logs)."""
        self._failed = False
        wait = TICK_S
        if self._due("heartbeat", HEARTBEAT_EVERY_S):
            self._guard(
                "heartbeat", sweep.heartbeat, self.ctx, self.name, "worker", pid=os.getpid()
            )
        fired = self._guard("timers", fire_timers, self.ctx)
        if fired is not None and fired[1] is not None:
            wait = max(0.0, min(wait, fired[1]))
        self._guard("promote", _optional, "relay.produce.schedule", "promote_due", self.ctx)
        if self.ctx.settings.webhook_url and self._due("webhooks", WEBHOOK_EVERY_S):
            self._guard("webhooks", _optional, "relay.results.webhook", "pump", self.ctx)
        if self._due("devices", DEVICES_EVERY_S):
            self._guard("devices", refresh_if_stale, self.ctx, owner=self.name)
        if self._due("sweep", SWEEP_EVERY_S) or sweep_now:
            self._guard("sweep", sweep.sweep, self.ctx)
        return FAILED_TICK_WAIT_S if self._failed else wait

    def _guard(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one duty; a failure is logged and the scheduler carries on."""
        try:
            return func(*args, **kwargs)
        except Exception:
            log.exception("scheduler.failed", duty=what)
            self._failed = True
            return None

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set."""
        while not stop.is_set():
            stop.wait(self.tick())


def _optional(module: str, func: str, ctx: Context) -> Any:
    """Call ``module.func(ctx)`` if that module (another part of relay) is installed."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    target = getattr(mod, func, None)
    return target(ctx) if target is not None else None


class SchedulerThread(threading.Thread):
    """The scheduler on its own thread, connection and gateway client."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(name=f"relay-scheduler-{name}", daemon=True)
        self.settings = settings
        self.worker_name = name
        self.stop_event = threading.Event()

    def run(self) -> None:
        # no PING at start: if Redis is away, the ticks log it and retry
        ctx = Context.from_settings(self.settings, conn=connect(self.settings, check=False))
        try:
            Scheduler(ctx, self.worker_name).run(self.stop_event)
        finally:
            ctx.close()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.join(timeout)


# --- running -------------------------------------------------------------------------------


def run_worker(
    settings: Settings, *, burst: bool = False, processes: int = 1, metrics_port: int | None = None
) -> None:
    """Run ``relay worker`` until SIGTERM/SIGINT, or with ``burst`` until relay is idle.

    ``processes`` > 1 starts that many worker processes and supervises them: a crashed one
    is restarted, SIGTERM/SIGINT are forwarded; this process then serves the metrics.
    """
    from relay.log import configure

    configure(settings.log_level, settings.log_json)
    if processes > 1:
        supervise(settings, processes, burst=burst, metrics_port=metrics_port)
        return
    ctx = context_module.use(Context.from_settings(settings))
    metrics = _serve_metrics(ctx, metrics_port)
    try:
        if burst:
            stop = threading.Event()
            _on_stop_signals(stop.set, dispatch.request_stop)
            run_until_idle(ctx, math.inf, stop=stop)
        else:
            _work_forever(ctx, settings)
    finally:
        if metrics is not None:
            metrics.stop()
        ctx.close()


def _on_stop_signals(*handlers: Callable[[], object]) -> None:
    """On SIGTERM or SIGINT, call each of ``handlers``."""

    def handle(_signum: int, _frame: object) -> None:
        for handler in handlers:
            handler()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


def _work_forever(ctx: Context, settings: Settings) -> None:
    name = worker_name()
    dispatch.clear_stop()
    # Until RQ installs its own handlers (in work()), a stop signal is only noted; the
    # worker then stops before its first job instead of dying half set up.
    early_stop = threading.Event()
    _on_stop_signals(early_stop.set, dispatch.request_stop)
    await_first_sync(ctx, owner=name, wait=settings.gateway_timeout)
    _ = ctx.gateway  # built now, not between a claim and its request (an SSL context: ~0.2 s)
    worker = make_worker(ctx, name)
    worker.stop_event = early_stop
    scheduler = SchedulerThread(settings, name)
    scheduler.start()
    try:
        worker.work(logging_level=settings.log_level)
    finally:
        scheduler.stop()
        sweep.forget_process(ctx, name)
        log.info("worker.stopped", worker=name)


def _serve_metrics(ctx: Context, port: int | None) -> Any:
    if port is None:
        return None
    from relay.results.metrics import serve

    return serve(ctx, port)


def run_until_idle(ctx: Context, timeout: float, *, stop: threading.Event | None = None) -> bool:
    """Run burst workers and scheduler ticks in this process until relay is idle.

    Idle: lanes, schedules, timers, in-flight and verify batches and the ticket queues all
    empty (no message waits short of ``submitted``). Returns True when idle, False when
    ``timeout`` seconds (of ``ctx.clock``) passed or ``stop`` was set first.
    """
    previous = context_module._current
    context_module.use(ctx)
    dispatch.clear_stop()
    worker = make_worker(ctx, install_signals=False)
    worker.stop_event = stop
    scheduler = Scheduler(ctx, worker.name)
    deadline = ctx.clock.now() + timeout
    await_first_sync(ctx, owner=worker.name, wait=min(timeout, ctx.settings.gateway_timeout))
    try:
        while True:
            if stop is not None and stop.is_set():
                return False
            if ctx.clock.now() >= deadline:
                return is_idle(ctx)
            wait = scheduler.tick()
            if queued_tickets(ctx) > 0:
                worker.work(burst=True, logging_level="WARNING")
                continue
            if is_idle(ctx):
                return True
            ctx.clock.sleep(min(wait, max(0.0, deadline - ctx.clock.now())))
    finally:
        sweep.forget_process(ctx, worker.name)
        context_module._current = previous


def queued_tickets(ctx: Context) -> int:
    """Jobs waiting in the urgent and bulk ticket queues."""
    return sum(ticket_queue(ctx.conn, ctx.keys, kind).count for kind in (URGENT, BULK))


def is_idle(ctx: Context) -> bool:
    """Whether nothing waits in relay short of ``submitted`` (see :func:`run_until_idle`)."""
    k: Keys = ctx.keys
    lanes = [m.decode() if isinstance(m, bytes) else m for m in ctx.conn.smembers(k.lanes)]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for member in lanes:
            dev, _, sim = member.partition(":")
            for kind in (URGENT, BULK):
                pipe.llen(k.lane(kind, int(dev), int(sim)))
        for zset in (k.sched_due, k.timers, k.inflight, k.verify):
            pipe.zcard(zset)
        counts = pipe.execute()
    return not any(counts) and queued_tickets(ctx) == 0


# --- several processes ---------------------------------------------------------------------

STOP_TIMEOUT_S = 60.0
"""How long the supervisor waits for workers to finish their tickets after SIGTERM."""
RESTART_PAUSE_S = 1.0


def supervise(settings: Settings, processes: int, *, burst: bool, metrics_port: int | None) -> None:
    """Run ``processes`` worker processes; restart a crashed one; forward SIGTERM/SIGINT."""
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start(slot: int) -> multiprocessing.process.BaseProcess:
        proc = spawn.Process(target=_child, args=(settings, burst), name=f"relay-worker-{slot}")
        proc.start()
        log.info("worker.started", slot=slot, pid=proc.pid)
        return proc

    children = [start(slot) for slot in range(processes)]
    _on_stop_signals(stopping.set, lambda: _signal_all(children))
    ctx = Context.from_settings(settings) if metrics_port is not None else None
    metrics = _serve_metrics(ctx, metrics_port) if ctx is not None else None
    done: set[int] = set()
    try:
        while not stopping.is_set() and len(done) < processes:
            for slot, proc in enumerate(children):
                if slot in done or proc.is_alive():
                    continue
                if burst and proc.exitcode == 0:
                    done.add(slot)
                    continue
                log.warning("worker.crashed", slot=slot, pid=proc.pid, exitcode=proc.exitcode)
                time.sleep(RESTART_PAUSE_S)
                children[slot] = start(slot)
            stopping.wait(0.2)
    finally:
        _stop_all(children)
        if metrics is not None:
            metrics.stop()
        if ctx is not None:
            ctx.close()


def _child(settings: Settings, burst: bool) -> None:
    run_worker(settings, burst=burst)


def _signal_all(children: list[multiprocessing.process.BaseProcess]) -> None:
    for proc in children:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)


def _stop_all(children: list[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM every child still running, wait for them, kill the ones that do not stop."""
    _signal_all(children)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in children:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.error("worker.killed", pid=proc.pid)
            proc.kill()
            proc.join()


def main(argv: list[str] | None = None) -> None:
    """``python -m relay.run.worker [--burst] [--processes N] [--metrics-port P]``."""
    from relay.settings import load_settings

    parser = argparse.ArgumentParser(prog="relay-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit once relay is idle")
    parser.add_argument("--processes", type=int, default=1, help="worker processes to run")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port")
    args = parser.parse_args(argv)
    run_worker(
        load_settings(), burst=args.burst, processes=args.processes, metrics_port=args.metrics_port
    )


if __name__ == "__main__":
    main()
