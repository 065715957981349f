"""What the app keeps for its requests (``app.state.api``), and reading request bodies."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from relay.api.errors import ApiError
from relay.apikeys import ApiKeys
from relay.core import Relay
from relay.settings import Settings


@dataclass
class ApiState:
    """The one :class:`Relay` of the app, what requests use of it, and the Redis breaker.

    The breaker: a Redis connection failure or time-out (:meth:`redis_failed`) makes every
    route answer 503 without calling Redis (:meth:`redis_usable`) for
    ``RELAY_API_RETRY_AFTER`` seconds; then the next request tries Redis again. ``/readyz``
    always tries, and closes the breaker when Redis answers (:meth:`redis_ok`).
    """

    relay: Relay
    keys: ApiKeys
    redis_down_until: float = 0.0

    @property
    def settings(self) -> Settings:
        return self.relay.settings

    def redis_usable(self) -> None:
        """Raise the 503 at once while the breaker is open."""
        if self.redis_down_until and time.monotonic() < self.redis_down_until:
            raise redis_unavailable(self.settings.api_retry_after)

    def redis_failed(self) -> None:
        self.redis_down_until = time.monotonic() + self.settings.api_retry_after

    def redis_ok(self) -> None:
        self.redis_down_until = 0.0


def redis_unavailable(retry_after: int, *, attempted: bool = False) -> ApiError:
    """The 503 while Redis is away. ``attempted``: a call was made and failed, and a call
    that timed out or lost its connection may still have been carried out by Redis."""
    if attempted:
        message = (
            "relay's Redis did not answer; a message sent in this request may or may not "
            "be stored: send it again with the same Idempotency-Key (or key) to be sure"
        )
    else:
        message = "relay's Redis is not reachable; nothing was stored, try again later"
    return ApiError(503, message, headers={"Retry-After": str(retry_after)})


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
