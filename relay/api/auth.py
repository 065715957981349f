"""API keys on requests: ``Authorization: Bearer <key>``, checked against Redis every time.

:data:`bearer` only declares the scheme (so OpenAPI shows it and ``/docs`` can send a key);
the check itself, :func:`authorize`, runs in the worker thread of each request, beside the
work it guards, so a request costs one thread hop. Without the header, the dashboard's
session cookie stands for the key it was opened with (:mod:`relay.api.sessions`). A
missing, wrong or revoked key gets the same 401; a valid key without the permission a route
needs gets 403. The key's name (never the key) is put on the request for the access log.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer

from relay.api.errors import ApiError, unauthorized
from relay.api.sessions import session_key
from relay.apikeys import ApiKey, ApiKeys

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="A key from `relay apikey create NAME --scope send|read|admin`.",
)


def bearer_token(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>``, if the header has that form."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(request: Request, keys: ApiKeys, permission: str) -> ApiKey:
    """The request's key if it is valid and allows ``permission``; else raise 401 or 403.

    Blocking (one Redis round trip): call it from the request's worker thread.
    """
    token = bearer_token(request)
    # no Bearer key: the dashboard's session cookie (CSRF-checked for changes)
    key = keys.authenticate(token) if token is not None else session_key(request, keys.ctx)
    if key is None:
        raise unauthorized()
    request.state.key_name = key.name
    if not key.allows(permission):
        raise ApiError(
            403,
            f"API key {key.name!r} (scope {', '.join(sorted(key.scopes))}) may not "
            f"do this; it needs the {permission!r} permission",
        )
    return key
