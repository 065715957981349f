"""The reconciler: finds each submitted message at the gateway and follows it to a final code.

``relay reconciler`` runs :class:`Reconciler` in its own process; several may run at once.
A pass takes every device with pending messages (``Keys.pending_devices``, and the devices
of ``Keys.lanes`` as a safety net), and for each one whose lease
``Keys.lease("reconcile:<dev>")`` it gets (``lua/lease.lua``; renewed before every gateway
call, given back after the device, left to expire if the process dies):

1. loads the pending messages (``Keys.pending(dev)``: id → submitted ms) and their records;
2. asks ``getallsms`` for the windows around the submissions of the messages not yet matched
   and of those matched less than ``straggler_after`` seconds ago (nearby submissions share
   one window; a window whose answer counts more records than it holds is split in halves
   until each answer is complete);
3. matches new records to unmatched messages (:mod:`relay.reconcile.lookup`) and records each
   ``sms_id`` once (``lua/match.lua``, which also keeps ``Keys.sms_index(dev)``);
4. moves messages by status code (6 → ``sent``, 7 → ``delivered``, 8-12/100/101 →
   ``failed``) (:mod:`relay.reconcile.apply`) from the states that allow it, so a repeat is a no-op;
5. asks ``getsmsstatus`` for *stragglers* (matched long ago, not final, outside the windows),
   at most ``straggler_budget`` per device and pass, least recently checked first;
6. ends ``sent`` (final) once no report came within ``RELAY_DELIVERY_REPORT_WAIT``, and
   ``expired`` a message with no final code within ``RELAY_STATUS_TTL`` of its submission;
7. removes final messages from the pending set (and sent urgent ones from
   ``Keys.urgent_waiting``) with ``lua/unpend.lua``.

Passes run every ``RELAY_RECONCILE_INTERVAL`` seconds, and while ``Keys.urgent_waiting`` is
not empty the devices of those messages get a pass every ``RELAY_RECONCILE_URGENT_INTERVAL``
seconds. A gateway or Redis error ends the pass (logged) and the next one waits longer
(capped exponential backoff); only ``stop_event`` ends :meth:`Reconciler.run` (``relay
reconciler`` sets it on SIGTERM/SIGINT).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from relay.connection import text
from relay.context import Context
from relay.errors import GatewayError, GatewayRejected
from relay.lanes import device_sims
from relay.log import get_logger
from relay.processes import Lease, LeaseLost, beat, forget, lease_ttl_ms, process_name
from relay.reconcile.apply import (
    PassReport,
    Tracked,
    apply_observations,
    apply_timeouts,
    load_tracked,
    settle,
)
from relay.reconcile.lookup import Fetch, fetch_records, find_matches, prune_index
from relay.reconcile.matching import Observation, windows_for
from relay.states import ENDING_STATES, STATUS_TITLES
from relay.store import read_fields

log = get_logger(__name__)

STRAGGLER_AFTER = 900.0
"""Seconds after submission from which a matched message is checked with getsmsstatus."""
STRAGGLER_BUDGET = 50
"""Most getsmsstatus calls per device and pass."""
MAX_LOAD = 5000
"""Most pending messages of one device looked at per pass: this many oldest and newest."""
MAX_BACKOFF = 60.0
_NOT_WAITING = {s.value for s in ENDING_STATES}
"""States of a message no longer waiting to be sent (so not an urgent device's concern)."""


class Reconciler:
    """Follows submitted messages to their final state; safe to run in several processes."""

    def __init__(
        self,
        ctx: Context,
        *,
        name: str | None = None,
        straggler_after: float = STRAGGLER_AFTER,
        straggler_budget: int = STRAGGLER_BUDGET,
        max_load: int = MAX_LOAD,
    ) -> None:
        self.ctx = ctx
        self.name = name or process_name("reconciler")
        self.straggler_after = straggler_after
        self.straggler_budget = straggler_budget
        self.max_load = max_load
        self.lease_ms = lease_ttl_ms(ctx.settings)
        self._prune_cursor: dict[int, int] = {}
        self._running = False

    # --- the loop ------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Pass after pass until ``stop_event`` is set; never raises for gateway trouble."""
        stop = stop_event or threading.Event()
        settings = self.ctx.settings
        last_full, failures = float("-inf"), 0
        self._running = True
        log.info("reconciler.start", name=self.name)
        while not stop.is_set():
            now = self.ctx.clock.now()
            full = now - last_full >= settings.reconcile_interval
            try:
                self.heartbeat()
                devices = None if full else self.urgent_devices()
                if full or devices:
                    report = self.run_once(devices)
                    last_full = now if full else last_full
                    failures = failures + 1 if report.errors else 0
            except redis.RedisError as exc:
                failures += 1
                log.error("reconciler.redis_error", error=str(exc))
            except Exception:
                failures += 1
                log.exception("reconciler.pass_crashed")
            wait = settings.reconcile_urgent_interval
            if failures:
                wait = min(MAX_BACKOFF, max(wait, 0.5) * 2 ** min(failures, 10))
            stop.wait(wait)
        self._running = False
        forget(self.ctx, self.name)
        log.info("reconciler.stop", name=self.name)

    def run_once(self, devices: Iterable[int] | None = None) -> PassReport:
        """One pass over ``devices`` (default: every device with pending messages)."""
        report = PassReport()
        for dev in sorted(set(devices) if devices is not None else self.pending_devices()):
            self.heartbeat()
            try:
                self.reconcile_device(dev, report)
            except (GatewayError, LeaseLost) as exc:
                report.errors += 1
                log.warning(
                    "reconcile.device_failed", device=dev, error=str(exc), kind=type(exc).__name__
                )
                if not isinstance(exc, GatewayRejected | LeaseLost):
                    break  # the gateway as a whole is in trouble: back off
            except redis.RedisError:
                raise
            except Exception:
                report.errors += 1
                log.exception("reconcile.device_crashed", device=dev)
        if report.devices or report.errors:
            log.info("reconcile.pass", **{k: v for k, v in vars(report).items() if v})
        return report

    def pending_devices(self) -> list[int]:
        """Devices with a non-empty pending set (``pending-devices``, plus those of ``lanes``)."""
        conn, keys = self.ctx.conn, self.ctx.keys
        members: Any = conn.smembers(keys.pending_devices)
        devs = {int(d) for d in members} | {p.device for p in device_sims(conn, keys)}
        ordered = sorted(devs)
        pipe = conn.pipeline(transaction=False)
        for dev in ordered:
            pipe.zcard(keys.pending(dev))
        return [dev for dev, n in zip(ordered, pipe.execute(), strict=True) if n]

    def urgent_devices(self, limit: int = 1000) -> set[int]:
        """Devices of the urgent messages submitted and not yet sent.

        Ids whose record is gone, or that are already sent or final, leave the set here
        (so a message settled by someone else never keeps the fast passes going).
        """
        conn, keys = self.ctx.conn, self.ctx.keys
        rows: Any = conn.zrange(keys.urgent_waiting, 0, limit - 1)
        ids = [text(i) for i in rows]
        records = read_fields(conn, keys, ids, ["device_id", "state", "final"])
        devices, stale = set(), []
        for msg_id, (dev, state, final) in zip(ids, records, strict=True):
            if dev is None or final == "1" or state in _NOT_WAITING:
                stale.append(msg_id)
            else:
                devices.add(int(dev))
        if stale:
            conn.zrem(keys.urgent_waiting, *stale)
        return devices

    # --- one device ----------------------------------------------------------------------

    def reconcile_device(self, dev: int, report: PassReport) -> None:
        """Reconcile ``dev`` under its lease; a device leased by another process is skipped."""
        lease = Lease(
            self.ctx.conn, self.ctx.keys.lease(f"reconcile:{dev}"), self.name, self.lease_ms
        )
        if not lease.hold():
            report.busy += 1
            return
        try:
            self._device_pass(dev, lease, report)
            report.devices += 1
        finally:
            lease.release()

    def _device_pass(self, dev: int, lease: Lease, report: PassReport) -> None:
        ctx = self.ctx
        now_ms = ctx.now_ms()
        tracked = load_tracked(ctx, self._pending_ids(dev))
        live = [t for t in tracked if not t.done]
        observed = self._observe(dev, live, now_ms, lease, report)
        lease.renew()
        changed = apply_observations(ctx, dev, live, observed, report)
        apply_timeouts(ctx, live, changed, now_ms, report)
        report.settled += settle(ctx, dev, [t.id for t in tracked])
        self._prune_cursor[dev] = prune_index(ctx, dev, self._prune_cursor.get(dev, 0))

    def _pending_ids(self, dev: int) -> list[tuple[str, int]]:
        conn, key = self.ctx.conn, self.ctx.keys.pending(dev)
        half = self.max_load
        rows: Any = conn.zrange(key, 0, half - 1, withscores=True)
        if len(rows) >= half:
            rows += conn.zrange(key, -half, -1, withscores=True)
        return list({text(m): int(score) for m, score in rows}.items())

    def _observe(
        self, dev: int, live: Sequence[Tracked], now_ms: int, lease: Lease, report: PassReport
    ) -> dict[str, Observation]:
        """The gateway's word on ``live`` messages: message id → (sms_id, status, title)."""
        horizon = now_ms - int(self.straggler_after * 1000)
        unmatched = [t for t in live if t.sms_id is None]
        followed = [t for t in live if t.sms_id is not None and t.submitted_ms >= horizon]
        stale = [t for t in live if t.sms_id is not None and t.submitted_ms < horizon]
        margin = self.ctx.settings.match_window
        fetch = Fetch()
        for begin, end in windows_for([t.submitted for t in unmatched + followed], margin):
            fetch.add(fetch_records(self.ctx, dev, begin, end, before_request=lease.renew))
        found = find_matches(
            self.ctx,
            dev,
            [t.as_submitted() for t in unmatched],
            fetch,
            window=margin,
            before_request=lease.renew,
        )
        report.requests += fetch.requests
        records = fetch.records
        observed = {mid: Observation.of(record) for mid, record in found.items()}
        for t in followed:
            record = records.get(t.sms_id or 0)
            if record is not None:
                observed[t.id] = Observation.of(record)
            else:
                stale.append(t)
        observed.update(self._check_stragglers(stale, lease, report))
        return observed

    def _check_stragglers(
        self, stale: Sequence[Tracked], lease: Lease, report: PassReport
    ) -> dict[str, Observation]:
        """``getsmsstatus`` for the least recently checked stragglers, within the budget."""
        observed: dict[str, Observation] = {}
        chosen = sorted(stale, key=lambda t: (t.checked_ms, t.submitted_ms))
        pipe = self.ctx.conn.pipeline(transaction=False)
        for t in chosen[: self.straggler_budget]:
            assert t.sms_id is not None
            lease.renew()
            report.requests += 1
            report.stragglers += 1
            pipe.hset(self.ctx.keys.msg(t.id), "checked", self.ctx.now_ms())
            try:
                answer = self.ctx.gateway.get_sms_status(t.sms_id)
            except GatewayRejected as exc:
                log.warning("reconcile.status_refused", id=t.id, sms_id=t.sms_id, error=str(exc))
                continue
            title = answer.status_description or STATUS_TITLES.get(answer.status, "")
            observed[t.id] = Observation(t.sms_id, answer.status, title)
        pipe.execute()
        return observed

    def heartbeat(self) -> None:
        """``Keys.processes``: this reconciler is alive (the sweep frees leases of dead ones).

        Only while :meth:`run` runs: a lone ``run_once`` leaves no entry behind.
        """
        if self._running:
            beat(self.ctx, self.name, "reconciler")
