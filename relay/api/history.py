"""``/v1/history`` and ``/v1/events/recent``: what happened lately, as the dashboard shows it.

- ``GET /v1/history``: changes of state per minute (submitted, sent, delivered, failed, ...)
  from the rolling history relay keeps in Redis (24 h of minute buckets,
  :mod:`relay.results.history`), and urgent latency p50/p99 over the last 5 and 60 minutes.
- ``GET /v1/events/recent``: the newest events of the stream, newest first (``?before=`` an
  event id pages further back); ``GET /v1/events`` follows the ones to come.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from relay.api.auth import authorize, bearer
from relay.api.errors import ApiError
from relay.api.schemas import StreamEvent, error_responses
from relay.api.state import ApiState, api_state
from relay.apikeys import READ
from relay.results.events import Event
from relay.results.history import HISTORY_MINUTES

router = APIRouter(prefix="/v1", tags=["results"], dependencies=[Security(bearer)])

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}|[0-9]{1,20}")


class MinuteCounts(BaseModel):
    """Changes of state into each state during one minute."""

    minute: int = Field(description="Start of the minute, epoch seconds.")
    submitted: int
    sent: int
    delivered: int
    failed: int
    rejected: int
    cancelled: int
    expired: int


class LatencyWindow(BaseModel):
    """Urgent latency, queued → stored at the gateway, over the last ``minutes`` minute
    buckets (the current one included); None when no urgent message was stored then."""

    minutes: int
    count: int = Field(description="Samples: urgent messages stored in the window.")
    p50_ms: int | None
    p99_ms: int | None


class History(BaseModel):
    """The rolling history (kept in Redis, 24 h of minute buckets)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "at": 1893553445.12,
                    "minutes": 2,
                    "states": [
                        "submitted",
                        "sent",
                        "delivered",
                        "failed",
                        "rejected",
                        "cancelled",
                        "expired",
                    ],
                    "throughput": [
                        {
                            "minute": 1893553320,
                            "submitted": 120,
                            "sent": 10,
                            "delivered": 98,
                            "failed": 2,
                            "rejected": 0,
                            "cancelled": 0,
                            "expired": 0,
                        },
                        {
                            "minute": 1893553380,
                            "submitted": 41,
                            "sent": 3,
                            "delivered": 37,
                            "failed": 0,
                            "rejected": 1,
                            "cancelled": 0,
                            "expired": 0,
                        },
                    ],
                    "latency": [
                        {"minutes": 5, "count": 12, "p50_ms": 840, "p99_ms": 2310},
                        {"minutes": 60, "count": 130, "p50_ms": 910, "p99_ms": 4020},
                    ],
                }
            ]
        }
    )

    at: float = Field(description="When it was read, epoch seconds.")
    minutes: int
    states: list[str]
    throughput: list[MinuteCounts] = Field(description="One per minute, oldest first.")
    latency: list[LatencyWindow]


@router.get(
    "/history",
    summary="Throughput per minute and urgent latency",
    response_model=History,
    responses=error_responses(401, 403, 422, 503),
)
async def history(
    request: Request,
    minutes: Annotated[
        int, Query(ge=1, le=HISTORY_MINUTES, description="Minutes back from now (≤ 24 h).")
    ] = 60,
) -> JSONResponse:
    """Changes of state per minute over the last `minutes` (the current, partial minute
    last), and urgent p50/p99 latency (queued → stored at the gateway) over 5 and 60 minutes.
    Kept in Redis by relay itself: it survives restarts."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_history, request, api, minutes)


def _history(request: Request, api: ApiState, minutes: int) -> JSONResponse:
    from relay.results.history import read_history

    authorize(request, api.keys, READ)
    return JSONResponse(read_history(api.relay.ctx, minutes))


@router.get(
    "/events/recent",
    tags=["events"],
    summary="The latest events, newest first",
    response_model=list[StreamEvent],
    responses=error_responses(401, 403, 422, 503),
)
async def recent_events(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 50,
    before: Annotated[
        str | None,
        Query(description="Only events older than this event id (to page back)."),
    ] = None,
) -> JSONResponse:
    """The newest events still in the stream (or those before `before`), newest first: what
    `GET /v1/events` would have sent."""
    if before is not None and _STREAM_ID.fullmatch(before) is None:
        raise ApiError(422, "must be a stream id such as 1718000000000-0", field="before")
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_recent, request, api, limit, before)


def _recent(request: Request, api: ApiState, limit: int, before: str | None) -> JSONResponse:
    authorize(request, api.keys, READ)
    ctx = api.relay.ctx
    upper = "+" if before is None else f"({before}"
    entries: Any = ctx.conn.xrevrange(ctx.keys.events, max=upper, min="-", count=limit)
    events = [Event.from_entry(i, fields).to_dict() for i, fields in entries if fields]
    return JSONResponse(events)
