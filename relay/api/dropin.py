"""The SMSGateway24-compatible front at ``/getdata/<endpoint>`` (GET and POST).

An integration written for the gateway changes its base URL to relay's and uses a relay API
key as its token; :mod:`relay.dropin` does the rest. This module is the HTTP side only:

- exactly ``/getdata/<endpoint>`` and ``/getdata/<endpoint>/``, both answered in place (no
  redirect: the gateway's curl examples do not follow one, and a 301/302 turns a POST into
  a GET for clients that do);
- the raw query string and body are read here (up to ``RELAY_API_BODY_MAX`` bytes), so
  ``+`` and ``%2B`` keep their difference in phone numbers;
- every answer is HTTP 200 JSON, a refusal ``{"error":1,"message":...}``: the gateway's
  clients throw on any 4xx/5xx and recognise an error only by ``error == 1``;
- the key's name (never the key) goes on the request for the access log, which logs the
  route template only, so a ``token=`` in a query never reaches a log line.

The short calls (``addsms``, ``smstosend``, ``getsmsstatus``, ``gettoken``: a few
sub-millisecond Redis calls) run on the event loop, as ``POST /v1/messages`` does; the
others (bulk stores, ``getallsms`` scans, calls to the gateway) in a worker thread. While
the API's Redis breaker is open (:class:`relay.api.state.ApiState`) the front refuses at once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from relay.api.errors import ApiError
from relay.api.state import ApiState, api_state, read_body
from relay.dropin import Dropin, Outcome
from relay.dropin.answers import encode, refused
from relay.dropin.params import BadRequest, read_params
from relay.dropin.service import UNAVAILABLE

router = APIRouter(tags=["SMSGateway24 drop-in"])

#: Endpoints answered on the event loop (see the module docstring).
INLINE = frozenset({"addsms", "smstosend", "getsmsstatus", "gettoken"})
ENDPOINTS = (
    "addsms",
    "smstosend",
    "addalotofsms",
    "getsmsstatus",
    "getallsms",
    "getalldevices",
    "getdevicestatus",
    "gettoken",
    "savetag",
    "savecontact",
    "savepaket",
)
_FIELDS = {"type": "object", "additionalProperties": True}
OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "endpoint",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": list(ENDPOINTS)},
            "description": "The gateway's endpoint name.",
        },
        {
            "name": "token",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "A relay API key (prefer a form field: queries end up in logs).",
        },
    ],
    "requestBody": {
        "required": False,
        "description": "The gateway's fields, in a form, a multipart form or JSON; "
        "merged with the query's.",
        "content": {
            "application/x-www-form-urlencoded": {"schema": _FIELDS},
            "multipart/form-data": {"schema": _FIELDS},
            "application/json": {"schema": _FIELDS},
        },
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The gateway's answer; a refusal is `error` 1 with a `message`.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "integer"}, "message": {"type": "string"}},
                    "additionalProperties": True,
                }
            }
        },
    }
}


def dropin_of(request: Request, api: ApiState) -> Dropin:
    """The app's :class:`Dropin`, made on first use from its Relay and API keys."""
    state = request.app.state
    dropin: Dropin | None = getattr(state, "dropin", None)
    if dropin is None:
        dropin = state.dropin = Dropin(api.relay, api.keys.authenticate)
    return dropin


async def getdata(request: Request) -> Response:
    """The gateway's own API (`token` is a relay API key); the README's drop-in table says
    what relay does with each endpoint. Always HTTP 200."""
    outcome = await _answer(request)
    request.state.key_name = outcome.key_name
    return Response(encode(outcome.answer), media_type="application/json")


for _method in ("GET", "POST"):
    router.add_api_route(
        "/getdata/{endpoint}",
        getdata,
        methods=[_method],
        operation_id=f"dropin_{_method.lower()}",
        summary=f"SMSGateway24-compatible API ({_method})",
        response_model=None,
        responses=RESPONSES,
        openapi_extra=OPENAPI,
    )
router.add_api_route(
    "/getdata/{endpoint}/",
    getdata,
    methods=["GET", "POST"],
    response_model=None,
    include_in_schema=False,
)


async def _answer(request: Request) -> Outcome:
    api = api_state(request)
    endpoint = str(request.path_params["endpoint"]).lower()
    try:
        body = await read_body(request, api.settings.api_body_max)
        params = read_params(
            request.scope.get("query_string", b"").decode("latin-1"),
            request.headers.get("content-type", ""),
            body,
        )
    except ApiError as exc:  # the body is over RELAY_API_BODY_MAX
        return Outcome(refused(exc.message))
    except BadRequest as exc:
        return Outcome(refused(str(exc)))
    try:
        api.redis_usable()
    except ApiError:
        return Outcome(refused(UNAVAILABLE))
    dropin = dropin_of(request, api)
    if endpoint in INLINE:
        outcome = dropin.handle(endpoint, params)
    else:
        outcome = await run_in_threadpool(dropin.handle, endpoint, params)
    if outcome.redis_down:
        api.redis_failed()
    return outcome
