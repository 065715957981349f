"""Submission recovery: batches whose outcome is unknown are looked for at the gateway
before anything in them is sent again (DESIGN invariants 1 and 2).

A batch (``Keys.batch(bid)``: dev, sim, kind, ids, claimed ms, worker; written by
``lua/claim.lua``) is in ``Keys.inflight`` while a worker submits it. Two ways lead here:

- the worker got :class:`~relay.errors.OutcomeUnknown`: its messages are ``unknown`` and the
  batch moved to ``Keys.verify`` (score: when the check may run);
- the worker died between claim and outcome: :func:`recover_inflight` takes batches older
  than ``RELAY_INFLIGHT_TIMEOUT`` (sooner when the worker's heartbeat went silent) from
  ``inflight`` to ``verify`` (``lua/take.lua``, so one process takes each).

:func:`verify_due` then, for each due batch (taken with ``lua/take.lua``: its score moves
to a lease time, so one process works on it and a dead one's batch comes back):

1. messages still ``submitting`` become ``unknown``; messages still ``queued`` were claimed
   but never sent (the worker died before its first transition): they go straight back to
   the head of their lane, no attempt counted;
2. one ``getallsms`` (narrowed when capped) around the claim time; ``unknown`` messages
   found there (:mod:`relay.reconcile.matching`) get their ``sms_id`` and become ``submitted``,
   joining ``pending`` for the reconciler (urgent ones ``urgent-waiting``);
3. messages not found, once the grace has passed (``RELAY_VERIFY_GRACE`` times the
   device's ``delaybetweenrequest``, at least :data:`MIN_GRACE` s, counted from the moment
   the request was over on relay's side — the client's time-out or error, or the recovery
   of a dead worker's batch — since a slow gateway may store a request after the client
   gave up on it), go back to the FRONT of their lane as ``queued`` with ``attempts`` + 1
   and the lane's ticket armed (``lua/requeue.lua``, in one MULTI with the transition);
   after ``RELAY_MAX_ATTEMPTS`` they end ``rejected``. Before the grace the
   check is rescheduled.

When the gateway cannot be asked, the batch waits and is checked again later (capped
backoff): nothing in doubt is ever resubmitted blind. Both functions are safe to call from
many processes at once (``relay.run.sweep`` calls them every few seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from relay import scripts
from relay.context import Context
from relay.dispatch.tickets import Arm, enqueue_tickets, new_job_id
from relay.errors import GatewayError
from relay.keys import BULK, URGENT
from relay.log import get_logger
from relay.reconcile.matching import (
    Fetch,
    Observation,
    Submitted,
    customer_key,
    fetch_records,
    find_matches,
    normalise_body,
    phone_key,
    record_matches,
)
from relay.reconcile.reconciler import load_tracked, read_records
from relay.results.history import record_latency
from relay.states import State

_log = get_logger("relay.dispatch.recovery")

MIN_GRACE = 3.0
"""Fewest seconds after the claim before a batch not found at the gateway is resent."""
RETRY_BASE = 2.0
RETRY_MAX = 60.0
BATCH_LIMIT = 100
"""Most batches one call looks at."""
WORKER_SILENT_S = 15.0
"""A worker whose heartbeat is this old is dead: its batches need not wait the timeout."""
RECOVERED_SUFFIX = ".r"
"""Added to the id of a batch taken from a silent worker."""

_WAITING = (State.QUEUED, State.SCHEDULED)
_FIELDS = (
    "state",
    "sms_id",
    "attempts",
    "sendto",
    "body",
    "customerid",
    "sim",
    "urgent",
    "t_queued",
    "t_scheduled",
)


@dataclass(frozen=True)
class Batch:
    """A claimed batch as ``lua/claim.lua`` recorded it."""

    bid: str
    dev: int
    sim: int
    ids: tuple[str, ...]
    claimed_ms: int
    tries: int = 0
    doubted_ms: int = 0
    """When the request was known to be over on relay's side (0: not recorded)."""

    @property
    def origin(self) -> str:
        """The id the batch was claimed under (its messages' ``batch`` field)."""
        return self.bid.removesuffix(RECOVERED_SUFFIX)

    @classmethod
    def from_hash(cls, bid: str, raw: Mapping[bytes, bytes]) -> Batch | None:
        """The batch, or None when its record is gone or unreadable."""
        h = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            ids = tuple(i for i in h.get("ids", "").split(",") if i)
            return cls(
                bid,
                int(h["dev"]),
                int(h["sim"]),
                ids,
                int(h["claimed"]),
                int(h.get("verify_tries") or 0),
                int(h.get("doubted") or 0),
            )
        except (KeyError, ValueError):
            _log.error("recovery.batch_unreadable", batch=bid, fields=sorted(h))
            return None


@dataclass(frozen=True)
class Doubt:
    """One message of a batch being verified."""

    id: str
    state: str | None
    sms_id: str | None
    attempts: int
    urgent: bool
    waiting_since_ms: int
    submitted: Submitted

    @classmethod
    def of(cls, msg_id: str, claimed_s: float, vals: Sequence[bytes | None]) -> Doubt:
        h = {k: v.decode() if v is not None else "" for k, v in zip(_FIELDS, vals, strict=True)}
        customer, sim = h["customerid"], h["sim"]
        submitted = Submitted(
            msg_id,
            h["sendto"],
            h["body"],
            int(customer) if customer else None,
            claimed_s,
            int(sim) if sim else None,
        )
        waiting = max(int(h["t_queued"] or 0), int(h["t_scheduled"] or 0))
        return cls(
            msg_id,
            h["state"] or None,
            h["sms_id"] or None,
            int(h["attempts"] or 0),
            h["urgent"] == "1",
            waiting,
            submitted,
        )

    def with_state(self, state: str) -> Doubt:
        return replace(self, state=state)


# --- dead workers ------------------------------------------------------------------------


def recover_inflight(ctx: Context, *, limit: int = BATCH_LIMIT) -> int:
    """Move batches of dead workers from ``inflight`` to verification.

    A batch is taken once in flight longer than ``RELAY_INFLIGHT_TIMEOUT``, or earlier when
    its worker is known dead: its heartbeat in ``Keys.processes`` (RQ workers beat under the
    name the batch records) is :data:`WORKER_SILENT_S` old and the batch is older than the
    gateway timeout (so any request it made is over). A worker with no heartbeat entry (a
    process outside RQ) is only timed out. The batch is renamed ``<bid>.r`` as it moves (so
    a worker that wakes up late cannot drop it), its ``submitting`` messages become
    ``unknown``, never-sent ``queued`` ones go back to their lane, and it is due in
    ``verify`` at once. Returns the number of batches taken.
    """
    now = ctx.now_ms()
    timed_out = now - int(ctx.settings.inflight_timeout * 1000)
    over = now - int((ctx.settings.gateway_timeout + 5) * 1000)  # any request made is over
    rows: Any = ctx.conn.zrangebyscore(
        ctx.keys.inflight, "-inf", max(timed_out, over), start=0, num=limit, withscores=True
    )
    young = [bid.decode() for bid, score in rows if score > timed_out]
    dead = _of_dead_workers(ctx, young) if young else set()
    taken = 0
    for raw, score in rows:
        bid = raw.decode()
        if score > timed_out and bid not in dead:
            continue
        new = f"{bid}{RECOVERED_SUFFIX}"
        keys = [ctx.keys.inflight, ctx.keys.verify, ctx.keys.batch(bid), ctx.keys.batch(new)]
        if not scripts.run(ctx.conn, "take", keys, [bid, int(score), now, new]):
            continue
        taken += 1
        ctx.conn.hset(ctx.keys.batch(new), "doubted", now)  # its worker is gone or silent
        batch = _load_batch(ctx, new)
        _log.warning(
            "recovery.inflight_stale",
            batch=bid,
            dev=batch and batch.dev,
            size=batch and len(batch.ids),
            age_s=(now - score) / 1000,
            worker_dead=bid in dead,
        )
        if batch is not None:
            _settle_claimed(ctx, batch, _load_doubts(ctx, batch))
    return taken


def _of_dead_workers(ctx: Context, bids: Sequence[str]) -> set[str]:
    """Which of ``bids`` were claimed by a worker whose heartbeat went silent."""
    pipe = ctx.conn.pipeline(transaction=False)
    for bid in bids:
        pipe.hget(ctx.keys.batch(bid), "worker")
    workers = dict(zip(bids, pipe.execute(), strict=True))
    names = sorted({w for w in workers.values() if w})
    if not names:
        return set()
    beats = dict(zip(names, ctx.conn.hmget(ctx.keys.processes, names), strict=True))
    silent = ctx.now_ms() - int(WORKER_SILENT_S * 1000)
    return {bid for bid, w in workers.items() if w and _seen_ms(beats[w]) < silent}


def _seen_ms(raw: bytes | None) -> int:
    """When a heartbeat was written (ms); none (or an odd one) counts as alive: never dead."""
    try:
        return int(json.loads(raw or b"")["seen"])
    except (ValueError, KeyError, TypeError):
        return 2**62


# --- verification ------------------------------------------------------------------------


def verify_due(ctx: Context, *, limit: int = BATCH_LIMIT) -> int:
    """Verify every batch in ``Keys.verify`` due now; returns how many were settled.

    A settled batch is gone from ``verify``: each of its messages found (``submitted``),
    put back (``queued``) or ``rejected``. Others are rescheduled.
    """
    now = ctx.now_ms()
    settled = 0
    for bid in [b.decode() for b in _zrange_due(ctx, ctx.keys.verify, now, limit)]:
        lease_until = now + _lease_ms(ctx)
        if not scripts.run(ctx.conn, "take", [ctx.keys.verify] * 2, [bid, now, lease_until]):
            continue
        batch = _load_batch(ctx, bid)
        if batch is None:  # settled by its worker, or taken over as <bid>.r
            _log.info("recovery.batch_gone", batch=bid)
            ctx.conn.zrem(ctx.keys.verify, bid)
            continue
        try:
            settled += verify_batch(ctx, batch)
        except Exception:
            _log.exception("recovery.verify_crashed", batch=bid, dev=batch.dev)
    return settled


def verify_batch(ctx: Context, batch: Batch) -> bool:
    """Verify one batch taken from ``verify`` (see the module docstring); True when settled."""
    doubts = _settle_claimed(ctx, batch, _load_doubts(ctx, batch))
    doubts = [d for d in doubts if d.state == State.UNKNOWN]
    if doubts:
        try:
            found = _look_up(ctx, batch, doubts)
        except GatewayError as exc:
            _retry_later(ctx, batch, str(exc))
            return False
        except _DeviceBusy:
            ctx.conn.zadd(ctx.keys.verify, {batch.bid: ctx.now_ms() + BUSY_RETRY_MS})
            return False
        _mark_found(ctx, batch, [d for d in doubts if d.id in found])
        doubts = [d for d in doubts if d.id not in found]
    if doubts and not _grace_over(ctx, batch):
        ctx.conn.zadd(ctx.keys.verify, {batch.bid: _grace_end_ms(ctx, batch)})
        return False
    _put_back(ctx, batch, doubts, count_attempt=True, drop=True)
    _log.info("recovery.batch_settled", batch=batch.bid, dev=batch.dev, resent=len(doubts))
    return True


BUSY_RETRY_MS = 500
"""How soon a verification put off by a batch still in flight on its device is tried again."""


class _DeviceBusy(Exception):
    """A batch claimed before the look-up, with a twin of a doubt, is still in flight."""


def _look_up(ctx: Context, batch: Batch, doubts: Sequence[Doubt]) -> set[str]:
    """Ids of ``doubts`` the gateway holds (recorded with their ``sms_id``).

    A gateway record may belong to a doubtful message or to an identical one that surely
    was stored. The sure ones get first pick: their unmatched records are matched before
    the doubts, and while a batch claimed before the look-up with an identical message is
    still in flight on the device (about to become sure) the check is put off.
    Otherwise a doubt could take a twin's record, be taken for stored, and never be sent.
    """
    known = {d.id for d in doubts if d.sms_id}
    unmatched = [d.submitted for d in doubts if not d.sms_id]
    if not unmatched:
        return known
    margin = ctx.settings.match_window
    claimed = batch.claimed_ms / 1000
    asked_ms = ctx.now_ms()
    fetch = fetch_records(ctx, batch.dev, claimed - margin, claimed + margin)
    if _twin_in_flight(ctx, batch.dev, asked_ms, unmatched):
        raise _DeviceBusy
    _match_sure_first(ctx, batch.dev, fetch, claimed, margin)
    found = find_matches(ctx, batch.dev, unmatched, fetch, window=margin)
    pairs = [(mid, Observation.of(record)) for mid, record in found.items()]
    return known | record_matches(ctx, batch.dev, pairs, [State.UNKNOWN])


def _twin_in_flight(ctx: Context, dev: int, ms: int, doubts: Sequence[Submitted]) -> bool:
    """Whether a batch of ``dev`` claimed before ``ms`` and still being submitted holds a
    message identical to one of ``doubts`` (its record may be in the look-up already)."""
    bids: Any = ctx.conn.zrangebyscore(ctx.keys.inflight, "-inf", ms)
    if not bids:
        return False
    pipe = ctx.conn.pipeline(transaction=False)
    for bid in bids:
        pipe.hmget(ctx.keys.batch(bid.decode()), ["dev", "ids"])
    ids = [
        i
        for dev_raw, ids_raw in pipe.execute()
        if dev_raw is not None and int(dev_raw) == dev and ids_raw
        for i in ids_raw.decode().split(",")
    ]
    if not ids:
        return False
    wanted = {_twin_key(d.sendto, d.body, d.customerid) for d in doubts}
    rows = read_records(ctx, ids, ["sendto", "body", "customerid"])
    return any(
        _twin_key(str(sendto), str(body), int(cid) if cid not in (None, "") else None) in wanted
        for sendto, body, cid in rows
        if sendto is not None and body is not None
    )


def _twin_key(sendto: str, body: str, customerid: int | None) -> tuple[str, str, int | None]:
    return phone_key(sendto), normalise_body(body), customer_key(customerid)


def _match_sure_first(ctx: Context, dev: int, fetch: Fetch, claimed: float, margin: float) -> None:
    """Give the device's submitted-but-unmatched messages near ``claimed`` their records."""
    lo, hi = int((claimed - 2 * margin) * 1000), int((claimed + 2 * margin) * 1000)
    rows: Any = ctx.conn.zrangebyscore(ctx.keys.pending(dev), lo, hi, withscores=True)
    tracked = load_tracked(ctx, [(m.decode(), int(score)) for m, score in rows])
    sure = [t.as_submitted() for t in tracked if not t.done and t.sms_id is None]
    if not sure:
        return
    found = find_matches(ctx, dev, sure, fetch, window=margin)
    pairs = [(mid, Observation.of(record)) for mid, record in found.items()]
    record_matches(ctx, dev, pairs, [State.SUBMITTED, State.SENT])


def _mark_found(ctx: Context, batch: Batch, found: Sequence[Doubt]) -> None:
    """Found at the gateway: ``submitted``, pending the reconciler."""
    if not found:
        return
    k, now = ctx.keys, ctx.now_ms()
    with ctx.conn.pipeline(transaction=True) as pipe:
        ctx.store.transition(
            [d.id for d in found],
            State.SUBMITTED,
            [State.UNKNOWN],
            add_index=k.pending(batch.dev),
            client=pipe,
        )
        pipe.sadd(k.pending_devices, batch.dev)
        urgent = {d.id: now for d in found if d.urgent}
        if urgent:
            pipe.zadd(k.urgent_waiting, urgent)
            # stored by the time the request was over (the dashboard's p50/p99)
            record_latency(ctx, pipe, list(urgent), batch.doubted_ms or now)
        pipe.execute()
    _log.info("recovery.found", batch=batch.bid, dev=batch.dev, found=len(found))


def _settle_claimed(ctx: Context, batch: Batch, doubts: list[Doubt]) -> list[Doubt]:
    """``submitting`` → ``unknown``; claimed-but-never-sent messages back to their lane.

    A message still ``queued`` (or ``scheduled``) since before the claim was popped from
    its lane by a worker that died before its first transition: nothing was sent. One
    queued again after the claim is already back in a lane (put back by us or by the late
    worker) and is left alone, so this is safe to repeat.
    """
    submitting = [d.id for d in doubts if d.state == State.SUBMITTING]
    moved = set(
        ctx.store.transition(
            submitting,
            State.UNKNOWN,
            [State.SUBMITTING],
            fields={"error": "worker lost during submission"},
        )
    )
    never_sent = [
        d for d in doubts if d.state in _WAITING and d.waiting_since_ms <= batch.claimed_ms
    ]
    if never_sent:
        _put_back(ctx, batch, never_sent, count_attempt=False, drop=False)
    return [
        d.with_state(State.UNKNOWN) if d.id in moved else d
        for d in doubts
        if d.state not in _WAITING
    ]


def _put_back(
    ctx: Context, batch: Batch, doubts: Sequence[Doubt], *, count_attempt: bool, drop: bool
) -> None:
    """To the head of their lanes as ``queued`` (or ``rejected`` after the last attempt).

    With ``drop`` the batch record leaves ``verify``/``inflight`` in the same MULTI.
    """
    k, limit = ctx.keys, ctx.settings.max_attempts
    give_up = [d for d in doubts if count_attempt and d.attempts + 1 >= limit]
    again = [d for d in doubts if d not in give_up]
    ids = [d.id for d in again]
    jobs = {kind: new_job_id(kind, batch.dev, batch.sim) for kind in (URGENT, BULK)}
    with ctx.conn.pipeline(transaction=True) as pipe:
        per = [{"attempts": d.attempts + int(count_attempt), "batch": batch.origin} for d in again]
        allowed = [State.UNKNOWN] if count_attempt else list(_WAITING)
        ctx.store.transition(ids, State.QUEUED, allowed, per_message=per, client=pipe)
        keys = [
            k.lane(URGENT, batch.dev, batch.sim),
            k.lane(BULK, batch.dev, batch.sim),
            k.ticket(URGENT, batch.dev, batch.sim),
            k.ticket(BULK, batch.dev, batch.sim),
            k.inflight,
            k.batch(batch.bid),
            k.pace(batch.dev, batch.sim),
            *(k.msg(i) for i in ids),
        ]
        # requeue.lua puts back messages whose `batch` names ARGV[1]: the original id.
        args: list[Any] = [batch.origin, jobs[URGENT], jobs[BULK], 0, int(drop), *ids]
        at = len(pipe)
        scripts.run(pipe, "requeue", keys, args)
        _reject(ctx, pipe, give_up)
        if drop:
            pipe.zrem(k.verify, batch.bid)
        result = pipe.execute()
    _, _, set_u, set_b = result[at]
    arms = [
        Arm(kind, batch.dev, batch.sim, jobs[kind])
        for kind, was_set in ((URGENT, set_u), (BULK, set_b))
        if int(was_set)
    ]
    enqueue_tickets(ctx.conn, k, arms)
    if again or give_up:
        _log.warning(
            "recovery.put_back",
            batch=batch.bid,
            dev=batch.dev,
            sim=batch.sim,
            requeued=len(again),
            rejected=len(give_up),
            attempt=count_attempt,
        )


def _reject(ctx: Context, pipe: Any, give_up: Sequence[Doubt]) -> None:
    if not give_up:
        return
    error = f"the gateway did not store it in {ctx.settings.max_attempts} attempts"
    per = [{"attempts": d.attempts + 1} for d in give_up]
    ctx.store.transition(
        [d.id for d in give_up],
        State.REJECTED,
        [State.UNKNOWN],
        fields={"error": error},
        per_message=per,
        client=pipe,
    )
    pipe.zadd(ctx.keys.dead, dict.fromkeys((d.id for d in give_up), ctx.now_ms()))


def _retry_later(ctx: Context, batch: Batch, error: str) -> None:
    """The gateway could not be asked: check again after a capped backoff."""
    delay = min(RETRY_MAX, RETRY_BASE * 2 ** min(batch.tries, 10))
    with ctx.conn.pipeline(transaction=True) as pipe:
        pipe.hincrby(ctx.keys.batch(batch.bid), "verify_tries", 1)
        pipe.zadd(ctx.keys.verify, {batch.bid: ctx.now_ms() + int(delay * 1000)})
        pipe.execute()
    _log.warning(
        "recovery.gateway_unavailable",
        batch=batch.bid,
        dev=batch.dev,
        retry_in_s=delay,
        error=error,
    )


# --- reading -----------------------------------------------------------------------------


def _zrange_due(ctx: Context, key: str, max_score: int, limit: int) -> list[bytes]:
    rows: Any = ctx.conn.zrangebyscore(key, "-inf", max_score, start=0, num=limit)
    return list(rows)


def _load_batch(ctx: Context, bid: str) -> Batch | None:
    raw: Any = ctx.conn.hgetall(ctx.keys.batch(bid))
    return Batch.from_hash(bid, raw) if raw else None


def _load_doubts(ctx: Context, batch: Batch) -> list[Doubt]:
    pipe = ctx.conn.pipeline(transaction=False)
    for msg_id in batch.ids:
        pipe.hmget(ctx.keys.msg(msg_id), _FIELDS)
    claimed = batch.claimed_ms / 1000
    rows = zip(batch.ids, pipe.execute(), strict=True)
    return [Doubt.of(msg_id, claimed, vals) for msg_id, vals in rows if vals[0] is not None]


def poll_delay(ctx: Context, dev: int) -> float:
    """The device's ``delaybetweenrequest`` as last synced, else the settings' default."""
    raw = ctx.conn.hget(ctx.keys.devices, str(dev))
    try:
        value = json.loads(raw)["delaybetweenrequest"] if raw else None
        return float(value) if value is not None else ctx.settings.default_poll_interval
    except (ValueError, TypeError, KeyError):
        return ctx.settings.default_poll_interval


def _grace_end_ms(ctx: Context, batch: Batch) -> int:
    """When a message of ``batch`` not found at the gateway may be sent again.

    The grace counts from the moment the request was over on relay's side (the client's
    time-out or error, or the recovery of a dead worker's batch): a slow gateway may still
    store a request it received then. Without that moment recorded, it counts from the
    claim and includes the request's whole time-out.
    """
    grace = max(MIN_GRACE, ctx.settings.verify_grace * poll_delay(ctx, batch.dev))
    if batch.doubted_ms:
        return max(batch.doubted_ms, batch.claimed_ms) + int(grace * 1000)
    return batch.claimed_ms + int((grace + ctx.settings.gateway_timeout) * 1000)


def _grace_over(ctx: Context, batch: Batch) -> bool:
    return ctx.now_ms() >= _grace_end_ms(ctx, batch)


def _lease_ms(ctx: Context) -> int:
    s = ctx.settings
    return int((s.gateway_timeout * (s.gateway_retries + 1) + 30) * 1000)
