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
   until each answer is complete: :func:`fetch_records`);
3. matches new records to unmatched messages (:mod:`relay.reconcile.matching`) and records each
   ``sms_id`` once (``lua/match.lua``, which also keeps ``Keys.sms_index(dev)``);
4. moves messages by status code (6 → ``sent``, 7 → ``delivered``, 8-12/100/101 →
   ``failed``) with ``Store.transition`` from the states that allow it, so a repeat is a no-op;
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

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from relay import scripts
from relay.context import Context
from relay.errors import GatewayError, GatewayRejected
from relay.log import get_logger
from relay.reconcile.matching import (
    Fetch,
    Observation,
    Submitted,
    fetch_records,
    find_matches,
    prune_index,
    record_matches,
    windows_for,
)
from relay.states import FINAL_STATES, STATUS_TITLES, State, state_for_code
from relay.store import Message

_log = get_logger("relay.reconcile.reconciler")

STRAGGLER_AFTER = 900.0
"""Seconds after submission from which a matched message is checked with getsmsstatus."""
STRAGGLER_BUDGET = 50
"""Most getsmsstatus calls per device and pass."""
MAX_LOAD = 5000
"""Most pending messages of one device looked at per pass: this many oldest and newest."""
MAX_BACKOFF = 60.0
_NOT_WAITING = {s.value.encode() for s in FINAL_STATES | {State.SENT}}


def process_name(kind: str) -> str:
    """A name unique to this process: ``kind:host:pid:random``."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseLost(Exception):
    """This process no longer holds the lease it works under (it stalled past the TTL)."""


class Lease:
    """A named lease in Redis held by one owner with a TTL (``lua/lease.lua``)."""

    def __init__(self, conn: redis.Redis, key: str, owner: str, ttl_ms: int) -> None:
        self.conn, self.key, self.owner, self.ttl_ms = conn, key, owner, ttl_ms

    def hold(self) -> bool:
        """Take the lease, or renew it when already ours; False when someone else holds it."""
        return bool(scripts.run(self.conn, "lease", [self.key], [self.owner, self.ttl_ms]))

    def renew(self) -> None:
        """Renew, or raise :class:`LeaseLost` when another process took it meanwhile."""
        if not self.hold():
            raise LeaseLost(self.key)

    def release(self) -> None:
        """Give the lease back (only if still ours)."""
        scripts.run(self.conn, "lease", [self.key], [self.owner, 0])


@dataclass
class PassReport:
    """What one pass did."""

    devices: int = 0
    busy: int = 0
    requests: int = 0
    matched: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    settled: int = 0
    stragglers: int = 0
    errors: int = 0

    def count(self, state: str, n: int = 1) -> None:
        if n:
            self.changes[state] = self.changes.get(state, 0) + n


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
        s = ctx.settings
        self.lease_ms = int((s.gateway_timeout * (s.gateway_retries + 1) + 30) * 1000)
        self._prune_cursor: dict[int, int] = {}
        self._running = False

    # --- the loop ------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Pass after pass until ``stop_event`` is set; never raises for gateway trouble."""
        stop = stop_event or threading.Event()
        settings = self.ctx.settings
        last_full, failures = float("-inf"), 0
        self._running = True
        _log.info("reconciler.start", name=self.name)
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
                _log.error("reconciler.redis_error", error=str(exc))
            except Exception:
                failures += 1
                _log.exception("reconciler.pass_crashed")
            wait = settings.reconcile_urgent_interval
            if failures:
                wait = min(MAX_BACKOFF, max(wait, 0.5) * 2 ** min(failures, 10))
            stop.wait(wait)
        self._running = False
        self.ctx.conn.hdel(self.ctx.keys.processes, self.name)
        _log.info("reconciler.stop", name=self.name)

    def run_once(self, devices: Iterable[int] | None = None) -> PassReport:
        """One pass over ``devices`` (default: every device with pending messages)."""
        report = PassReport()
        for dev in sorted(set(devices) if devices is not None else self.pending_devices()):
            self.heartbeat()
            try:
                self.reconcile_device(dev, report)
            except (GatewayError, LeaseLost) as exc:
                report.errors += 1
                _log.warning(
                    "reconcile.device_failed", device=dev, error=str(exc), kind=type(exc).__name__
                )
                if not isinstance(exc, GatewayRejected | LeaseLost):
                    break  # the gateway as a whole is in trouble: back off
            except redis.RedisError:
                raise
            except Exception:
                report.errors += 1
                _log.exception("reconcile.device_crashed", device=dev)
        if report.devices or report.errors:
            _log.info("reconcile.pass", **{k: v for k, v in vars(report).items() if v})
        return report

    def pending_devices(self) -> list[int]:
        """Devices with a non-empty pending set (``pending-devices``, plus those of ``lanes``)."""
        conn, keys = self.ctx.conn, self.ctx.keys
        members: Any = conn.smembers(keys.pending_devices)
        lanes: Any = conn.smembers(keys.lanes)
        devs = {int(d) for d in members} | {int(m.split(b":")[0]) for m in lanes}
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
        ids = [i.decode() for i in rows]
        pipe = conn.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hmget(keys.msg(msg_id), ["device_id", "state", "final"])
        devices, stale = set(), []
        for msg_id, (dev, state, final) in zip(ids, pipe.execute(), strict=True):
            if dev is None or final == b"1" or state in _NOT_WAITING:
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
        return list({m.decode(): int(score) for m, score in rows}.items())

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
                _log.warning("reconcile.status_refused", id=t.id, sms_id=t.sms_id, error=str(exc))
                continue
            title = answer.status_description or STATUS_TITLES.get(answer.status, "")
            observed[t.id] = Observation(t.sms_id, answer.status, title)
        pipe.execute()
        return observed

    def heartbeat(self) -> None:
        """``Keys.processes``: this reconciler is alive (the sweep frees leases of dead ones).

        Only while :meth:`run` runs: a lone ``run_once`` leaves no entry behind.
        """
        beat = {
            "kind": "reconciler",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "seen": self.ctx.now_ms(),
        }
        if self._running:
            self.ctx.conn.hset(self.ctx.keys.processes, self.name, json.dumps(beat))


# --- pending messages and what the gateway says of them ------------------------------


@dataclass(frozen=True)
class Tracked:
    """A pending message as one pass sees it (``message`` None: its record is gone)."""

    id: str
    submitted_ms: int
    message: Message | None
    checked_ms: int = 0

    @property
    def submitted(self) -> float:
        return self.submitted_ms / 1000

    @property
    def done(self) -> bool:
        """Final (or gone): nothing left to follow."""
        return self.message is None or self.message.final

    @property
    def state(self) -> State | None:
        return self.message.state if self.message else None

    @property
    def sms_id(self) -> int | None:
        return self.message.sms_id if self.message else None

    def sent_ms(self) -> int | None:
        sent = self.message.times.get("sent") if self.message else None
        return round(sent.timestamp() * 1000) if sent else None

    def as_submitted(self) -> Submitted:
        m = self.message
        assert m is not None
        return Submitted(self.id, m.sendto, m.body, m.customerid, self.submitted, m.sim)


READ_CHUNK = 1000
"""Records read per script call (``lua/hashes.lua``, ``lua/records.lua``): Redis is never
held long by one call, and all the calls of a pass go in one round trip."""


def read_records(ctx: Context, ids: Sequence[str], fields: Sequence[str] = ()) -> list[Any]:
    """The records of ``ids`` in one round trip, decoded from JSON: whole records as dicts
    (``{}`` when gone), or with ``fields`` a list of those values per record."""
    keys = [ctx.keys.msg(i) for i in ids]
    pipe = ctx.conn.pipeline(transaction=False)
    for start in range(0, len(keys), READ_CHUNK):
        chunk = keys[start : start + READ_CHUNK]
        if fields:
            scripts.run(pipe, "records", chunk, list(fields))
        else:
            scripts.run(pipe, "hashes", chunk, [])
    return [row for answer in pipe.execute() for row in json.loads(answer)]


def load_tracked(ctx: Context, rows: Sequence[tuple[str, int]]) -> list[Tracked]:
    """The records of pending ``rows`` (id, submitted ms), in one round trip."""
    records = read_records(ctx, [i for i, _ in rows])
    return [
        Tracked(i, ms, Message.from_hash(i, raw) if raw else None, int(raw.get("checked", 0)))
        for (i, ms), raw in zip(rows, records, strict=True)
    ]


_FROM = {
    State.SENT: [State.SUBMITTED],
    State.DELIVERED: [State.SUBMITTED, State.SENT],
    State.FAILED: [State.SUBMITTED, State.SENT],
}


def apply_observations(
    ctx: Context,
    dev: int,
    live: Sequence[Tracked],
    observed: dict[str, Observation],
    report: PassReport,
) -> dict[str, State]:
    """Record new matches and status codes, then move states; returns id → new state."""
    fresh = [
        (t.id, o)
        for t in live
        if (o := observed.get(t.id))
        and t.message
        and (t.sms_id, t.message.status) != (o.sms_id, o.status)
    ]
    recorded = record_matches(ctx, dev, fresh, [State.SUBMITTED, State.SENT])
    report.matched += sum(1 for t in live if t.id in recorded and t.sms_id is None)
    targets: dict[State, list[tuple[str, Observation]]] = {}
    for t in live:
        obs = observed.get(t.id)
        ours = obs is not None and (t.sms_id == obs.sms_id or t.id in recorded)
        target = state_for_code(obs.status) if obs is not None and ours else None
        if obs is not None and target is not None and t.state != target:
            targets.setdefault(target, []).append((t.id, obs))
    changed: dict[str, State] = {}
    for target, items in targets.items():
        per = [
            {"sms_id": o.sms_id, "status": o.status, "statustitle": o.title}
            | ({"error": o.title} if target == State.FAILED else {})
            for _, o in items
        ]
        ids = ctx.store.transition(
            [i for i, _ in items],
            target,
            _FROM[target],
            per_message=per,
            final=target in FINAL_STATES,
        )
        changed.update(dict.fromkeys(ids, target))
        report.count(target.value, len(ids))
    return changed


def apply_timeouts(
    ctx: Context,
    live: Sequence[Tracked],
    changed: dict[str, State],
    now_ms: int,
    report: PassReport,
) -> None:
    """``sent`` → final after the report wait; ``submitted`` → ``expired`` after the TTL."""
    s = ctx.settings
    wait_ms, ttl_ms = int(s.delivery_report_wait * 1000), int(s.status_ttl * 1000)
    finish, expire = [], []
    for t in live:
        state = changed.get(t.id, t.state)
        sent_ms = now_ms if changed.get(t.id) == State.SENT else t.sent_ms()
        too_old = now_ms - t.submitted_ms >= ttl_ms
        if state == State.SENT and (too_old or now_ms - (sent_ms or now_ms) >= wait_ms):
            finish.append(t.id)
        elif state == State.SUBMITTED and too_old:
            expire.append(t.id)
    # "*": any state not yet final, so a sent message is made final once and only once.
    done = ctx.store.transition(finish, State.SENT, "*", final=True)
    report.count("sent_final", len(done))
    error = {"error": "no final status within the status TTL"}
    report.count(
        State.EXPIRED.value,
        len(ctx.store.transition(expire, State.EXPIRED, [State.SUBMITTED], fields=error)),
    )


def settle(ctx: Context, dev: int, ids: Sequence[str]) -> int:
    """Final (or gone) messages leave pending; sent urgent ones leave urgent-waiting."""
    if not ids:
        return 0
    leave, sent = [], []
    states = read_records(ctx, ids, ["state", "final"])
    for msg_id, (state, final) in zip(ids, states, strict=True):
        if state is None or state in FINAL_STATES or final == "1":
            leave.append(msg_id)
        elif state == "sent":
            sent.append(msg_id)
    keys = [ctx.keys.pending(dev), ctx.keys.pending_devices, ctx.keys.urgent_waiting]
    return int(scripts.run(ctx.conn, "unpend", keys, [dev, len(leave), *leave, *sent]))
