"""The one error shape of the HTTP API, and the handlers that turn every failure into it.

Every error answer is ``{"error": {"code": ..., "message": ..., "field": ...}}`` (``field``
only when one field is at fault; a batch's 422 adds ``errors``, one entry per bad item with
``index``, ``field`` and ``message``; a 409 adds the message's ``state``). Redis being away
is a 503 with ``Retry-After``; anything unexpected a 500 whose answer names no exception and
holds no traceback (the log has it).
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from relay.connection import RedisUnavailable
from relay.errors import ConflictError, NotFoundError, ValidationError
from relay.log import get_logger

log = get_logger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success: ``status``, a stable ``code``, a sentence, maybe a field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message
        self.field = field
        self.extra = extra or {}
        self.headers = headers

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


UNAUTHORIZED = "missing, unknown or revoked API key (Authorization: Bearer <key>)"


def unauthorized() -> ApiError:
    """The one answer for a missing, wrong or revoked key (they must look the same)."""
    return ApiError(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def install(app: FastAPI, retry_after: int) -> None:
    """Make every failure of ``app`` answer in the one error shape."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def relay_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError)
        return ApiError(422, exc.reason, field=exc.field).response()

    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return ApiError(404, str(exc)).response()

    async def conflict(_request: Request, exc: Exception) -> JSONResponse:
        return ApiError(409, str(exc)).response()

    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        from relay.api.state import redis_unavailable

        log.warning("http.redis_unavailable", route=_route(request), error=type(exc).__name__)
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | RedisUnavailable):
            request.app.state.api.redis_failed()
        return redis_unavailable(retry_after, attempted=True).response()

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "")
        headers = dict(exc.headers) if exc.headers else None
        return ApiError(exc.status_code, message, headers=headers).response()

    async def request_invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header")]
        return ApiError(
            422, str(first.get("msg", "invalid request")), field=".".join(loc) or None
        ).response()

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("http.internal_error", route=_route(request), exc_info=exc)
        return ApiError(500, "internal error; the server log has the details").response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ValidationError, relay_validation)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(redis.RedisError, redis_down)
    app.add_exception_handler(RedisUnavailable, redis_down)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(Exception, internal)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))
