"""``/healthz`` (the process answers), ``/readyz`` (Redis answers and relay's scripts are
loaded) and ``/metrics`` (Prometheus: relay's gauges, read from Redis per scrape, and this
process's request counts and latencies)."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay import scripts
from relay.api.errors import ApiError
from relay.api.schemas import Health, error_responses
from relay.api.state import ApiState, api_state

router = APIRouter(tags=["health"])

READY_SCRIPTS = ("enqueue", "transition", "cancel", "apikey_touch")
"""The scripts requests run: loaded (SCRIPT LOAD) before /readyz says ready."""

_HEALTHY = b'{"status":"ok"}'


@router.get("/healthz", response_model=Health, summary="The process answers")
async def healthz() -> Response:
    """Always `200 {"status": "ok"}` while the process runs; touches nothing."""
    return Response(_HEALTHY, media_type="application/json")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Redis answers, scripts loaded",
    responses=error_responses(503),
)
async def readyz(request: Request) -> JSONResponse:
    """`200` once Redis answers and the scripts requests use are loaded there; else `503`."""
    return await run_in_threadpool(_ready, api_state(request))


def _ready(api: ApiState) -> JSONResponse:
    conn = api.relay.ctx.conn
    conn.ping()
    sources = [scripts.lua_source(name) for name in READY_SCRIPTS]
    shas = [hashlib.sha1(src.encode()).hexdigest() for src in sources]
    present: Any = conn.script_exists(*shas)
    for source, there in zip(sources, present, strict=True):
        if not there:
            conn.script_load(source)
    if not all(conn.script_exists(*shas)):
        raise ApiError(503, "relay's scripts could not be loaded into Redis")
    api.redis_ok()
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """relay's gauges (`relay_lane_depth`, `relay_messages`, ...; `relay_stats_up` 0 when
    Redis is away) and `relay_http_requests_total` / `relay_http_request_duration_seconds`
    by method, route and status."""
    registry = request.app.state.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
