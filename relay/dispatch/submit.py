"""One claimed batch: its move to ``submitting``, the ``addalotofsms`` call, and the outcome.

:class:`Submitter` records each outcome in one MULTI (see :mod:`relay.dispatch.ticket` for the
protocol): stored → ``submitted``; refused → bisect by halving the lane's batch size
(``cap`` in ``pace:<dev>:<sim>``), or a lone message's attempt; not sent, bad or missing
credentials, or a failure before sending → back to the head of the lanes
(``lua/requeue.lua``) with their pacing given back; outcome unknown (or any failure once the
request went out) → ``unknown`` and the batch to ``verify``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from relay import scripts
from relay.context import Context
from relay.devices import Pace
from relay.dispatch.tickets import Arm, enqueue_tickets, new_job_id
from relay.errors import (
    ConfigError,
    GatewayAuthError,
    GatewayRejected,
    NotSent,
    OutcomeUnknown,
)
from relay.gateway.models import OutgoingSms
from relay.keys import BULK, URGENT, LaneKind
from relay.log import get_logger
from relay.results.history import record_latency
from relay.states import State

log = get_logger("relay.dispatch.ticket")

RECORD_FIELDS = ("sendto", "body", "urgent", "customerid", "attempts")
"""What a request needs from a message record."""


@dataclass(frozen=True)
class Item:
    """One claimed message, ready to submit."""

    id: str
    urgent: bool
    attempts: int
    sms: OutgoingSms


@dataclass(frozen=True)
class Batch:
    """Messages of one device/SIM submitted in one request under batch id ``bid``."""

    bid: str
    items: tuple[Item, ...]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


class Submitter:
    """Submits batches of ``dev``/``sim`` for a ticket of ``kind`` held by job ``job``."""

    def __init__(self, ctx: Context, kind: LaneKind, dev: int, sim: int, job: str) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.kind: LaneKind = kind
        self.dev = dev
        self.sim = sim
        self.job = job
        self.pace_key = ctx.keys.pace(dev, sim)

    def submit(self, bid: str, ids: list[str], pace: Pace, cap: int = 0) -> str:
        """Submit the claimed ids as batch ``bid`` and record the outcome; returns its name:
        ``ok``, ``requeued`` (refused, put back or ended rejected), ``not_sent``, ``auth``,
        ``unknown``, ``failed`` (an unexpected error before sending) or ``empty``."""
        batch = self.start(bid, ids)
        if batch is None:
            return "empty"
        sent = False
        try:
            gateway = self.ctx.gateway
            sms = [item.sms for item in batch.items]
            sent = True
            gateway.add_many(sms)
        except GatewayRejected as exc:
            return self.rejected(batch, pace, exc.gateway_message)
        except NotSent as exc:
            self.requeue(batch, pace)
            log.warning("dispatch.not_sent", **self._where(batch), error=str(exc))
            return "not_sent"
        except (GatewayAuthError, ConfigError) as exc:
            # refused credentials, or none to send with: nothing was stored
            self.requeue(batch, pace)
            log.error("dispatch.auth_refused", **self._where(batch), error=str(exc))
            return "auth"
        except OutcomeUnknown as exc:
            self.unknown(batch, pace, str(exc))
            return "unknown"
        except Exception as exc:
            log.exception("dispatch.failed", **self._where(batch), sent=sent)
            if sent:
                self.unknown(batch, pace, f"{type(exc).__name__}: {exc}")
                return "unknown"
            self.requeue(batch, pace)
            return "failed"
        self.stored(batch, cap)
        return "ok"

    def start(self, bid: str, ids: list[str]) -> Batch | None:
        """``queued → submitting`` for the claimed ids, and their records, in one MULTI.

        Ids that were not ``queued`` (a record gone, or changed meanwhile) are left out.
        """
        store, k = self.ctx.store, self.keys
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            store.transition(
                ids,
                State.SUBMITTING,
                [State.QUEUED, State.SCHEDULED],
                fields={"batch": bid},
                client=pipe,
            )
            scripts.run(pipe, "records", [k.msg(i) for i in ids], RECORD_FIELDS)
            changed, rows = pipe.execute()
        records = json.loads(rows) if ids else []
        items = [
            self._item(msg_id, rec)
            for msg_id, ok, rec in zip(ids, changed, records, strict=True)
            if ok
        ]
        if len(items) < len(ids):
            log.warning(
                "dispatch.skipped",
                dev=self.dev,
                sim=self.sim,
                batch=bid,
                skipped=len(ids) - len(items),
            )
        if not items:
            self._drop_batch(bid)
            return None
        return Batch(bid, tuple(items))

    def _item(self, msg_id: str, rec: list[str | None]) -> Item:
        """One claimed message from its ``RECORD_FIELDS`` (text, as ``records.lua`` answers)."""
        sendto, body, urgent, customerid, attempts = rec
        is_urgent = urgent == "1"
        return Item(
            id=msg_id,
            urgent=is_urgent,
            attempts=int(attempts or 0),
            sms=OutgoingSms(
                sendto=sendto or "",
                body=body or "",
                device_id=self.dev,
                sim=self.sim,
                urgent=is_urgent,
                customerid=int(customerid) if customerid and customerid.isdigit() else None,
            ),
        )

    def _where(self, batch: Batch) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "sim": self.sim,
            "kind": self.kind,
            "batch": batch.bid,
            "size": len(batch.items),
        }

    def _drop_batch(self, bid: str, pipe: redis.client.Pipeline | None = None) -> None:
        target = pipe if pipe is not None else self.ctx.conn.pipeline(transaction=True)
        target.zrem(self.keys.inflight, bid)
        target.delete(self.keys.batch(bid))
        if pipe is None:
            target.execute()

    # --- outcomes ------------------------------------------------------------------------

    def stored(self, batch: Batch, cap: int = 0) -> None:
        """The gateway stored the batch: ``submitted``, pending the reconciler."""
        k, now, ids = self.keys, self.ctx.now_ms(), batch.ids
        urgent = {item.id: now for item in batch.items if item.urgent}
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.transition(
                ids, State.SUBMITTED, [State.SUBMITTING], add_index=k.pending(self.dev), client=pipe
            )
            pipe.sadd(k.pending_devices, self.dev)
            if urgent:
                pipe.zadd(k.urgent_waiting, urgent)
                record_latency(self.ctx, pipe, list(urgent), now)  # the dashboard's p50/p99
            self._drop_batch(batch.bid, pipe)
            pipe.hdel(self.pace_key, "fails")
            if cap:
                self._grow_cap(pipe, cap)
            pipe.execute()
        log.info("dispatch.submitted", **self._where(batch), urgent=len(urgent))

    def _grow_cap(self, pipe: redis.client.Pipeline, cap: int) -> None:
        """After a stored batch while bisecting, the lane's batch size doubles back."""
        if cap * 2 >= self.ctx.settings.batch_max:
            pipe.hdel(self.pace_key, "cap")
        else:
            pipe.hset(self.pace_key, "cap", cap * 2)

    def rejected(self, batch: Batch, pace: Pace, words: str) -> str:
        """The gateway refused the batch: bisect it, or count a lone message's attempt."""
        if len(batch.items) > 1:
            half = (len(batch.items) + 1) // 2
            self.requeue(batch, pace, extra=lambda pipe: pipe.hset(self.pace_key, "cap", half))
            log.warning(
                "dispatch.rejected_batch", **self._where(batch), bisect_to=half, error=words
            )
            return "requeued"
        item = batch.items[0]
        attempts = item.attempts + 1
        fields = {"attempts": attempts, "error": words}
        if attempts < self.ctx.settings.max_attempts:
            self.requeue(batch, pace, fields=fields)
            log.warning(
                "dispatch.refused", **self._where(batch), id=item.id, attempts=attempts, error=words
            )
            return "requeued"
        k = self.keys
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.transition(
                [item.id], State.REJECTED, [State.SUBMITTING], fields=fields, client=pipe
            )
            pipe.zadd(k.dead, {item.id: self.ctx.now_ms()})
            pipe.hdel(self.pace_key, "cap")
            self._drop_batch(batch.bid, pipe)
            pipe.execute()
        log.warning(
            "dispatch.message_rejected",
            **self._where(batch),
            id=item.id,
            attempts=attempts,
            error=words,
        )
        return "requeued"

    def requeue(
        self,
        batch: Batch,
        pace: Pace,
        *,
        fields: dict[str, Any] | None = None,
        extra: Callable[[redis.client.Pipeline], object] | None = None,
    ) -> None:
        """Back to the head of their lanes, in order, as ``queued``; their pacing given back.

        A lane that gets ids back has its ticket armed if free (this run's own kind with
        this run's job id, so it keeps the ticket; the other kind with a fresh job).
        """
        k, ids = self.keys, batch.ids
        jobs = {
            kind: self.job if kind == self.kind else new_job_id(kind, self.dev, self.sim)
            for kind in (URGENT, BULK)
        }
        keys = [
            k.lane(URGENT, self.dev, self.sim),
            k.lane(BULK, self.dev, self.sim),
            k.ticket(URGENT, self.dev, self.sim),
            k.ticket(BULK, self.dev, self.sim),
            k.inflight,
            k.batch(batch.bid),
            self.pace_key,
            *(k.msg(i) for i in ids),
        ]
        args: list[Any] = [batch.bid, jobs[URGENT], jobs[BULK], pace.interval_ms, 1, *ids]
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.transition(
                ids, State.QUEUED, [State.SUBMITTING], fields=fields, client=pipe
            )
            scripts.run(pipe, "requeue", keys, args)
            if extra is not None:
                extra(pipe)
            result = pipe.execute()
        _, _, set_u, set_b = result[1]
        arms = [
            Arm(kind, self.dev, self.sim, jobs[kind])
            for kind, was_set in ((URGENT, set_u), (BULK, set_b))
            if int(was_set) and kind != self.kind
        ]
        enqueue_tickets(self.ctx.conn, k, arms)

    def unknown(self, batch: Batch, pace: Pace, error: str) -> None:
        """It may have been stored: ``unknown``, batch to ``verify``; never resent blind."""
        k = self.keys
        check_at = self.ctx.now_ms() + int(1000 * max(1.0, pace.poll_s))
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.transition(
                batch.ids, State.UNKNOWN, [State.SUBMITTING], fields={"error": error}, client=pipe
            )
            pipe.zrem(k.inflight, batch.bid)
            pipe.zadd(k.verify, {batch.bid: check_at})
            # the request is over on this side: recovery's grace counts from here
            pipe.hset(k.batch(batch.bid), "doubted", self.ctx.now_ms())
            pipe.execute()
        log.warning("dispatch.outcome_unknown", **self._where(batch), error=error)
