"""What the app keeps for its requests (``app.state.api``), and reading request bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from relay.api.errors import ApiError
from relay.apikeys import ApiKeys
from relay.core import Relay
from relay.settings import Settings


@dataclass
class ApiState:
    """The one :class:`Relay` of the app and what requests use of it."""

    relay: Relay
    keys: ApiKeys

    @property
    def settings(self) -> Settings:
        return self.relay.settings


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes (RELAY_API_BODY_MAX)")


def parse_json(request: Request, raw: bytes) -> Any:
    """The JSON document of a body; 415 unless the content type is JSON, 422 if unreadable."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json" and not (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raise ApiError(415, "send the body as JSON with Content-Type: application/json")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(422, "the body is not valid JSON (UTF-8)", code="invalid_json") from None
