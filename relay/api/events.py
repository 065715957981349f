"""``GET /v1/events``: the events stream (``<prefix>:events``) as Server-Sent Events.

Each event is ``id: <stream entry id>`` and ``data: <the webhook JSON of the event>``
(:meth:`relay.results.events.Event.to_dict`). A client that reconnects with
``Last-Event-ID`` (what ``EventSource`` sends by itself; or ``?last_event_id=``) gets every
entry after that id still in the stream, so nothing is lost across a disconnect; without it,
the stream starts at its current end; ``?timeout=S`` ends it after S seconds.
``?id=<message id>`` (repeatable) keeps only those messages' events, ``?final=1`` only events
that end a message. A comment line is sent every ``RELAY_API_SSE_HEARTBEAT`` seconds so
proxies keep the connection open.

The reads are ``XREAD BLOCK`` on an asyncio Redis client of the app's own, so an open
stream holds no worker thread. Blocks are short (at most :data:`POLL_S`), so a stream ends
soon after the server is asked to stop.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.responses import StreamingResponse

from relay.api.auth import authorize, bearer
from relay.api.errors import ApiError
from relay.api.schemas import error_responses, sse_schema
from relay.api.state import api_state
from relay.apikeys import READ
from relay.log import get_logger
from relay.results.events import Event

log = get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Security(bearer)])

POLL_S = 1.0
"""Longest single XREAD block: how soon a stream notices the server stopping."""
BATCH = 500
STREAM_ERROR = json.dumps(
    {
        "error": {
            "code": "unavailable",
            "message": "relay's Redis went away; reconnect with Last-Event-ID",
        }
    }
).encode()
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}|[0-9]{1,20}")

SSE_EXAMPLE = (
    "id: 1893553445120-0\n"
    'data: {"event_id": "1893553445120-0", "id": "0mhx3k2p4a7fq1", "state": "delivered", '
    '"prev": "sent", "final": true, "at": "2030-01-02T03:04:05.120+00:00", ...}\n\n'
    ": heartbeat\n\n"
)


@router.get(
    "/events",
    summary="Follow every state change (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless text/event-stream.",
            "content": {"text/event-stream": {"schema": sse_schema(), "example": SSE_EXAMPLE}},
        },
        **error_responses(401, 403, 422, 503),
    },
)
async def events(
    request: Request,
    ids: Annotated[list[str] | None, Query(alias="id", description="Only these messages.")] = None,
    final: Annotated[bool, Query(description="Only events that end a message.")] = False,
    last_event_id: Annotated[
        str | None,
        Query(description="Resume after this stream id (as the Last-Event-ID header)."),
    ] = None,
    last_event_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    timeout: Annotated[
        float | None,
        Query(
            gt=0,
            le=86400,
            description="End the stream after this many seconds (for clients that poll; "
            "reconnect with Last-Event-ID). Default: never.",
        ),
    ] = None,
) -> StreamingResponse:
    """Every event after `Last-Event-ID` (else from now on), then each new one as it comes."""
    api = api_state(request)
    api.redis_usable()
    authorize(request, api.keys, READ)
    after = last_event_header or last_event_id
    if after is not None and _STREAM_ID.fullmatch(after.strip()) is None:
        raise ApiError(422, "must be a stream id such as 1718000000000-0", field="Last-Event-ID")
    wanted = set(ids) if ids else None
    stream: aioredis.Redis = request.app.state.aioredis
    start = (
        after.strip() if after is not None else await _stream_end(stream, api.relay.ctx.keys.events)
    )

    def keep(event: Event) -> bool:
        return (wanted is None or event.id in wanted) and (not final or event.is_final)

    body = _sse(
        stream,
        api.relay.ctx.keys.events,
        start,
        keep,
        heartbeat=api.settings.api_sse_heartbeat,
        stopping=lambda: bool(getattr(request.app.state, "stopping", False)),
        until=None if timeout is None else time.monotonic() + timeout,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream_end(conn: aioredis.Redis, key: str) -> str:
    """The id of the stream's last entry (``0-0`` when empty): where 'from now on' starts."""
    last: Any = await conn.xrevrange(key, count=1)
    if not last:
        return "0-0"
    entry_id = last[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def _sse(
    conn: aioredis.Redis,
    key: str,
    start: str,
    keep: Callable[[Event], bool],
    *,
    heartbeat: float,
    stopping: Callable[[], bool],
    until: float | None = None,
) -> AsyncIterator[bytes]:
    cursor = start
    last_beat = time.monotonic()
    yield b": connected\n\n"
    while not stopping():
        wait = min(POLL_S, heartbeat)
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                return
            wait = min(wait, left)
        block_ms = max(1, int(wait * 1000))
        try:
            answer: Any = await conn.xread({key: cursor}, count=BATCH, block=block_ms)
        except redis.RedisError as exc:
            log.warning("sse.redis_unavailable", error=type(exc).__name__)
            yield b"event: error\ndata: " + STREAM_ERROR + b"\n\n"
            return
        chunks: list[bytes] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                event = Event.from_entry(entry_id, fields)
                cursor = event.event_id
                if keep(event):
                    data = json.dumps(event.to_dict(), separators=(",", ":"))
                    chunks.append(f"id: {cursor}\ndata: {data}\n\n".encode())
        if chunks:
            yield b"".join(chunks)
        now = time.monotonic()
        if now - last_beat >= heartbeat:
            last_beat = now
            yield b": heartbeat\n\n"
