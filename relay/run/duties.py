"""The periodic duties every worker process runs beside its RQ worker, on a thread of its own.

Every :data:`TICK_S` (sooner when a timer is due sooner) :meth:`Duties.tick`:

- writes this process's heartbeat (:func:`relay.processes.beat`);
- fires due ticket timers (:func:`relay.dispatch.tickets.fire_timers`);
- moves due scheduled messages into their lanes (:func:`relay.produce.schedule.promote_due`);
- ends ``expired`` the waiting messages whose ttl has passed, every :data:`EXPIRE_EVERY_S`
  (:func:`relay.dispatch.expiry.expire_due`);
- hands new events to the webhook jobs, when a webhook is configured
  (:func:`relay.results.webhook.pump`);
- refreshes the devices when stale (:func:`relay.devices.refresh_if_stale`);
- every :data:`SWEEP_EVERY_S` runs the sweep (:func:`relay.run.sweep.sweep`).

A duty that fails is logged and the others go on; after a failure the next tick waits
:data:`FAILED_TICK_WAIT_S`, so an outage does not flood the logs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TypeVar

from relay.connection import connect
from relay.context import Context
from relay.devices import refresh_if_stale
from relay.dispatch.expiry import expire_due
from relay.dispatch.tickets import fire_timers
from relay.log import get_logger
from relay.processes import beat
from relay.produce.schedule import promote_due
from relay.results.webhook import pump
from relay.run.sweep import sweep
from relay.settings import Settings

log = get_logger(__name__)

TICK_S = 0.05
"""Longest wait between two ticks."""
SWEEP_EVERY_S = 3.0
HEARTBEAT_EVERY_S = 1.0
DEVICES_EVERY_S = 1.0
WEBHOOK_EVERY_S = 0.2
EXPIRE_EVERY_S = 0.5
FAILED_TICK_WAIT_S = 1.0

T = TypeVar("T")


class Duties:
    """The periodic duties of worker process ``name``; :meth:`tick` does one round of them."""

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
        :data:`FAILED_TICK_WAIT_S` after a failure)."""
        ctx, self._failed = self.ctx, False
        wait = TICK_S
        if self._due("heartbeat", HEARTBEAT_EVERY_S):
            self._guard("heartbeat", lambda: beat(ctx, self.name, "worker"))
        fired = self._guard("timers", lambda: fire_timers(ctx))
        if fired is not None and fired[1] is not None:
            wait = max(0.0, min(wait, fired[1]))
        self._guard("promote", lambda: promote_due(ctx))
        if self._due("expire", EXPIRE_EVERY_S):
            self._guard("expire", lambda: expire_due(ctx))
        if ctx.settings.webhook_url and self._due("webhooks", WEBHOOK_EVERY_S):
            self._guard("webhooks", lambda: pump(ctx))
        if self._due("devices", DEVICES_EVERY_S):
            self._guard("devices", lambda: refresh_if_stale(ctx, owner=self.name))
        if self._due("sweep", SWEEP_EVERY_S) or sweep_now:
            self._guard("sweep", lambda: sweep(ctx))
        return FAILED_TICK_WAIT_S if self._failed else wait

    def _guard(self, what: str, duty: Callable[[], T]) -> T | None:
        """Run one duty; a failure is logged and the others carry on."""
        try:
            return duty()
        except Exception:
            log.exception("duties.failed", duty=what)
            self._failed = True
            return None

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set."""
        while not stop.is_set():
            stop.wait(self.tick())


class DutiesThread(threading.Thread):
    """The duties on their own thread, Redis connection and gateway client."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(name=f"relay-duties-{name}", daemon=True)
        self.settings = settings
        self.worker_name = name
        self.stop_event = threading.Event()

    def run(self) -> None:
        # no PING at start: if Redis is away, the ticks log it and retry
        ctx = Context.from_settings(self.settings, conn=connect(self.settings, check=False))
        try:
            Duties(ctx, self.worker_name).run(self.stop_event)
        finally:
            ctx.close()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.join(timeout)
