"""Webhooks: each event of the stream POSTed to ``RELAY_WEBHOOK_URL``, signed, at least once.

**Pump** (:func:`pump`, called every ~200 ms by each worker's scheduler thread and by
``relay run``): when ``RELAY_WEBHOOK_URL`` is set, reads the events stream as consumer group
``webhook`` (taking over entries left unacknowledged for :data:`RECLAIM_IDLE_MS`: a pump or
a job that died) and enqueues RQ jobs on ``Keys.webhook_queue`` (JSON serializer), a few
events each, retried by RQ with backoff (``RELAY_WEBHOOK_RETRIES`` times, 1, 2, 4 ... 120 s
apart).

**Job** (:func:`deliver`, run by a relay worker): POSTs each event still unacknowledged as
its own JSON body, :meth:`relay.results.events.Event.to_dict`::

    {"event_id": "1718000000000-0", "event": "message", "id": "…", "state": "delivered",
     "prev": "sent", "final": true, "at": "2024-06-10T06:13:20.000+00:00",
     "at_ms": 1718000000000, "device_id": 260, "sim": 0, "customerid": null,
     "sms_id": 62800001, "status": 7, "statustitle": "delivered", "error": null,
     "urgent": false, "lastseen": null, "lastseen_ms": null}

(device events, ``event`` ``device.offline`` / ``device.online``, come the same way: see
:mod:`relay.results.events`)

with the headers ``Content-Type: application/json``, ``X-Relay-Event-Id`` (the stream entry
id, unique: deduplicate on it), ``X-Relay-Timestamp`` (Unix seconds of the POST) and, when
``RELAY_WEBHOOK_SECRET`` is set, ``X-Relay-Signature: sha256=<hex>``: the HMAC-SHA256 of the
raw body keyed with the secret. A 2xx answer within ``RELAY_WEBHOOK_TIMEOUT`` is a delivery
and acknowledges the entry (``XACK``); anything else fails the job, which RQ retries (events
already delivered are skipped). Delivery is at least once and not ordered: receivers
deduplicate on the event id and order by ``at_ms``.

**Receivers** check the signature over the exact bytes received::

    from relay.results.webhook import verify_signature
    if not verify_signature(secret, request_body, headers["X-Relay-Signature"]):
        return 401
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from relay.context import Context, current
from relay.errors import WebhookFailed
from relay.log import get_logger
from relay.results.events import Event, ack, pending_ids, read_events

log = get_logger(__name__)

GROUP = "webhook"
"""The consumer group webhooks read the events stream with."""
CONSUMER = "pump"
JOB_FUNC = "relay.webhook.deliver"
EVENTS_PER_JOB = 10
MAX_EVENTS_PER_PUMP = 1000
RETRY_INTERVALS = [1, 2, 4, 8, 16, 32, 60, 120]
RECLAIM_IDLE_MS = 900_000
"""Entries unacknowledged this long (ms) are enqueued again: longer than a job's retries."""
RECLAIM_EVERY_S = 30.0
"""How often one process looks for such entries (reading new ones happens on every pump)."""
SIGNATURE_HEADER = "X-Relay-Signature"
USER_AGENT = "relay-sms-webhook"


# --- signatures --------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Relay-Signature`` value of ``body``: ``sha256=`` + hex HMAC-SHA256."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` (``X-Relay-Signature``) signs the raw ``body`` with ``secret``.

    For receivers: pass the request body exactly as received (before any JSON parsing).
    Compares in constant time; a missing or malformed header is False.
    """
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


# --- the pump ----------------------------------------------------------------------------


def queue(ctx: Context) -> Queue:
    """The RQ queue of webhook jobs (JSON serializer, never pickle)."""
    return Queue(ctx.keys.webhook_queue, connection=ctx.conn, serializer=JSONSerializer)


def _retry(ctx: Context) -> Retry | None:
    """RQ's retry policy: waits of 1, 2, 4 ... 120 s (then 120 s), one per retry.

    RQ picks retry ``n`` of ``max`` as ``interval[len - retries_left]``, so the list given
    has exactly ``max`` entries to start from its first wait.
    """
    retries = ctx.settings.webhook_retries
    if retries <= 0:
        return None
    waits = (RETRY_INTERVALS + [RETRY_INTERVALS[-1]] * retries)[:retries]
    return Retry(max=retries, interval=waits)


def pump(
    ctx: Context,
    *,
    max_events: int = MAX_EVENTS_PER_PUMP,
    per_job: int = EVENTS_PER_JOB,
    reclaim_idle_ms: int = RECLAIM_IDLE_MS,
) -> int:
    """Enqueue webhook jobs for new (and long unacknowledged) events; returns how many events.

    Does nothing when ``RELAY_WEBHOOK_URL`` is not set. Safe in many processes at once:
    the consumer group hands each entry to one reader.
    """
    if not ctx.settings.webhook_url:
        return 0
    reclaim = _reclaim_due(ctx)
    total = 0
    while total < max_events:
        count = min(per_job * 10, max_events - total)
        idle = reclaim_idle_ms if reclaim else None
        events = read_events(ctx, GROUP, CONSUMER, count, min_idle_ms=idle)
        reclaim = False
        if not events:
            break
        enqueue_jobs(ctx, events, per_job=per_job)
        total += len(events)
        if len(events) < count:
            break
    return total


_last_reclaim: dict[str, float] = {}


def _reclaim_due(ctx: Context) -> bool:
    """Whether this process should look for stale entries now (every :data:`RECLAIM_EVERY_S`).

    Taking over scans the group's pending list; new entries are read on every call.
    """
    now = ctx.clock.now()
    if now - _last_reclaim.get(ctx.keys.prefix, float("-inf")) < RECLAIM_EVERY_S:
        return False
    _last_reclaim[ctx.keys.prefix] = now
    return True


def enqueue_jobs(ctx: Context, events: Sequence[Event], *, per_job: int = EVENTS_PER_JOB) -> int:
    """Enqueue ``events`` as RQ jobs of ``per_job`` events each; returns the number of jobs."""
    q, retry = queue(ctx), _retry(ctx)
    timeout = int(ctx.settings.webhook_timeout * per_job + 30)
    datas = [
        Queue.prepare_data(
            JOB_FUNC,
            args=([e.to_dict() for e in events[i : i + per_job]],),
            job_id=ctx.keys.job_id("webhook", uuid.uuid4().hex[:16]),
            timeout=timeout,
            result_ttl=0,
            failure_ttl=7 * 86400,
            retry=retry,
            description=f"webhook {events[i].event_id} (+{len(events[i : i + per_job]) - 1})",
        )
        for i in range(0, len(events), per_job)
    ]
    with ctx.conn.pipeline() as pipe:
        q.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
    log.debug("webhook.enqueued", events=len(events), jobs=len(datas))
    return len(datas)


# --- the job -----------------------------------------------------------------------------

_clients: dict[float, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(timeout: float) -> httpx.Client:
    """One pooled HTTP client per process (and timeout)."""
    with _clients_lock:
        client = _clients.get(timeout)
        if client is None:
            client = _clients[timeout] = httpx.Client(
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
        return client


def deliver(events: list[dict[str, Any]]) -> int:
    """RQ job: POST each still-unacknowledged event, acknowledging each one delivered.

    Raises :class:`relay.errors.WebhookFailed` when any POST failed, so RQ retries the job.
    Returns the number delivered.
    """
    return deliver_events(current(), [Event.from_dict(e) for e in events])


def deliver_events(ctx: Context, events: Sequence[Event]) -> int:
    """POST ``events`` (skipping those acknowledged meanwhile); see :func:`deliver`."""
    url = ctx.settings.webhook_url
    if not url:
        raise WebhookFailed("RELAY_WEBHOOK_URL is not set in this worker")
    todo = pending_ids(ctx, GROUP, [e.event_id for e in events])
    delivered, failures = 0, []
    for event in events:
        if event.event_id not in todo:
            continue
        problem = post_event(ctx, url, event)
        if problem is None:
            ack(ctx, GROUP, [event.event_id])
            delivered += 1
        else:
            failures.append(f"{event.event_id}: {problem}")
    host = urlsplit(url).hostname
    if failures:
        log.warning(
            "webhook.failed",
            host=host,
            failed=len(failures),
            delivered=delivered,
            first=failures[0],
        )
        raise WebhookFailed(f"{len(failures)} of {len(todo)} events not accepted: {failures[0]}")
    log.info("webhook.delivered", host=host, delivered=delivered)
    return delivered


def post_event(ctx: Context, url: str, event: Event) -> str | None:
    """POST one event; None when the receiver accepted it (2xx), else what went wrong."""
    body = json.dumps(event.to_dict(), separators=(",", ":")).encode()
    headers = _headers(ctx, event.event_id, body)
    try:
        response = _client(ctx.settings.webhook_timeout).post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def _headers(ctx: Context, event_id: str, body: bytes) -> Mapping[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Relay-Event-Id": event_id,
        "X-Relay-Timestamp": str(int(ctx.clock.now())),
    }
    secret = ctx.settings.webhook_secret
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret.get_secret_value(), body)
    return headers
