"""``/v1/messages``: send one, send a batch, read one, cancel one.

Every route runs the same code as the library: the producer's validation and its one
enqueue script (``Relay.send`` / ``send_many``, docs/design.md, invariant 9).

The one-message routes make their few sub-millisecond Redis calls (the key check, then the
enqueue script or a record read) on the event loop itself: a hop to a worker thread cost
more CPU than the whole request (measured with ``relay bench --only http``: about 1,150
against 1,600 messages/s on one process). What keeps a Redis that stalls from stalling the
server is the breaker of :class:`relay.api.state.ApiState`: the first call that times out
(``RELAY_API_REDIS_TIMEOUT``) opens it, and for ``RELAY_API_RETRY_AFTER`` seconds every
route answers 503 at once without touching Redis, until ``/readyz`` or a later request finds
Redis back. A batch (validation and one script for up to ``RELAY_API_BATCH_MAX`` messages)
runs in a worker thread, so it does not hold up the small requests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from relay.api.auth import authorize, bearer
from relay.api.errors import ApiError
from relay.api.schemas import Accepted, BatchAccepted, Record, error_responses
from relay.api.state import ApiState, api_state, parse_json, read_body
from relay.apikeys import SEND, STATUS
from relay.errors import ConflictError, NotFoundError
from relay.produce.validation import ValidMessage, validate, validate_all
from relay.states import State

router = APIRouter(prefix="/v1", tags=["messages"], dependencies=[Security(bearer)])
# The two sending routes take no FastAPI parameters or dependencies (solving them costs more
# than the rest of the request): the key and Idempotency-Key are read from the headers, and
# the document says so through ``openapi_extra``.
send_router = APIRouter(prefix="/v1", tags=["messages"])
SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}]
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Same as the body's `key`: a repeat gives the first id with 200.",
}

_ID = re.compile(r"[0-9a-z]{1,64}")


def _json_body(schema: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref}}},
        "security": SECURITY,
        **({"parameters": list(parameters)} if parameters else {}),
    }


def location(msg_id: str) -> str:
    return f"/v1/messages/{msg_id}"


@send_router.post(
    "/messages",
    status_code=202,
    response_model=Accepted,
    summary="Send one message",
    responses={
        200: {"model": Accepted, "description": "The idempotency key was seen: the first id."},
        **error_responses(401, 403, 413, 415, 422, 503),
    },
    openapi_extra=_json_body("MessageIn", IDEMPOTENCY_HEADER),
)
async def send_message(request: Request) -> JSONResponse:
    """Validate and queue one message (`202`, `Location` names its record). With an
    idempotency key seen before: the first id and `200`, nothing stored."""
    api = api_state(request)
    raw = await read_body(request, api.settings.api_body_max)
    idempotency_key = request.headers.get("idempotency-key")
    api.redis_usable()
    return _send_one(request, api, raw, idempotency_key)


def _send_one(request: Request, api: ApiState, raw: bytes, header_key: str | None) -> JSONResponse:
    authorize(request, api.keys, SEND)
    data = parse_json(request, raw)
    if not isinstance(data, Mapping):
        raise ApiError(422, "the body must be a JSON object of message fields")
    if header_key is not None:
        if data.get("key") is not None and data.get("key") != header_key:
            raise ApiError(422, "differs from the Idempotency-Key header", field="key")
        data = {**data, "key": header_key}
    relay = api.relay
    msg = validate(data, api.settings, relay.ctx.clock.now())
    [done] = relay.producer.enqueue([msg])
    if done.created:
        state = _first_state(msg)
    else:
        record = relay.ctx.store.get(done.id)
        state = record.state.value if record is not None else _first_state(msg)
    return JSONResponse(
        {"id": done.id, "state": state},
        status_code=202 if done.created else 200,
        headers={"Location": location(done.id)},
    )


def _first_state(msg: ValidMessage) -> str:
    return State.SCHEDULED.value if msg.timetosend is not None else State.QUEUED.value


@send_router.post(
    "/messages/batch",
    status_code=202,
    response_model=BatchAccepted,
    summary="Send a batch of messages",
    responses={
        200: {"model": BatchAccepted, "description": "Every item's key was seen: first ids."},
        **error_responses(401, 403, 413, 415, 422, 503),
    },
    openapi_extra=_json_body("BatchIn"),
)
async def send_batch(request: Request) -> JSONResponse:
    """Validate every message first: any bad one → `422` listing each bad item's `index`,
    `field` and `message`, and nothing stored. Else all are stored in one atomic enqueue
    script call; `ids` in input order (an item whose `key` was seen gets the first id)."""
    api = api_state(request)
    raw = await read_body(request, api.settings.api_body_max)
    api.redis_usable()
    return await run_in_threadpool(_send_batch, request, api, raw)


def _send_batch(request: Request, api: ApiState, raw: bytes) -> JSONResponse:
    authorize(request, api.keys, SEND)
    data = parse_json(request, raw)
    items = _batch_items(data, api.settings.api_batch_max)
    relay = api.relay
    valid, errors = validate_all(items, api.settings, relay.ctx.clock.now())
    if errors:
        listed = [{"index": e.index, "field": e.field, "message": e.reason} for e in errors]
        raise ApiError(
            422,
            f"{len(errors)} of {len(items)} messages are invalid; nothing was stored",
            field="messages",
            extra={"errors": listed},
        )
    # one enqueue.lua call for the whole batch: stored all at once, or not at all
    done = relay.producer.enqueue(valid, chunk_size=len(valid))
    created = any(d.created for d in done)
    return JSONResponse({"ids": [d.id for d in done]}, status_code=202 if created else 200)


def _batch_items(data: Any, batch_max: int) -> list[Any]:
    if not isinstance(data, Mapping):
        raise ApiError(422, 'the body must be a JSON object {"messages": [...]}')
    unknown = sorted(str(k) for k in data if k != "messages")
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(unknown)}", field=unknown[0])
    items = data.get("messages")
    if not isinstance(items, list):
        raise ApiError(422, "must be a list of messages", field="messages")
    if not items:
        raise ApiError(422, "is empty; give at least one message", field="messages")
    if len(items) > batch_max:
        raise ApiError(
            413,
            f"holds {len(items)} messages; at most {batch_max} go in one batch "
            "(RELAY_API_BATCH_MAX)",
            field="messages",
        )
    return items


@router.get(
    "/messages/{msg_id}",
    response_model=Record,
    summary="One message's record",
    responses=error_responses(401, 403, 404, 503),
)
async def get_message(request: Request, msg_id: str) -> JSONResponse:
    """The record `relay status --json` shows: state, gateway id and status, error, times."""
    api = api_state(request)
    api.redis_usable()
    return _get_one(request, api, msg_id)


def _get_one(request: Request, api: ApiState, msg_id: str) -> JSONResponse:
    authorize(request, api.keys, STATUS)
    if _ID.fullmatch(msg_id) is None:
        raise NotFoundError(f"no message {msg_id[:64]}")
    return JSONResponse(api.relay.status(msg_id).to_dict())


@router.delete(
    "/messages/{msg_id}",
    response_model=Record,
    summary="Cancel a waiting message",
    responses=error_responses(401, 403, 404, 409, 503),
)
async def cancel_message(request: Request, msg_id: str) -> JSONResponse:
    """Cancel a message still `scheduled` or `queued`; `409` with its `state` once a worker
    has claimed it or later."""
    api = api_state(request)
    api.redis_usable()
    return _cancel_one(request, api, msg_id)


def _cancel_one(request: Request, api: ApiState, msg_id: str) -> JSONResponse:
    authorize(request, api.keys, SEND)
    if _ID.fullmatch(msg_id) is None:
        raise NotFoundError(f"no message {msg_id[:64]}")
    try:
        record = api.relay.cancel(msg_id)
    except ConflictError as exc:
        current = api.relay.ctx.store.get(msg_id)
        extra = {"state": current.state.value} if current is not None else {}
        raise ApiError(409, str(exc), extra=extra) from None
    return JSONResponse(record.to_dict())
