"""HTTP exchanges with the gateway: one pooled client, answer decoding, failure policies.

Two separate signals come back (docs/gateway-api.md): the HTTP status and the JSON ``error`` field.

=============================================  ==========================================
what happened                                  raised
=============================================  ==========================================
HTTP 5xx                                       :class:`GatewayServerError`
body empty, not JSON, or JSON of a wrong shape :class:`GatewayBadResponse`
``"error":1`` about the token / login          :class:`GatewayAuthError`
any other ``"error":1``                        :class:`GatewayRejected` (gateway's words)
other non-2xx without an ``"error":1`` body    :class:`GatewayBadResponse`
=============================================  ==========================================

:meth:`Wire.read` retries transport errors, 5xx and bad responses (never ``"error":1``);
:meth:`Wire.submit` never retries and turns each failure into whether the gateway may have
stored anything: see :func:`submit_failure`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx
import pydantic

from relay.clock import SYSTEM_CLOCK, Clock
from relay.errors import (
    GatewayAuthError,
    GatewayBadResponse,
    GatewayError,
    GatewayRejected,
    GatewayServerError,
    GatewayUnavailable,
    NotSent,
    OutcomeUnknown,
)
from relay.gateway.forms import Form
from relay.log import get_logger, redact_text

T = TypeVar("T")
Files = Mapping[str, tuple[str, bytes, str]]

log = get_logger(__name__)
_USER_AGENT = "relay-sms"

# Words of the gateway's refusals of a token or a login ("Wrong token", "Token is not
# valid", "Login or password incorrect", "Unauthorized").
_AUTH_WORDS = re.compile(r"token|login|passw|auth|credential|api.?key", re.I)
_EXCERPT = 80

# Failures that happen before a single byte of the request leaves: httpcore raises
# ConnectError/ConnectTimeout only while opening the TCP connection or its TLS handshake
# (httpcore/_backends/sync.py: connect_tcp, start_tls), PoolTimeout while waiting for a free
# pooled connection, UnsupportedProtocol when the URL scheme has no transport.
NOT_SENT_ERRORS: tuple[type[httpx.RequestError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def decode_answer(endpoint: str, response: httpx.Response, *, login: bool = False) -> Any:
    """The JSON value of ``response``, or the gateway error it stands for.

    ``login`` marks calls whose only input is the credentials (``gettoken``): every
    ``"error":1`` there is an auth error, whatever its wording.
    """
    if response.status_code >= 500:
        raise GatewayServerError(response.status_code, endpoint=endpoint)
    payload = parse_json(endpoint, response)
    if isinstance(payload, dict):
        raise_for_error_field(endpoint, payload, login=login)
    if not response.is_success:
        raise GatewayBadResponse(
            f"{endpoint}: HTTP {response.status_code} without a gateway error in the body"
        )
    return payload


def parse_json(endpoint: str, response: httpx.Response) -> Any:
    """The body as JSON whatever its content type (PHP often says text/html); else bad response."""
    text = response.content.decode("utf-8-sig", errors="replace").strip()
    if not text:
        raise GatewayBadResponse(f"{endpoint}: empty body (HTTP {response.status_code})")
    try:
        return json.loads(text)
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        excerpt = redact_text(" ".join(text[:_EXCERPT].split()))
        raise GatewayBadResponse(
            f"{endpoint}: body is not JSON ({kind}, HTTP {response.status_code}): {excerpt!r}"
        ) from None


def is_error_flag(value: Any) -> bool:
    """Whether an ``error`` field says "error": 1, "1", true, "true", or any other message."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    return text not in ("", "0", "false", "no", "ok")


def raise_for_error_field(endpoint: str, payload: dict[str, Any], *, login: bool = False) -> None:
    """Raise :class:`GatewayAuthError` or :class:`GatewayRejected` when ``payload`` is an error."""
    if not is_error_flag(payload.get("error")):
        return
    message = str(payload.get("message") or "").strip() or "error without a message"
    if login or _AUTH_WORDS.search(message):
        raise GatewayAuthError(f"{endpoint}: gateway refused the credentials: {message}")
    raise GatewayRejected(message, endpoint=endpoint)


def shape_error(endpoint: str, exc: Exception) -> GatewayBadResponse:
    """A :class:`GatewayBadResponse` for an answer that did not fit its model.

    Names the offending fields only, never their values (a ``gettoken`` answer holds a token).
    """
    if isinstance(exc, pydantic.ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors(include_input=False)[:3]
        ]
        detail = "; ".join(problems)
    else:
        detail = str(exc)
    return GatewayBadResponse(f"{endpoint}: answer of unexpected shape: {detail}")


def describe(exc: BaseException) -> str:
    """``ReadTimeout: timed out``: the class and message of a transport failure."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def submit_failure(endpoint: str, exc: httpx.RequestError) -> GatewayError:
    """What a failed submitting call means for the messages in it.

    :class:`NotSent` only for :data:`NOT_SENT_ERRORS`, which provably fail before the request
    is written. Everything else may have reached the gateway, so it is
    :class:`OutcomeUnknown`: read/write timeouts, resets, 5xx, unreadable answers, and also
    ``RemoteProtocolError`` / ``ReadError`` / ``WriteError`` on a pooled keep-alive
    connection the server had just closed. That last case usually means nothing was sent
    (httpcore drops connections it sees closed before reuse, but the close can race the
    write); it cannot be told apart from a drop after the gateway stored the request, so it
    is treated conservatively and the caller verifies. ``ProxyError`` is likewise
    conservative.
    """
    if isinstance(exc, NOT_SENT_ERRORS):
        return NotSent(f"{endpoint}: request never reached the gateway: {describe(exc)}")
    return OutcomeUnknown(f"{endpoint}: the gateway may have stored it: {describe(exc)}")


def outcome_name(exc: BaseException) -> str:
    """Short outcome label of a failed exchange, for the per-call log line."""
    names: list[tuple[type[BaseException], str]] = [
        (GatewayAuthError, "auth_error"),
        (GatewayRejected, "rejected"),
        (GatewayServerError, "server_error"),
        (GatewayBadResponse, "bad_response"),
    ]
    for kind, name in names:
        if isinstance(exc, kind):
            return name
    return type(exc).__name__


class Backoff:
    """Capped exponential backoff with "equal jitter": attempt ``n`` waits a random time in
    ``[d/2, d]`` with ``d = min(maximum, base * 2**n)``, so retries of many workers spread out
    but never shrink to nothing.
    """

    def __init__(self, base: float, maximum: float, rng: random.Random | None = None) -> None:
        if base < 0 or maximum < 0:
            raise ValueError("backoff times must not be negative")
        self.base = base
        self.maximum = maximum
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first)."""
        ceiling = min(self.maximum, self.base * (2.0 ** min(attempt, 32)))
        return self._rng.uniform(ceiling / 2, ceiling)


class Wire:
    """One pooled, keep-alive HTTP client to the gateway and the two failure policies.

    Every request is a POST form to ``base_url + endpoint``; bodies are never logged. Each
    HTTP exchange logs one ``gateway.request`` debug line: endpoint, attempt, HTTP status,
    duration, outcome.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        retries: int,
        backoff: Backoff,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = base_url
        self.retries = retries
        self._backoff = backoff
        self._clock = clock or SYSTEM_CLOCK
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def read(
        self, endpoint: str, form: Form, parse: Callable[[Any], T], *, login: bool = False
    ) -> T:
        """A read-only exchange: transport errors, 5xx and unreadable answers are retried
        ``retries`` times with backoff, then raised as :class:`GatewayUnavailable` (a
        transport error chained as its cause). ``"error":1`` answers are raised at once.
        """
        attempt = 0
        while True:
            failure: GatewayUnavailable
            try:
                return self._exchange(endpoint, form, parse, attempt=attempt + 1, login=login)
            except httpx.RequestError as exc:
                failure = GatewayUnavailable(f"{endpoint}: {describe(exc)}")
                failure.__cause__ = exc
            except GatewayUnavailable as exc:
                failure = exc
            if attempt >= self.retries:
                raise failure
            self._clock.sleep(self._backoff.delay(attempt))
            attempt += 1

    def submit(
        self, endpoint: str, form: Form, parse: Callable[[Any], T], files: Files | None = None
    ) -> T:
        """A submitting exchange, sent exactly once: a failure raises :class:`NotSent` or
        :class:`OutcomeUnknown` (cause chained), an ``"error":1`` answer its definite error.
        """
        try:
            return self._exchange(endpoint, form, parse, files=files)
        except httpx.RequestError as exc:
            raise submit_failure(endpoint, exc) from exc
        except GatewayUnavailable as exc:
            raise OutcomeUnknown(f"{endpoint}: the gateway may have stored it: {exc}") from exc

    def _exchange(
        self,
        endpoint: str,
        form: Form,
        parse: Callable[[Any], T],
        *,
        files: Files | None = None,
        attempt: int = 1,
        login: bool = False,
    ) -> T:
        """POST ``form`` once, decode and parse the answer, log one line whatever happens."""
        started = time.perf_counter()
        status: int | None = None
        outcome = "ok"
        try:
            response = self._http.post(self.base_url + endpoint, data=form, files=files)
            status = response.status_code
            payload = decode_answer(endpoint, response, login=login)
            try:
                return parse(payload)
            except (ValueError, TypeError, ArithmeticError) as exc:  # a validator's own error
                raise shape_error(endpoint, exc) from None
        except BaseException as exc:
            outcome = outcome_name(exc)
            raise
        finally:
            log.debug(
                "gateway.request",
                endpoint=endpoint,
                attempt=attempt,
                http_status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                outcome=outcome,
            )
