"""Dashboard sessions: a login that exchanges an API key for a cookie, and CSRF tokens.

People log in at ``/dashboard/login`` with an API key; relay checks it like a Bearer key and
answers with the cookie :data:`COOKIE`: a random session id (256 bits), ``HttpOnly``,
``SameSite=Strict``, ``Path=/`` (``Secure`` over HTTPS). Redis keeps the session under
``Keys.session(<SHA-256 of the id>)`` for :data:`SESSION_TTL_S`, holding the key's *digest*
(never the key, which is not stored anywhere), its name and a CSRF token. Every request with
the cookie looks the key up again by that digest, so revoking the key ends its sessions on
the next request, and a session has exactly the key's scope.

The cookie authenticates the ``/v1`` routes too (the page reads the documented routes). For
any method but GET/HEAD/OPTIONS a cookie-authenticated request must also carry the
session's token in :data:`CSRF_HEADER` (synchronizer token, compared in constant time),
which a page of another site cannot read or send; Bearer requests need none (a header, not
something the browser adds by itself). The login form has its own token (double-submit:
the same random value in a short-lived cookie and in the form), against logging someone in
under another key.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from relay.api.errors import ApiError
from relay.apikeys import ApiKey, ApiKeys, digest, stored_digest
from relay.connection import text
from relay.context import Context

COOKIE = "relay_session"
LOGIN_COOKIE = "relay_login"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 8 * 3600
"""A session lasts this long from login (log in again after)."""
LOGIN_TTL_S = 3600
"""How long a login form's token stays valid."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    """A random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def same(a: str, b: str) -> bool:
    """Constant-time equality of two tokens (False when either is empty)."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Session:
    """A live session: the key it was opened with (as stored now) and its CSRF token."""

    key: ApiKey
    csrf: str


class Sessions:
    """Open, read and end dashboard sessions in Redis."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = ctx.keys

    def open(self, plaintext: str) -> tuple[str, Session] | None:
        """A new session for the API key ``plaintext``: (its id for the cookie, the session);
        None when the key is wrong or revoked."""
        key = ApiKeys(self.ctx).authenticate(plaintext)
        if key is None:
            return None
        sid, csrf = new_token(), new_token()
        record: dict[str | bytes, str | bytes | int | float] = {
            "key": digest(plaintext),
            "name": key.name,
            "csrf": csrf,
            "created": self.ctx.now_ms(),
        }
        name = self.keys.session(digest(sid))
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping=record)  # type: ignore[arg-type]
            pipe.expire(name, SESSION_TTL_S)
            pipe.execute()
        return sid, Session(key, csrf)

    def get(self, sid: str) -> Session | None:
        """The session of cookie value ``sid`` with its key as stored now; None when there is
        none (expired, ended) or its key was revoked."""
        if not sid or len(sid) > 100:
            return None
        raw: dict[Any, Any] = self.ctx.conn.hgetall(self.keys.session(digest(sid)))
        fields = {text(k): text(v) for k, v in raw.items()}
        key_digest = fields.get("key", "")
        if not key_digest:
            return None
        stored: dict[Any, Any] = self.ctx.conn.hgetall(self.keys.apikey(key_digest))
        if not stored or not same(stored_digest(stored), key_digest):
            return None
        return Session(ApiKey.from_hash(stored), fields.get("csrf", ""))

    def end(self, sid: str) -> None:
        """Forget the session of cookie value ``sid`` (logging out)."""
        if sid and len(sid) <= 100:
            self.ctx.conn.delete(self.keys.session(digest(sid)))


def session_of(request: Request, ctx: Context) -> Session | None:
    """The session of the request's cookie, if any (one or two Redis round trips)."""
    sid = request.cookies.get(COOKIE)
    return Sessions(ctx).get(sid) if sid else None


def session_key(request: Request, ctx: Context) -> ApiKey | None:
    """The API key behind the request's session cookie; None without a live session. Raises
    403 for a method that changes something without the session's CSRF token."""
    session = session_of(request, ctx)
    if session is None:
        return None
    if request.method not in SAFE_METHODS and not same(
        request.headers.get(CSRF_HEADER, ""), session.csrf
    ):
        request.state.key_name = session.key.name
        raise ApiError(
            403,
            f"a request made with the dashboard's session cookie needs its {CSRF_HEADER} "
            "header (or use Authorization: Bearer)",
            code="csrf",
        )
    return session.key
