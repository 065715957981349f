"""One claimed batch: its move to ``submitting``, the ``addalotofsms`` call, and the outcome.

:class:`Submitter` records each :data:`Outcome` in one MULTI:

- ``ok``: the gateway stored the batch → ``submitted`` (+ ``pending:<dev>``, urgent ids on
  ``urgent-waiting``), and the lane's batch size grows back after a bisection;
- refused (``"error":1``): a batch of several goes back to the head of its lanes and the
  lane's batch size halves (``cap`` in ``Keys.pace``) until the refused message is alone
  (``bisected``); a lone message whose refusal cannot change (:func:`is_permanent`) ends
  ``rejected`` at once with the gateway's words and joins ``dead``; another refusal counts an
  attempt and the message goes back (``refused``: the ticket then waits a backoff before
  trying it again), until ``RELAY_MAX_ATTEMPTS`` attempts end it ``rejected``;
- ``not_replicated``: the move to ``submitting`` did not reach ``RELAY_REDIS_MIN_REPLICAS``
  replicas in time (a failover could lose it, and relay would then resend what the gateway
  holds): no call; back to the head of the lanes, the ticket backs off;
- ``not_sent`` (the request provably never reached the gateway), ``auth`` (bad or missing
  credentials) or ``failed`` (an error before sending) → back to the head of the lanes,
  pacing given back; the ticket backs off;
- ``unknown`` (a timeout, or any failure once the request went out) → ``unknown``, the
  batch moves from ``inflight`` to ``verify``: nothing in it is sent again until
  :mod:`relay.dispatch.recovery` has looked for it at the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis

from relay import durability
from relay.context import Context
from relay.devices import Pace
from relay.dispatch import batch as batches
from relay.dispatch.expiry import ERROR as EXPIRED
from relay.dispatch.tickets import Arm, enqueue_tickets, fresh_jobs
from relay.errors import (
    ConfigError,
    GatewayAuthError,
    GatewayRejected,
    NotReplicated,
    NotSent,
    OutcomeUnknown,
)
from relay.gateway.models import OutgoingSms
from relay.lanes import LaneId, put_back
from relay.log import get_logger
from relay.results.history import record_latency
from relay.states import State
from relay.store import queue_read_fields

log = get_logger(__name__)

Outcome = Literal[
    "ok",
    "bisected",
    "refused",
    "rejected",
    "not_sent",
    "not_replicated",
    "auth",
    "unknown",
    "failed",
    "empty",
]
"""How one submission ended (see the module docstring); ``empty``: nothing was left to send;
``not_replicated``: the claim did not reach ``RELAY_REDIS_MIN_REPLICAS`` replicas, so no call
was made (the messages went back to their lanes)."""

RECORD_FIELDS = ("sendto", "body", "urgent", "customerid", "attempts")
"""What a request needs from a message record."""

PERMANENT_REFUSAL = re.compile(
    r"not found|not available|not allowed|not valid|invalid|must be|is required|unknown",
    re.IGNORECASE,
)
"""Gateway words that name something wrong with the message or its device/SIM (a device that
does not exist, a slot the phone lacks, a malformed field): sending it again cannot help."""


def is_permanent(words: str) -> bool:
    """Whether a refusal of a lone message cannot change by trying again (README: Dead
    letters)."""
    return bool(PERMANENT_REFUSAL.search(words))


@dataclass(frozen=True)
class Item:
    """One claimed message, ready to submit."""

    id: str
    urgent: bool
    attempts: int
    sms: OutgoingSms


@dataclass(frozen=True)
class Submission:
    """The messages of one claimed batch (``bid``) still ``submitting``, in claim order."""

    bid: str
    items: tuple[Item, ...]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]


class _HeldBack(Exception):
    """``start``'s move to ``submitting`` is not on enough replicas (``cause``)."""

    def __init__(self, sub: Submission | None, cause: NotReplicated) -> None:
        super().__init__(str(cause))
        self.sub, self.cause = sub, cause


class Submitter:
    """Submits the batches of ``lane``'s device/SIM for its ticket, held by job ``job``."""

    def __init__(self, ctx: Context, lane: LaneId, job: str) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.lane = lane
        self.pair = lane.pair
        self.job = job
        self.pace_key = ctx.keys.pace(lane.pair)

    def submit(self, bid: str, ids: list[str], pace: Pace, cap: int = 0) -> Outcome:
        """Submit the claimed ids as batch ``bid`` and record the outcome."""
        try:
            sub = self.start(bid, ids)
        except _HeldBack as held:  # RELAY_REDIS_MIN_REPLICAS not met: no call, it waits
            return self.held_back(held.sub, pace, held.cause)
        if sub is None:
            return "empty"
        sent = False
        try:
            gateway = self.ctx.gateway
            sms = [item.sms for item in sub.items]
            sent = True
            gateway.add_many(sms)
        except GatewayRejected as exc:
            return self.refused(sub, pace, exc.gateway_message)
        except NotSent as exc:
            self.requeue(sub, pace)
            log.warning("dispatch.not_sent", **self._where(sub), error=str(exc))
            return "not_sent"
        except (GatewayAuthError, ConfigError) as exc:
            # refused credentials, or none to send with: nothing was stored
            self.requeue(sub, pace)
            log.error("dispatch.auth_refused", **self._where(sub), error=str(exc))
            return "auth"
        except OutcomeUnknown as exc:
            self.unknown(sub, pace, str(exc))
            return "unknown"
        except Exception as exc:
            log.exception("dispatch.failed", **self._where(sub), sent=sent)
            if sent:
                self.unknown(sub, pace, f"{type(exc).__name__}: {exc}")
                return "unknown"
            self.requeue(sub, pace)
            return "failed"
        self.stored(sub, cap)
        return "ok"

    def start(self, bid: str, ids: list[str]) -> Submission | None:
        """``queued → submitting`` for the claimed ids, in one MULTI with reading them.

        Ids whose ttl has passed end ``expired`` first, in the same MULTI
        (:mod:`relay.dispatch.expiry`). Ids that were not ``queued`` (expired, a record
        gone, or changed meanwhile) are left out.
        """
        # no deadline at all (no ttl in use): no claimed id can be due, none is checked
        due = bool(self.ctx.conn.exists(self.keys.deadlines))
        try:
            with durability.pipeline(self.ctx, what=f"batch {bid}") as pipe:
                expired = self.ctx.store.queue_transition(
                    pipe,
                    ids if due else [],
                    State.EXPIRED,
                    [State.QUEUED],
                    fields={"error": EXPIRED},
                    due_only=True,
                )
                moved = self.ctx.store.queue_transition(
                    pipe, ids, State.SUBMITTING, fields={"batch": bid}
                )
                read = queue_read_fields(pipe, self.keys, ids, RECORD_FIELDS)
                answers = pipe.execute()
            self._log_expired(bid, expired.result(answers))
        except NotReplicated as exc:
            done = exc.results  # the MULTI ran on the primary: its replies are here
            sub = self._submission(bid, ids, moved.result(done), read.result(done))
            raise _HeldBack(sub, exc) from exc
        return self._submission(bid, ids, moved.result(answers), read.result(answers))

    def _submission(
        self, bid: str, ids: list[str], moved: list[str], records: list[list[str | None]]
    ) -> Submission | None:
        """The submission of the ids that moved to ``submitting`` (the records read with it)."""
        changed = set(moved)
        items = [
            self._item(msg_id, rec)
            for msg_id, rec in zip(ids, records, strict=True)
            if msg_id in changed
        ]
        if len(items) < len(ids):
            log.warning(
                "dispatch.skipped", **self._lane(), batch=bid, skipped=len(ids) - len(items)
            )
        if not items:
            with self.ctx.conn.pipeline(transaction=True) as pipe:
                batches.drop(pipe, self.ctx, bid)
                pipe.execute()
            return None
        return Submission(bid, tuple(items))

    def _log_expired(self, bid: str, expired: list[str]) -> None:
        if expired:
            log.info("dispatch.expired", **self._lane(), batch=bid, ids=expired)

    def held_back(self, sub: Submission | None, pace: Pace, exc: NotReplicated) -> Outcome:
        """Its claim is not on enough replicas (a failover could lose it and resend what the
        gateway holds): no call; back to the head of its lanes, the ticket backs off."""
        if sub is not None:
            self.requeue(sub, pace)
        log.warning(
            "dispatch.not_replicated",
            **self._lane(),
            what=exc.what,
            acked=exc.acked,
            wanted=exc.wanted,
        )
        return "not_replicated"

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
                device_id=self.pair.device,
                sim=self.pair.sim,
                urgent=is_urgent,
                customerid=int(customerid) if customerid and customerid.isdigit() else None,
            ),
        )

    def _lane(self) -> dict[str, Any]:
        return {"dev": self.pair.device, "sim": self.pair.sim, "kind": self.lane.kind}

    def _where(self, sub: Submission) -> dict[str, Any]:
        return {**self._lane(), "batch": sub.bid, "size": len(sub.items)}

    # --- outcomes ------------------------------------------------------------------------

    def stored(self, sub: Submission, cap: int = 0) -> None:
        """The gateway stored the batch: ``submitted``, pending the reconciler."""
        k, now, dev = self.keys, self.ctx.now_ms(), self.pair.device
        urgent = {item.id: now for item in sub.items if item.urgent}
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.queue_transition(
                pipe, sub.ids, State.SUBMITTED, [State.SUBMITTING], add_index=k.pending(dev)
            )
            pipe.sadd(k.pending_devices, dev)
            if urgent:
                pipe.zadd(k.urgent_waiting, urgent)
                record_latency(self.ctx, pipe, list(urgent), now)  # the dashboard's p50/p99
            batches.drop(pipe, self.ctx, sub.bid)
            pipe.hdel(self.pace_key, "fails")
            if cap:
                self._grow_cap(pipe, cap)
            pipe.execute()
        log.info("dispatch.submitted", **self._where(sub), urgent=len(urgent))

    def _grow_cap(self, pipe: redis.client.Pipeline, cap: int) -> None:
        """After a stored batch while bisecting, the lane's batch size doubles back."""
        if cap * 2 >= self.ctx.settings.batch_max:
            pipe.hdel(self.pace_key, "cap")
        else:
            pipe.hset(self.pace_key, "cap", cap * 2)

    def refused(self, sub: Submission, pace: Pace, words: str) -> Outcome:
        """The gateway refused the batch: bisect it, or settle a lone message's refusal."""
        if len(sub.items) > 1:
            half = (len(sub.items) + 1) // 2
            self.requeue(sub, pace, extra=lambda pipe: pipe.hset(self.pace_key, "cap", half))
            log.warning("dispatch.rejected_batch", **self._where(sub), bisect_to=half, error=words)
            return "bisected"
        item = sub.items[0]
        attempts = item.attempts + 1
        fields = {"attempts": attempts, "error": words}
        permanent = is_permanent(words)
        if attempts < self.ctx.settings.max_attempts and not permanent:
            self.requeue(sub, pace, fields=fields)
            log.warning(
                "dispatch.refused", **self._where(sub), id=item.id, attempts=attempts, error=words
            )
            return "refused"
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.queue_transition(
                pipe, [item.id], State.REJECTED, [State.SUBMITTING], fields=fields
            )
            pipe.zadd(self.keys.dead, {item.id: self.ctx.now_ms()})
            pipe.hdel(self.pace_key, "cap")
            batches.drop(pipe, self.ctx, sub.bid)
            pipe.execute()
        log.warning(
            "dispatch.message_rejected",
            **self._where(sub),
            id=item.id,
            attempts=attempts,
            permanent=permanent,
            error=words,
        )
        return "rejected"

    def requeue(
        self,
        sub: Submission,
        pace: Pace,
        *,
        fields: dict[str, Any] | None = None,
        extra: Callable[[redis.client.Pipeline], object] | None = None,
    ) -> None:
        """Back to the head of their lanes, in order, as ``queued``; their pacing given back.

        A lane that gets ids back has its ticket armed if free (this run's own lane with
        this run's job id, so it keeps the ticket; the other lane with a fresh job).
        """
        jobs = {**fresh_jobs(self.keys, self.lane), self.lane.kind: self.job}
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.queue_transition(
                pipe, sub.ids, State.QUEUED, [State.SUBMITTING], fields=fields
            )
            back = put_back(
                pipe,
                self.keys,
                self.pair,
                sub.ids,
                batch=sub.bid,
                jobs=jobs,
                refund_ms=pace.interval_ms,
            )
            batches.drop(pipe, self.ctx, sub.bid)
            if extra is not None:
                extra(pipe)
            answers = pipe.execute()
        armed = back.result(answers).armed
        arms = [Arm(lane, job) for lane, job in armed.items() if lane != self.lane]
        enqueue_tickets(self.ctx, arms)

    def unknown(self, sub: Submission, pace: Pace, error: str) -> None:
        """It may have been stored: ``unknown``, batch to ``verify``; never resent blind."""
        k, now = self.keys, self.ctx.now_ms()
        check_at = now + int(1000 * max(1.0, pace.poll_s))
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            self.ctx.store.queue_transition(
                pipe, sub.ids, State.UNKNOWN, [State.SUBMITTING], fields={"error": error}
            )
            pipe.zrem(k.inflight, sub.bid)
            pipe.zadd(k.verify, {sub.bid: check_at})
            # the request is over on this side: recovery's grace counts from here
            pipe.hset(k.batch(sub.bid), "doubted", now)
            pipe.execute()
        log.warning("dispatch.outcome_unknown", **self._where(sub), error=error)
