"""``/v1/keys``: API keys managed over HTTP by an ``admin`` key (``relay apikey`` does the
same from a shell). A new key's plaintext is in the 201 answer only; Redis keeps its digest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from relay.api.auth import authorize, bearer
from relay.api.errors import ApiError
from relay.api.schemas import ApiKeyOut, NewApiKey, error_responses
from relay.api.state import ApiState, api_state, parse_json, read_body
from relay.apikeys import ADMIN
from relay.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["keys"], dependencies=[Security(bearer)])

BODY_LIMIT = 4096


@router.get(
    "/keys",
    summary="API keys",
    response_model=list[ApiKeyOut],
    responses=error_responses(401, 403, 503),
)
async def list_keys(request: Request) -> JSONResponse:
    """Every key: name, scopes, created and last used (ms since the epoch); never a key."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_list, request, api)


def _list(request: Request, api: ApiState) -> JSONResponse:
    authorize(request, api.keys, ADMIN)
    return JSONResponse([k.to_dict() for k in api.keys.list()])


@router.post(
    "/keys",
    status_code=201,
    summary="Create an API key",
    response_model=NewApiKey,
    responses=error_responses(401, 403, 409, 413, 415, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyIn"}}},
        }
    },
)
async def create_key(request: Request) -> JSONResponse:
    """`{"name", "scope"}` (scope `send`, `read` or `admin`) → `201` with the new `key`,
    shown this once; `409` when the name is taken."""
    api = api_state(request)
    raw = await read_body(request, BODY_LIMIT)
    api.redis_usable()
    return await run_in_threadpool(_create, request, api, raw)


def _create(request: Request, api: ApiState, raw: bytes) -> JSONResponse:
    authorize(request, api.keys, ADMIN)
    data: Any = parse_json(request, raw)
    if not isinstance(data, Mapping):
        raise ApiError(422, 'the body must be a JSON object {"name": ..., "scope": ...}')
    unknown = sorted(str(k) for k in data if k not in ("name", "scope"))
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(unknown)}", field=unknown[0])
    name, scope = data.get("name"), data.get("scope", "send")
    if not isinstance(name, str):
        raise ApiError(422, "is required, as a string", field="name")
    if not isinstance(scope, str):
        raise ApiError(422, "must be send, read or admin", field="scope")
    record, plaintext = api.keys.create(name, scope)
    return JSONResponse({**record.to_dict(), "key": plaintext}, status_code=201)


@router.delete(
    "/keys/{name}",
    summary="Revoke an API key",
    response_model=ApiKeyOut,
    responses=error_responses(401, 403, 404, 503),
)
async def revoke_key(request: Request, name: str) -> JSONResponse:
    """Delete the key: every server process refuses it from the next request on."""
    api = api_state(request)
    api.redis_usable()
    return await run_in_threadpool(_revoke, request, api, name)


def _revoke(request: Request, api: ApiState, name: str) -> JSONResponse:
    authorize(request, api.keys, ADMIN)
    found = [k for k in api.keys.list() if k.name == name]
    if not found or not api.keys.revoke(name):
        raise NotFoundError(f"no API key named {name[:64]!r}")
    return JSONResponse(found[0].to_dict())
