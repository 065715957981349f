"""Running a worker in burst mode, in this process, until relay is idle.

``relay worker --burst``, the tests and the library's own ``run_until_idle`` use it: burst
RQ workers and duty ticks alternate in this process until nothing waits in relay short of
``submitted``.
"""

from __future__ import annotations

import threading

from relay import context as context_module
from relay.context import Context
from relay.devices import await_first_sync
from relay.dispatch import ticket
from relay.dispatch.tickets import queue as ticket_queue
from relay.lanes import KINDS, device_sims
from relay.processes import forget
from relay.run.duties import Duties


def run_until_idle(ctx: Context, timeout: float, *, stop: threading.Event | None = None) -> bool:
    """Run burst workers and duty ticks in this process until relay is idle.

    Idle: lanes, schedules, timers, in-flight and verify batches and the ticket queues all
    empty (no message waits short of ``submitted``). Returns True when idle, False when
    ``timeout`` seconds (of ``ctx.clock``) passed or ``stop`` was set first.
    """
    from relay.run.worker import make_worker

    previous = context_module.swap(ctx)
    ticket.clear_stop()
    worker = make_worker(ctx, install_signals=False)
    worker.stop_event = stop
    duties = Duties(ctx, worker.name)
    deadline = ctx.clock.now() + timeout
    wait = min(timeout, ctx.settings.gateway_timeout)
    await_first_sync(ctx, owner=worker.name, wait=wait, stop=stop)
    try:
        while True:
            if stop is not None and stop.is_set():
                return False
            if ctx.clock.now() >= deadline:
                return is_idle(ctx)
            pause = duties.tick()
            if queued_tickets(ctx) > 0:
                worker.work(burst=True, logging_level="WARNING")
                continue
            if is_idle(ctx):
                return True
            ctx.clock.sleep(min(pause, max(0.0, deadline - ctx.clock.now())))
    finally:
        forget(ctx, worker.name)
        context_module.swap(previous)


def queued_tickets(ctx: Context) -> int:
    """Jobs waiting in the urgent and bulk ticket queues."""
    return sum(ticket_queue(ctx.conn, ctx.keys, kind).count for kind in KINDS)


def is_idle(ctx: Context) -> bool:
    """Whether nothing waits in relay short of ``submitted`` (see :func:`run_until_idle`)."""
    k = ctx.keys
    with ctx.conn.pipeline(transaction=False) as pipe:
        for pair in device_sims(ctx.conn, k):
            for kind in KINDS:
                pipe.llen(k.lane(pair.lane(kind)))
        for zset in (k.sched_due, k.timers, k.inflight, k.verify):
            pipe.zcard(zset)
        counts = pipe.execute()
    return not any(counts) and queued_tickets(ctx) == 0
