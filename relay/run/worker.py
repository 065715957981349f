"""``relay worker``: an RQ worker for dispatch tickets, with the duties thread beside it.

The worker is an RQ :class:`~rq.SimpleWorker` (jobs run in the worker process: no fork per
job, the gateway's HTTP connection pool stays warm) with the JSON serializer, listening to
``<prefix>-urgent`` before ``<prefix>-bulk`` (and ``<prefix>-webhooks`` last), so ``rq
info`` and rq-dashboard show relay's queues and workers like any RQ app's. Each worker
process also runs :mod:`relay.run.duties` on a thread of its own.

SIGTERM/SIGINT: RQ's warm shutdown — the running ticket hands its lane over after its
current batch, then the worker and the duties thread stop. Nothing stays ``submitting``.
A stop signal during start-up (waiting for the first device sync) stops the worker before
its first job. SIGUSR1 writes every thread's stack to stderr (:mod:`faulthandler`): where
a stuck worker stands. ``--processes N`` runs N such processes under :mod:`relay.run.supervisor`;
``--burst`` runs until relay is idle (:mod:`relay.run.burst`).
"""

from __future__ import annotations

import faulthandler
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.serializers import JSONSerializer

from relay import context as context_module
from relay.context import Context
from relay.devices import await_first_sync
from relay.dispatch import ticket
from relay.errors import RelayError
from relay.log import configure, get_logger
from relay.processes import forget, process_name
from relay.run.burst import run_until_idle
from relay.run.duties import DutiesThread
from relay.run.supervisor import run_workers
from relay.settings import Settings

log = get_logger(__name__)

PUBSUB_WAIT_S = 1.0
"""Longest wait of one pass of RQ's command-listening thread (RQ's own is 60 s)."""
LOOP_RESTART_PAUSE_S = 1.0
"""Pause before RQ's work loop starts again after it quit on an error."""
LOOP_QUICK_S = 10.0
LOOP_QUICK_QUITS = 5
DEQUEUE_MARGIN_S = 10
"""RQ's dequeue (``BLPOP``) waits this much less than ``RELAY_REDIS_SOCKET_TIMEOUT``."""
STACKS_SIGNAL = signal.SIGUSR1
"""On this signal a worker process writes every thread's stack to stderr (faulthandler)."""


def rq_worker_ttl(settings: Settings) -> int:
    """RQ's ``worker_ttl`` that keeps its dequeue inside the socket timeout.

    RQ blocks in ``BLPOP`` for ``worker_ttl - 15`` s and raises the connection's socket
    timeout to ``worker_ttl - 5`` s when it is lower (for the whole pool, so for relay's own
    calls in the worker too). This ``worker_ttl`` makes the ``BLPOP`` wait
    :data:`DEQUEUE_MARGIN_S` less than ``RELAY_REDIS_SOCKET_TIMEOUT``, which RQ then keeps.
    """
    return math.floor(settings.redis_socket_timeout) - DEQUEUE_MARGIN_S + 15


class WorkerLoopFailing(RelayError):
    """RQ's work loop keeps quitting right after it starts (not a passing Redis outage); the
    worker process ends so that its supervisor sees it. Its log says what RQ met."""


class RelayWorker(SimpleWorker):
    """relay's RQ worker: no fork per job, tolerant of servers without ``CLIENT INFO``.

    With ``install_signals=False`` (in-process runs) RQ's signal handlers are not installed.
    A warm shutdown tells running tickets to hand over after their current batch.
    """

    install_signals = True
    stop_event: threading.Event | None = None
    stop_asked = False

    def _set_ip_address(self, connection: redis.Redis) -> None:
        # fakeredis's TCP server answers CLIENT INFO in a form RQ cannot parse.
        try:
            super()._set_ip_address(connection)
        except (redis.RedisError, ValueError, KeyError, IndexError):
            self.ip_address = "unknown"

    def _install_signal_handlers(self) -> None:
        if self.install_signals:
            super()._install_signal_handlers()  # type: ignore[no-untyped-call]  # rq is untyped

    def check_for_suspension(self, burst: bool) -> None:
        # Checked by RQ before each job: an in-process run stops here once told to.
        if self.stop_event is not None and self.stop_event.is_set():
            raise StopRequested()
        super().check_for_suspension(burst)

    def handle_warm_shutdown_request(self) -> None:
        self.stop_asked = True
        ticket.request_stop()
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]  # rq is untyped

    def stop_wanted(self) -> bool:
        """Whether a stop was asked (a signal, or ``stop_event``), as opposed to RQ's loop
        having quit on an error of its own (a Redis reply lost in a failover)."""
        return self.stop_asked or (self.stop_event is not None and self.stop_event.is_set())

    def work_until_stopped(self, logging_level: str) -> None:
        """RQ's :meth:`work`, started again whenever it quits without a stop being asked.

        RQ ends its loop on any error in its own bookkeeping — such as a Redis reply lost
        when the primary dies — and relay's worker process must outlive a failover, not
        need a restart. Its registration is renewed under the same name (the heartbeats
        the sweep reads go under it). A loop that keeps quitting at once
        (:data:`LOOP_QUICK_QUITS` times in a row, each within :data:`LOOP_QUICK_S`) is not
        an outage: :class:`WorkerLoopFailing` ends the process, for its supervisor to see.
        """
        quick = 0
        while True:
            started = time.monotonic()
            try:
                self.work(logging_level=logging_level)
            except redis.RedisError as exc:  # bootstrap or teardown met the outage
                log.error("worker.loop_failed", worker=self.name, error=str(exc))
            if self.stop_wanted():
                return
            quick = quick + 1 if time.monotonic() - started < LOOP_QUICK_S else 0
            if quick >= LOOP_QUICK_QUITS:
                raise WorkerLoopFailing(
                    f"RQ's work loop quit {quick} times in a row right after starting; "
                    "its log says why"
                )
            log.warning("worker.loop_restarted", worker=self.name)
            time.sleep(LOOP_RESTART_PAUSE_S)
            try:
                self.register_death()  # type: ignore[no-untyped-call]  # rq is untyped
            except redis.RedisError as exc:
                log.error("worker.loop_failed", worker=self.name, error=str(exc))

    def subscribe(self) -> None:
        # RQ's subscribe, with a short wait per pass. Its thread, once the UNSUBSCRIBE reply
        # is read, waits a whole pass for a new subscription, and redis-py 8's stop() joins it:
        # with RQ's 60 s a worker's teardown (burst end, SIGTERM) could hang for a minute.
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ: None
            sleep_time=PUBSUB_WAIT_S,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )


def make_worker(
    ctx: Context, name: str | None = None, *, install_signals: bool = True
) -> RelayWorker:
    """A :class:`RelayWorker` on ``ctx``'s connection and queues (urgent, bulk, webhooks)."""
    keys = ctx.keys
    worker = RelayWorker(
        [keys.urgent_queue, keys.bulk_queue, keys.webhook_queue],
        name=name or process_name("worker"),
        connection=ctx.conn,
        serializer=JSONSerializer,
        worker_ttl=rq_worker_ttl(ctx.settings),
    )
    worker.install_signals = install_signals
    return worker


def run_worker(
    settings: Settings, *, burst: bool = False, processes: int = 1, metrics_port: int | None = None
) -> None:
    """Run ``relay worker`` until SIGTERM/SIGINT, or with ``burst`` until relay is idle.

    ``processes`` > 1 starts that many worker processes and supervises them; this process
    then serves the metrics.
    """
    configure(settings.log_level, settings.log_json)
    stop = threading.Event()
    ctx = Context.from_settings(settings)
    metrics = _serve_metrics(ctx, metrics_port)
    try:
        if processes > 1:
            _on_stop_signals(stop.set)
            run_workers(settings, processes, burst=burst, stop=stop)
        elif burst:
            _on_stop_signals(stop.set, ticket.request_stop)
            run_until_idle(context_module.use(ctx), math.inf, stop=stop)
        else:
            _work_forever(context_module.use(ctx), settings)
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
    name = process_name("worker")
    faulthandler.register(STACKS_SIGNAL, all_threads=True)
    ticket.clear_stop()
    # Until RQ installs its own handlers (in work()), a stop signal is only noted; the
    # worker then stops before its first job instead of dying half set up.
    early_stop = threading.Event()
    _on_stop_signals(early_stop.set, ticket.request_stop)
    await_first_sync(ctx, owner=name, wait=settings.gateway_timeout, stop=early_stop)
    _ = ctx.gateway  # built now, not between a claim and its request (an SSL context: ~0.2 s)
    worker = make_worker(ctx, name)
    worker.stop_event = early_stop
    duties = DutiesThread(settings, name)
    duties.start()
    try:
        worker.work_until_stopped(settings.log_level)
    finally:
        duties.stop()
        forget(ctx, name)
        log.info("worker.stopped", worker=name)


def _serve_metrics(ctx: Context, port: int | None) -> Any:
    if port is None:
        return None
    from relay.results.metrics import serve

    return serve(ctx, port)
