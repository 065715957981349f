"""Verification: a batch whose outcome is unknown is looked for at the gateway before
anything in it is sent again (docs/design.md, invariant 2).

A batch reaches ``Keys.verify`` when its request timed out or failed after it went out
(:mod:`relay.dispatch.submit`), or when its worker died (:mod:`relay.dispatch.recovery`).
:func:`verify_due` takes each due batch (:func:`relay.dispatch.batch.take`: its score moves
to a lease time, so one process works on it and a dead one's batch comes back), then:

1. messages still ``submitting`` become ``unknown``; never-sent ``queued`` ones go back
   (:func:`relay.dispatch.recovery.settle_claimed`);
2. one ``getallsms`` (narrowed when capped) around the claim time; ``unknown`` messages
   found there (:mod:`relay.reconcile.lookup`) get their ``sms_id`` and become
   ``submitted``, joining ``pending`` for the reconciler (urgent ones ``urgent-waiting``);
3. messages not found, once the grace has passed (``RELAY_VERIFY_GRACE`` times the
   device's ``delaybetweenrequest``, at least ``RELAY_VERIFY_MIN_GRACE`` s, counted from the
   moment the request was over on relay's side — the client's time-out or error, or the
   recovery of a dead worker's batch — since a slow gateway may store a request after the
   client gave up on it), go back to the FRONT of their lane as ``queued`` with
   ``attempts`` + 1; after ``RELAY_MAX_ATTEMPTS`` they end ``rejected``. Before the grace
   the check is rescheduled.

When the gateway cannot be asked, the batch waits and is checked again later (capped
backoff): nothing in doubt is ever resubmitted blind. Safe to call from many processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.context import Context
from relay.devices import poll_delay
from relay.dispatch import batch as batches
from relay.dispatch.batch import Batch
from relay.dispatch.recovery import (
    BATCH_LIMIT,
    Doubt,
    load_doubts,
    return_to_lanes,
    settle_claimed,
)
from relay.errors import GatewayError
from relay.log import get_logger
from relay.processes import lease_ttl_ms
from relay.reconcile.lookup import (
    Fetch,
    fetch_records,
    find_matches,
    record_matches,
    unmatched_pending,
)
from relay.reconcile.matching import Observation, Submitted, bucket
from relay.results.history import record_latency
from relay.states import State
from relay.store import read_fields

log = get_logger(__name__)

RETRY_BASE = 2.0
RETRY_MAX = 60.0
BUSY_RETRY_MS = 500
"""How soon a verification put off by a batch still in flight on its device is tried again."""


def verify_due(ctx: Context, *, limit: int = BATCH_LIMIT) -> int:
    """Verify every batch in ``Keys.verify`` due now; returns how many were settled.

    A settled batch is gone from ``verify``: each of its messages found (``submitted``),
    put back (``queued``) or ``rejected``. Others are rescheduled.
    """
    now = ctx.now_ms()
    settled = 0
    due: Any = ctx.conn.zrangebyscore(ctx.keys.verify, "-inf", now, start=0, num=limit)
    for bid in [b.decode() for b in due]:
        until = now + lease_ttl_ms(ctx.settings)
        if not batches.take(ctx, ctx.keys.verify, ctx.keys.verify, bid, due_ms=now, score_ms=until):
            continue
        batch = batches.load(ctx, bid)
        if batch is None:  # settled by its worker, or taken over as <bid>.r
            log.info("recovery.batch_gone", batch=bid)
            ctx.conn.zrem(ctx.keys.verify, bid)
            continue
        try:
            settled += verify_batch(ctx, batch)
        except Exception:
            log.exception("recovery.verify_crashed", batch=bid, dev=batch.pair.device)
    return settled


def verify_batch(ctx: Context, batch: Batch) -> bool:
    """Verify one batch taken from ``verify`` (see the module docstring); True when settled."""
    doubts = settle_claimed(ctx, batch, load_doubts(ctx, batch))
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
    if doubts and ctx.now_ms() < grace_end_ms(ctx, batch):
        ctx.conn.zadd(ctx.keys.verify, {batch.bid: grace_end_ms(ctx, batch)})
        return False
    return_to_lanes(ctx, batch, doubts, count_attempt=True, settle=True)
    log.info("recovery.batch_settled", batch=batch.bid, dev=batch.pair.device, resent=len(doubts))
    return True


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
    dev, margin = batch.pair.device, ctx.settings.match_window
    claimed = batch.claimed_ms / 1000
    asked_ms = ctx.now_ms()
    fetch = fetch_records(ctx, dev, claimed - margin, claimed + margin)
    if _twin_in_flight(ctx, dev, asked_ms, unmatched):
        raise _DeviceBusy
    _match_sure_first(ctx, dev, fetch, claimed, margin)
    found = find_matches(ctx, dev, unmatched, fetch, window=margin)
    pairs = [(mid, Observation.of(record)) for mid, record in found.items()]
    return known | record_matches(ctx, dev, pairs, [State.UNKNOWN])


def _twin_in_flight(ctx: Context, dev: int, ms: int, doubts: Sequence[Submitted]) -> bool:
    """Whether a batch of ``dev`` claimed before ``ms`` and still being submitted holds a
    message identical to one of ``doubts`` (its record may be in the look-up already)."""
    bids: Any = ctx.conn.zrangebyscore(ctx.keys.inflight, "-inf", ms)
    flying = batches.load_many(ctx, [b.decode() for b in bids])
    ids = [i for b in flying if b is not None and b.pair.device == dev for i in b.ids]
    if not ids:
        return False
    wanted = {bucket(d.sendto, d.body, d.customerid) for d in doubts}
    rows = read_fields(ctx.conn, ctx.keys, ids, ["sendto", "body", "customerid"])
    return any(
        bucket(sendto, body, int(cid) if cid else None) in wanted
        for sendto, body, cid in rows
        if sendto is not None and body is not None
    )


def _match_sure_first(ctx: Context, dev: int, fetch: Fetch, claimed: float, margin: float) -> None:
    """Give the device's submitted-but-unmatched messages near ``claimed`` their records."""
    lo, hi = int((claimed - 2 * margin) * 1000), int((claimed + 2 * margin) * 1000)
    sure = unmatched_pending(ctx, dev, lo, hi)
    if not sure:
        return
    found = find_matches(ctx, dev, sure, fetch, window=margin)
    pairs = [(mid, Observation.of(record)) for mid, record in found.items()]
    record_matches(ctx, dev, pairs, [State.SUBMITTED, State.SENT])


def _mark_found(ctx: Context, batch: Batch, found: Sequence[Doubt]) -> None:
    """Found at the gateway: ``submitted``, pending the reconciler."""
    if not found:
        return
    k, now, dev = ctx.keys, ctx.now_ms(), batch.pair.device
    with ctx.conn.pipeline(transaction=True) as pipe:
        ctx.store.queue_transition(
            pipe, [d.id for d in found], State.SUBMITTED, [State.UNKNOWN], add_index=k.pending(dev)
        )
        pipe.sadd(k.pending_devices, dev)
        urgent = {d.id: now for d in found if d.urgent}
        if urgent:
            pipe.zadd(k.urgent_waiting, urgent)
            # stored by the time the request was over (the dashboard's p50/p99)
            record_latency(ctx, pipe, list(urgent), batch.doubted_ms or now)
        pipe.execute()
    log.info("recovery.found", batch=batch.bid, dev=dev, found=len(found))


def _retry_later(ctx: Context, batch: Batch, error: str) -> None:
    """The gateway could not be asked: check again after a capped backoff."""
    delay = min(RETRY_MAX, RETRY_BASE * 2 ** min(batch.tries, 10))
    with ctx.conn.pipeline(transaction=True) as pipe:
        pipe.hincrby(ctx.keys.batch(batch.bid), "verify_tries", 1)
        pipe.zadd(ctx.keys.verify, {batch.bid: ctx.now_ms() + int(delay * 1000)})
        pipe.execute()
    log.warning(
        "recovery.gateway_unavailable",
        batch=batch.bid,
        dev=batch.pair.device,
        retry_in_s=delay,
        error=error,
    )


def grace_end_ms(ctx: Context, batch: Batch) -> int:
    """When a message of ``batch`` not found at the gateway may be sent again.

    The grace counts from the moment the request was over on relay's side (the client's
    time-out or error, or the recovery of a dead worker's batch): a slow gateway may still
    store a request it received then. Without that moment recorded, it counts from the
    claim and includes the request's whole time-out.
    """
    s = ctx.settings
    grace = max(s.verify_min_grace, s.verify_grace * poll_delay(ctx, batch.pair.device))
    if batch.doubted_ms:
        return max(batch.doubted_ms, batch.claimed_ms) + int(grace * 1000)
    return batch.claimed_ms + int((grace + s.gateway_timeout) * 1000)
