"""Webhooks: signed POSTs to a real local receiver, delivered through RQ jobs run by a burst
relay worker, retried with backoff, acknowledged only once delivered (both Redis servers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from rq.serializers import JSONSerializer
from structlog.testing import capture_logs

from relay.clock import SYSTEM_CLOCK, Clock, FakeClock
from relay.context import Context, use
from relay.presence import Presence, record
from relay.results.events import pending_ids, read_events
from relay.results.webhook import (
    GROUP,
    RECLAIM_EVERY_S,
    deliver_events,
    pump,
    queue,
    sign,
    verify_signature,
)
from relay.run.worker import RelayWorker
from relay.settings import load_settings
from relay.states import State
from tests.fixtures.context import MakeCtx
from tests.fixtures.replies import entries

SECRET = "webhook-s3cret-value"


# --- signatures --------------------------------------------------------------------------


def test_signatures_verify_only_the_exact_body_and_secret() -> None:
    body = b'{"event_id":"1-0","id":"abc"}'
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert not verify_signature("other", body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, header.removeprefix("sha256="))
    assert not verify_signature(SECRET, body, "sha256=" + "0" * 64)


# --- a receiver ----------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local HTTP server that answers POSTs with the next scripted status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.calls.append(
                {"headers": headers, "body": body, "status": status, "at": time.time()}
            )
            return status

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(c["body"]) for c in self.calls if c["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recv = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = recv.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recv.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/relay"
    yield recv
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_ctx(redis_url: str, key_prefix: str) -> Iterator[Any]:
    made: list[Context] = []

    def factory(clock: Clock = SYSTEM_CLOCK, **overrides: Any) -> Context:
        settings = load_settings(redis_url=redis_url, key_prefix=key_prefix, **overrides)
        conn = redis.Redis.from_url(redis_url)
        ctx = use(Context.from_settings(settings, conn=conn, clock=clock))
        made.append(ctx)
        return ctx

    yield factory
    for ctx in made:
        ctx.close()


def some_events(ctx: Context, n: int) -> list[str]:
    """``n`` messages delivered: one event each."""
    ids = [f"w{i:03d}" for i in range(n)]
    for msg_id in ids:
        ctx.conn.hset(
            ctx.keys.msg(msg_id),
            mapping={
                "sendto": "+4915752982212",
                "body": "b",
                "device_id": 260,
                "sim": 0,
                "urgent": 0,
                "state": "submitted",
                "final": 0,
            },
        )
    ctx.store.transition(
        ids,
        State.DELIVERED,
        [State.SUBMITTED],
        fields={"status": 7, "statustitle": "delivered", "sms_id": 62800001},
    )
    return ids


def run_worker_until(ctx: Context, done: Callable[[], object], timeout: float = 30.0) -> bool:
    """Burst runs of a relay worker on the webhook queue (with RQ's scheduler for retries)."""
    worker = RelayWorker([ctx.keys.webhook_queue], connection=ctx.conn, serializer=JSONSerializer)
    worker.install_signals = False
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        worker.work(burst=True, with_scheduler=True)
        if done():
            return True
        time.sleep(0.1)
    return bool(done())


# --- delivery ------------------------------------------------------------------------------


def test_events_are_posted_signed_and_acknowledged(make_ctx: MakeCtx, receiver: Receiver) -> None:
    ctx = make_ctx(webhook_url=receiver.url, webhook_secret=SECRET)
    ids = some_events(ctx, 12)

    assert pump(ctx) == 12
    assert queue(ctx).count == 2, "a few events per job"
    assert pump(ctx) == 0, "nothing is enqueued twice"
    assert run_worker_until(ctx, lambda: len(receiver.delivered()) == 12)

    stream = dict(entries(ctx.conn, ctx.keys.events))
    for call in receiver.calls:
        headers, body = call["headers"], call["body"]
        payload = json.loads(body)
        assert verify_signature(SECRET, body, headers["x-relay-signature"])
        assert headers["x-relay-event-id"] == payload["event_id"] and payload["event_id"] in stream
        assert headers["content-type"] == "application/json"
        assert int(headers["x-relay-timestamp"]) > 1_600_000_000
        assert payload["state"] == "delivered" and payload["final"] is True
    assert sorted(p["id"] for p in receiver.delivered()) == ids
    assert pending_ids(ctx, GROUP, list(stream)) == set()


def test_device_events_are_posted_too(make_ctx: MakeCtx, receiver: Receiver) -> None:
    ctx = make_ctx(webhook_url=receiver.url, webhook_secret=SECRET)
    seen_ms = ctx.now_ms() - 200_000
    record(ctx, [Presence(260, False, seen_ms), Presence(261, True, ctx.now_ms())])
    assert pump(ctx) == 1
    assert run_worker_until(ctx, lambda: len(receiver.delivered()) == 1)
    (payload,) = receiver.delivered()
    assert payload["event"] == "device.offline" and payload["device_id"] == 260
    assert payload["state"] == "offline" and payload["id"] == "" and payload["sim"] is None
    assert payload["lastseen_ms"] == seen_ms and payload["lastseen"].endswith("+00:00")


def test_a_failing_receiver_is_retried_with_backoff_and_gets_each_event_once(
    make_ctx: MakeCtx, receiver: Receiver
) -> None:
    ctx = make_ctx(webhook_url=receiver.url, webhook_secret=SECRET, webhook_retries=3)
    some_events(ctx, 2)
    receiver.statuses = [500, 503]  # both events of the first attempt fail

    pump(ctx)
    with capture_logs() as logs:
        assert run_worker_until(ctx, lambda: len(receiver.delivered()) == 2)

    statuses = [c["status"] for c in receiver.calls]
    assert statuses == [500, 503, 200, 200], "retried, and each event accepted once"
    # RQ schedules a retry 1 s on, in whole seconds: not before the next second begins
    first_failure, retry = receiver.calls[1]["at"], receiver.calls[2]["at"]
    assert int(retry) > int(first_failure), "the retry waited for RQ's schedule"
    assert pending_ids(ctx, GROUP, [p["event_id"] for p in receiver.delivered()]) == set()
    assert any(entry["event"] == "webhook.failed" for entry in logs)
    assert SECRET not in repr(logs)


def test_events_read_by_a_pump_that_died_are_delivered_later(
    make_ctx: MakeCtx, receiver: Receiver
) -> None:
    clock = FakeClock()
    ctx = make_ctx(clock, webhook_url=receiver.url, webhook_secret=SECRET)
    ids = some_events(ctx, 3)
    lost = read_events(ctx, GROUP, "pump", 10)  # read, then the pump died: no job
    assert len(lost) == 3 and queue(ctx).count == 0

    assert pump(ctx) == 0, "not yet idle long enough to be taken over"
    time.sleep(0.05)
    assert pump(ctx, reclaim_idle_ms=20) == 0, "stale entries are looked for now and then"
    clock.advance(RECLAIM_EVERY_S)
    assert pump(ctx, reclaim_idle_ms=20) == 3
    assert run_worker_until(ctx, lambda: len(receiver.delivered()) == 3)
    assert sorted(p["id"] for p in receiver.delivered()) == ids


def test_a_job_skips_events_already_acknowledged(make_ctx: MakeCtx, receiver: Receiver) -> None:
    ctx = make_ctx(webhook_url=receiver.url)
    some_events(ctx, 3)
    events = read_events(ctx, GROUP, "pump", 10)
    ctx.conn.xack(ctx.keys.events, GROUP, events[0].event_id)

    assert deliver_events(ctx, events) == 2
    assert [p["event_id"] for p in receiver.delivered()] == [e.event_id for e in events[1:]]
    assert "x-relay-signature" not in receiver.calls[0]["headers"], "no secret: unsigned"


def test_no_webhook_url_no_pump(make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    some_events(ctx, 2)
    assert pump(ctx) == 0
    assert queue(ctx).count == 0
    assert ctx.conn.xinfo_groups(ctx.keys.events) == []


@pytest.mark.parametrize(
    ("retries", "waits"),
    [
        (3, [1, 2, 4]),
        (8, [1, 2, 4, 8, 16, 32, 60, 120]),
        (10, [1, 2, 4, 8, 16, 32, 60, 120, 120, 120]),
    ],
)
def test_jobs_back_off_from_one_second(
    make_ctx: MakeCtx, receiver: Receiver, retries: int, waits: list[int]
) -> None:
    ctx = make_ctx(webhook_url=receiver.url, webhook_retries=retries)
    some_events(ctx, 1)
    pump(ctx)
    (job,) = queue(ctx).jobs
    assert job.retries_left == retries and job.retry_intervals == waits
