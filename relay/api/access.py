"""Access logs and request metrics, as one plain ASGI middleware (no per-request objects).

One structlog line per request (``http.request``): method, route template (``/v1/messages/
{msg_id}``, never the path with its values or query: a ``token=`` never reaches a log),
status, duration in ms, and the API key's *name* when one was checked. The same request
counts in ``relay_http_requests_total{method,route,status}`` and
``relay_http_request_duration_seconds{method,route,status}``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.log import get_logger

log = get_logger("relay.api.access")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """The request counter and latency histogram of one app, in its own registry (None: in
    none, as in prometheus_client's multiprocess mode, where every process writes them to
    ``PROMETHEUS_MULTIPROC_DIR`` and a ``MultiProcessCollector`` adds them up)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "relay_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels,
            registry=registry,
        )
        self.latency = Histogram(
            "relay_http_request_duration_seconds",
            "Time to answer HTTP requests (to the end of the body), by route and status.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(method, route, code).inc()
        self.latency.labels(method, route, code).observe(seconds)


def route_of(scope: Scope) -> str:
    """The route template the router matched, or ``unmatched`` (no path values in labels)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class AccessLog:
    """ASGI middleware: times each HTTP request, then logs it and counts it."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, *, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._done(scope, status[0], time.perf_counter() - start)

    def _done(self, scope: Scope, status: int, seconds: float) -> None:
        method, route = str(scope.get("method", "")), route_of(scope)
        self.metrics.observe(method, route, status, seconds)
        if self.enabled:
            state: dict[str, Any] = scope.get("state") or {}
            log.info(
                "http.request",
                method=method,
                route=route,
                status=status,
                ms=round(seconds * 1000, 2),
                key=state.get("key_name"),
            )
