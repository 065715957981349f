"""Rejected messages (``relay dead``): list them, send them again, or purge them.

A message ends ``rejected`` when the gateway kept refusing it (``"error":1`` on its own,
after the dispatcher bisected its batches) or never stored it, ``RELAY_MAX_ATTEMPTS`` times
(:mod:`relay.dispatch.submit`, :mod:`relay.dispatch.recovery`). It then joins
``Keys.dead`` (id → ms it was rejected), with the gateway's words in its ``error`` field,
and its record expires after ``RELAY_RECORD_TTL`` like every final record.

- :func:`list_dead` reads them, oldest first.
- :func:`retry` moves each back: ``rejected → queued`` through :meth:`Store.transition`
  (``attempts`` 0, ``error`` cleared, out of ``dead``), its record kept for good again
  (``PERSIST``), at the HEAD of its lane in id order (:func:`relay.lanes.put_back`, which
  also arms the lane's ticket), all in one MULTI per device/SIM; then the tickets' RQ jobs
  are enqueued.
- :func:`purge` deletes the records (and an idempotency key still naming one), out of
  ``dead``. The state counts keep them: they count every message that ended rejected.

Both watch the records they change, so a message retried or purged by someone else
meanwhile is left alone and reported, never changed twice. An id in ``dead`` whose record
has expired is reported missing and leaves ``dead``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from relay.clock import from_ms
from relay.connection import text
from relay.context import Context
from relay.dispatch.tickets import Arm, enqueue_tickets, fresh_jobs
from relay.lanes import DeviceSim, put_back
from relay.log import get_logger
from relay.states import State
from relay.store import Message

log = get_logger(__name__)

WATCH_TRIES = 5
"""Attempts at one device/SIM's retry (or a purge) while other clients change its records."""


@dataclass(frozen=True)
class DeadMessage:
    """A member of ``Keys.dead``; ``message`` is None when its record has expired."""

    id: str
    rejected_at: datetime
    message: Message | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the record (if any) with ``rejected_at``."""
        record = self.message.to_dict() if self.message is not None else {"id": self.id}
        return {**record, "rejected_at": self.rejected_at.isoformat(), "gone": self.message is None}


@dataclass
class Outcome:
    """What :func:`retry` or :func:`purge` did with each id asked for."""

    done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Ids with no record (never existed, expired, or purged)."""
    not_rejected: dict[str, str] = field(default_factory=dict)
    """Id → the state it is in instead (e.g. already retried: ``queued``)."""

    def add(self, other: Outcome) -> None:
        self.done += other.done
        self.missing += other.missing
        self.not_rejected.update(other.not_rejected)


def dead_ids(ctx: Context) -> list[str]:
    """Every id in ``Keys.dead``, oldest first."""
    members: Any = ctx.conn.zrange(ctx.keys.dead, 0, -1)
    return [text(i) for i in members]


def count_dead(ctx: Context) -> int:
    return int(ctx.conn.zcard(ctx.keys.dead))


def list_dead(ctx: Context, limit: int | None = None) -> list[DeadMessage]:
    """The rejected messages, oldest first (at most ``limit``), with their records."""
    if limit is not None and limit < 1:
        return []
    end = -1 if limit is None else limit - 1
    rows: Any = ctx.conn.zrange(ctx.keys.dead, 0, end, withscores=True)
    ids = [text(member) for member, _ in rows]
    records = ctx.store.get_many(ids)
    return [
        DeadMessage(msg_id, from_ms(int(score)), record)
        for msg_id, (_, score), record in zip(ids, rows, records, strict=True)
    ]


# --- retry -----------------------------------------------------------------------------


def retry(ctx: Context, ids: Iterable[str]) -> Outcome:
    """Send rejected messages again: queued at the head of their lanes, attempts reset."""
    outcome = Outcome()
    wanted = list(dict.fromkeys(ids))
    lanes: dict[DeviceSim, list[str]] = {}
    for msg_id, record in zip(wanted, ctx.store.get_many(wanted), strict=True):
        if _sort(ctx, msg_id, record, outcome):
            assert record is not None
            lanes.setdefault(DeviceSim(record.device_id, record.sim), []).append(msg_id)
    for pair, lane_ids in sorted(lanes.items()):
        _retry_lane(ctx, pair, sorted(lane_ids), outcome)
    if outcome.done:
        log.info("dead.retried", messages=len(outcome.done), lanes=len(lanes))
    return outcome


def _sort(ctx: Context, msg_id: str, record: Message | None, outcome: Outcome) -> bool:
    """Whether ``record`` may be retried or purged; else note why not in ``outcome``."""
    if record is None:
        outcome.missing.append(msg_id)
        ctx.conn.zrem(ctx.keys.dead, msg_id)  # an expired record leaves dead too
        return False
    if record.state != State.REJECTED:
        outcome.not_rejected[msg_id] = record.state.value
        return False
    return True


def _retry_lane(ctx: Context, pair: DeviceSim, ids: list[str], outcome: Outcome) -> None:
    """One MULTI for ``ids`` of ``pair`` (in id order), retried while others interfere."""
    k = ctx.keys
    for _ in range(WATCH_TRIES):
        jobs = fresh_jobs(k, pair.urgent)
        try:
            with ctx.conn.pipeline(transaction=True) as pipe:
                _watch(pipe, *(k.msg(i) for i in ids))
                ready, left = _still_rejected(pipe, ctx, ids)
                if not ready:
                    outcome.add(left)
                    return
                pipe.multi()
                ctx.store.queue_transition(
                    pipe,
                    ready,
                    State.QUEUED,
                    [State.REJECTED],
                    fields={"attempts": 0, "error": ""},
                    rem_index=k.dead,
                )
                for msg_id in ready:
                    pipe.persist(k.msg(msg_id))
                back = put_back(pipe, k, pair, ready, batch=None, jobs=jobs)
                answers = pipe.execute()
        except redis.WatchError:
            continue
        armed = back.result(answers).armed
        enqueue_tickets(ctx, [Arm(lane, job) for lane, job in armed.items()])
        outcome.add(left)
        outcome.done.extend(ready)
        return
    raise RuntimeError(f"dead retry of {pair.member}: records kept changing ({WATCH_TRIES} tries)")


def _watch(pipe: redis.client.Pipeline, *names: str) -> None:
    pipe.watch(*names)  # type: ignore[no-untyped-call]


def _still_rejected(
    pipe: redis.client.Pipeline, ctx: Context, ids: Sequence[str]
) -> tuple[list[str], Outcome]:
    """Under WATCH: the ids still rejected, and an outcome noting the others."""
    ready, left = [], Outcome()
    for msg_id in ids:
        state = pipe.hget(ctx.keys.msg(msg_id), "state")
        if state is None:
            left.missing.append(msg_id)
        elif text(state) != State.REJECTED.value:
            left.not_rejected[msg_id] = text(state)
        else:
            ready.append(msg_id)
    return ready, left


# --- purge -----------------------------------------------------------------------------


def purge(ctx: Context, ids: Iterable[str]) -> Outcome:
    """Delete rejected messages for good (records, dead entries, their idempotency keys)."""
    outcome = Outcome()
    wanted = list(dict.fromkeys(ids))
    for msg_id, record in zip(wanted, ctx.store.get_many(wanted), strict=True):
        if _sort(ctx, msg_id, record, outcome):
            _purge_one(ctx, msg_id, outcome)
    if outcome.done:
        log.info("dead.purged", messages=len(outcome.done))
    return outcome


def _purge_one(ctx: Context, msg_id: str, outcome: Outcome) -> None:
    k, key = ctx.keys, ctx.keys.msg(msg_id)
    for _ in range(WATCH_TRIES):
        try:
            with ctx.conn.pipeline(transaction=True) as pipe:
                _watch(pipe, key)
                ready, left = _still_rejected(pipe, ctx, [msg_id])
                if not ready:
                    outcome.add(left)
                    return
                idem = pipe.hget(key, "key")
                idem_key = k.idem(text(idem)) if idem else None
                if idem_key is not None:
                    _watch(pipe, idem_key)
                    if text(pipe.get(idem_key) or b"") != msg_id:
                        idem_key = None
                pipe.multi()
                pipe.delete(key, *([idem_key] if idem_key else []))
                pipe.zrem(k.dead, msg_id)
                pipe.execute()
        except redis.WatchError:
            continue
        outcome.done.append(msg_id)
        return
    raise RuntimeError(f"dead purge of {msg_id}: its record kept changing ({WATCH_TRIES} tries)")
