"""``/v1/stats``, ``/v1/devices`` and ``/v1/dead``: what ``relay stats``, ``relay devices
--no-sync`` and ``relay dead`` show, over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from relay.api.auth import authorize, bearer
from relay.api.errors import ApiError
from relay.api.schemas import DeadDone, DeadRecord, error_responses
from relay.api.state import ApiState, api_state
from relay.apikeys import ADMIN, READ
from relay.errors import NotFoundError

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)])

STATS_EXAMPLE = {
    "at": 1893553445.12,
    "idle": False,
    "totals": {"queued": 12, "scheduled": 0, "inflight": 5, "awaiting": 40},
    "states": {"queued": 12, "submitted": 40, "delivered": 1200},
    "lanes": [{"device_id": 260, "sim": 0, "urgent": 0, "bulk": 12}],
}


@router.get(
    "/stats",
    tags=["results"],
    summary="Lanes, states and totals",
    response_model=dict[str, Any],
    responses={
        200: {"content": {"application/json": {"example": STATS_EXAMPLE}}},
        **error_responses(401, 403, 503),
    },
)
async def stats(request: Request) -> JSONResponse:
    """The `relay stats --json` document: per device/SIM lane depths, in flight, awaiting a
    status, oldest queued age; totals by state."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_stats, request, api)


def _stats(request: Request, api: ApiState) -> JSONResponse:
    from relay.results.stats import collect

    authorize(request, api.keys, READ)
    return JSONResponse(collect(api.relay.ctx).to_dict())


@router.get(
    "/devices",
    tags=["results"],
    summary="Devices and the pace in use",
    response_model=list[dict[str, Any]],
    responses=error_responses(401, 403, 503),
)
async def devices(request: Request) -> JSONResponse:
    """The devices as relay last synced them from the gateway (the workers refresh them),
    with `online`, `offline` (no poll within RELAY_DEVICE_OFFLINE_AFTER: messages to it are
    held), `lastseen`, and the send interval and burst relay uses per SIM (`relay devices
    --no-sync --json`)."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_devices, request, api)


def _devices(request: Request, api: ApiState) -> JSONResponse:
    from relay.devices import list_devices

    authorize(request, api.keys, READ)
    return JSONResponse([d.to_dict() for d in list_devices(api.relay.ctx, sync=False)])


@router.get(
    "/dead",
    tags=["dead"],
    summary="Rejected messages",
    response_model=list[DeadRecord],
    responses=error_responses(401, 403, 503),
)
async def dead(
    request: Request,
    limit: Annotated[
        int, Query(ge=1, le=10000, description="At most this many, oldest first.")
    ] = 100,
) -> JSONResponse:
    """Messages the gateway kept refusing (`relay dead list --json`), oldest first."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_dead, request, api, limit)


def _dead(request: Request, api: ApiState, limit: int) -> JSONResponse:
    from relay.results.dead import list_dead

    authorize(request, api.keys, READ)
    return JSONResponse([d.to_dict() for d in list_dead(api.relay.ctx, limit)])


@router.post(
    "/dead/{msg_id}/retry",
    tags=["dead"],
    summary="Send a rejected message again",
    response_model=DeadDone,
    responses=error_responses(401, 403, 404, 409, 503),
)
async def retry_dead(request: Request, msg_id: str) -> JSONResponse:
    """Queue it again at the head of its lane, attempts reset (admin keys only)."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_dead_action, request, api, msg_id, "retry")


@router.delete(
    "/dead/{msg_id}",
    tags=["dead"],
    summary="Purge a rejected message",
    response_model=DeadDone,
    responses=error_responses(401, 403, 404, 409, 503),
)
async def purge_dead(request: Request, msg_id: str) -> JSONResponse:
    """Delete its record for good (admin keys only)."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_dead_action, request, api, msg_id, "purge")


def _dead_action(request: Request, api: ApiState, msg_id: str, action: str) -> JSONResponse:
    from relay.results.dead import purge, retry

    authorize(request, api.keys, ADMIN)
    if len(msg_id) > 64 or not msg_id.isalnum():
        raise NotFoundError(f"no message {msg_id[:64]}")
    outcome = (retry if action == "retry" else purge)(api.relay.ctx, [msg_id])
    if outcome.missing:
        raise NotFoundError(f"no message {msg_id}")
    if msg_id in outcome.not_rejected:
        state = outcome.not_rejected[msg_id]
        raise ApiError(409, f"message {msg_id} is {state}, not rejected", extra={"state": state})
    return JSONResponse({"id": msg_id, "state": "queued" if action == "retry" else "purged"})
