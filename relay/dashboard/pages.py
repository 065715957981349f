"""The dashboard's routes: ``/dashboard``, its login and logout, and its assets.

The page is a shell rendered here (no data in it); its script reads the documented ``/v1``
routes (stats, devices, history, dead, events, lookup) with the session cookie or the
Bearer key the page was opened with, so what the page shows a script can read. Every asset
comes from this package (``relay/dashboard/assets``): nothing from a CDN, and the pages'
Content-Security-Policy lets nothing else load.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from relay.api.auth import authorize, bearer_token
from relay.api.errors import ApiError
from relay.api.sessions import (
    COOKIE,
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    SESSION_TTL_S,
    Session,
    Sessions,
    new_token,
    same,
    session_of,
)
from relay.api.state import ApiState, api_state, read_body
from relay.apikeys import ADMIN, READ, ApiKey

ASSETS = "/dashboard/assets"
LOGIN = "/dashboard/login"
FORM_MAX = 4096
"""Largest login or logout form read (bytes)."""
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """The folder of the dashboard's packaged assets."""
    return Path(str(resources.files("relay.dashboard").joinpath("assets")))


@cache
def template(name: str) -> Template:
    text = resources.files("relay.dashboard").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def render(page: str, status: int = 200, **values: str) -> HTMLResponse:
    """Template ``page`` with ``values`` HTML-escaped, and the pages' security headers."""
    body = template(page).substitute({k: html.escape(v) for k, v in values.items()})
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def install(app: FastAPI) -> None:
    """Serve the dashboard on ``app``."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="dashboard-assets")


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    """The page, for a session or a Bearer key that may read; the login page otherwise."""
    api = api_state(request)
    api.redis_usable()
    try:
        key, session = await run_in_threadpool(_viewer, request, api)
    except ApiError as exc:
        if exc.status == 401 and bearer_token(request) is None:
            return RedirectResponse(LOGIN, status_code=303)
        raise
    scope = ", ".join(sorted(key.scopes))
    return render(
        "dashboard.html",
        name=key.name,
        scope=scope,
        csrf=session.csrf if session is not None else "",
        can_act="1" if key.allows(ADMIN) else "0",
    )


def _viewer(request: Request, api: ApiState) -> tuple[ApiKey, Session | None]:
    key = authorize(request, api.keys, READ)
    session = None if bearer_token(request) else session_of(request, api.relay.ctx)
    return key, session


@router.get(LOGIN)
async def login_page(request: Request) -> Response:
    """The login form (no data): a key in, a session cookie out."""
    return _login_form(request, "")


def _login_form(request: Request, error: str) -> Response:
    """The form, again with ``error`` when there is one (200 all the same: it is a page for
    people, who read the words; a refused key opens no session either way)."""
    token = new_token()
    response = render(
        "login.html",
        token=token,
        error=error,
        error_hidden="" if error else "hidden",
    )
    _cookie(request, response, LOGIN_COOKIE, token, LOGIN_TTL_S, path=LOGIN)
    return response


@router.post(LOGIN)
async def login(request: Request) -> Response:
    """Check the form's token and key; open a session and go to the dashboard."""
    api = api_state(request)
    form = _form(await read_body(request, FORM_MAX))
    if not same(form.get("token", ""), request.cookies.get(LOGIN_COOKIE, "")):
        return _login_form(request, "The form expired; please enter the key again.")
    api.redis_usable()
    opened = await run_in_threadpool(_open, api, form.get("key", "").strip())
    if opened is None:
        return _login_form(request, "Unknown or revoked API key.")
    sid, session = opened
    if not session.key.allows(READ):
        await run_in_threadpool(Sessions(api.relay.ctx).end, sid)
        scope = ", ".join(sorted(session.key.scopes))
        message = f"The key {session.key.name!r} has scope {scope}: it cannot read the dashboard."
        return _login_form(request, message)
    response = RedirectResponse("/dashboard", status_code=303)
    _cookie(request, response, COOKIE, sid, SESSION_TTL_S)
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN)
    request.state.key_name = session.key.name
    return response


def _open(api: ApiState, key: str) -> tuple[str, Session] | None:
    return Sessions(api.relay.ctx).open(key) if key else None


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    """End the session (the form carries its CSRF token) and forget the cookie."""
    api = api_state(request)
    form = _form(await read_body(request, FORM_MAX))
    sid = request.cookies.get(COOKIE, "")
    if sid:
        api.redis_usable()
        session = await run_in_threadpool(Sessions(api.relay.ctx).get, sid)
        if session is not None and not same(form.get("csrf", ""), session.csrf):
            raise ApiError(403, "logging out needs the page's CSRF token", code="csrf")
        await run_in_threadpool(Sessions(api.relay.ctx).end, sid)
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _form(raw: bytes) -> dict[str, str]:
    """The first value of each field of a urlencoded form."""
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items() if values}


def _cookie(
    request: Request, response: Response, name: str, value: str, max_age: int, path: str = "/"
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
