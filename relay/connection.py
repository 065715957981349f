"""Redis connections from settings: one place that knows the URL options relay relies on.

``connect(settings)`` answers a :class:`redis.Redis` for ``redis://``, ``rediss://`` and
``unix://`` URLs, and for ``redis+sentinel://`` one that asks the Sentinels where the primary
is (:mod:`relay.sentinel`) and follows it through failovers. Every relay process — library,
worker (RQ's own calls included), scheduler thread, reconciler — gets its connection here.

What a failover (or a restart) costs, and what relay never does:

- **A pause, not a crash.** Taking a connection from the pool waits for a server up to
  ``RELAY_REDIS_RECONNECT_TIMEOUT`` seconds (connection refused, no primary known to the
  Sentinels yet, a server still loading), asking the Sentinels again on every attempt.
- **No blind resend.** A command whose reply was lost (the connection broke after it was
  sent) is *not* sent again: it may have run, and relay's scripts must not run twice (a
  repeated claim would drop the ids of the first, a repeated keyless send would store the
  message twice). The caller sees the error; a worker's sweep and recovery repair what a
  dead call left behind, and ``send`` is retried by its caller with the same ``key``.
- **Resend what a demoted primary refused.** A primary turned replica answers writes with
  READONLY (and unblocks blocked calls with UNBLOCKED); redis-py's Sentinel connection
  then drops the connection, and relay sends the command again to the new primary: the
  old one ran nothing (and whatever it ran is replaced when it resyncs from the new one).
"""

from __future__ import annotations

import re
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from relay.errors import ConfigError, RelayError
from relay.log import get_logger, register_secret
from relay.sentinel import is_sentinel_url, parse_sentinel_url
from relay.settings import Settings

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 5.0
SENTINEL_TIMEOUT_S = 1.0
"""Socket timeouts towards a Sentinel: an unresponsive one is skipped, not waited for."""
FIRST_PAUSE_S = 0.05
LONGEST_PAUSE_S = 1.0
"""Waits between two attempts to connect: doubling from the first to the longest."""
DEMOTED_RETRIES = 3


class RedisUnavailable(RelayError):
    """No Redis server answers at RELAY_REDIS_URL. Start one, or point the setting at one."""


class PrimaryMoved(redis.ConnectionError):
    """The server refused a call as a replica (READONLY) or unblocked it (UNBLOCKED): the primary
    was demoted in a failover. Nothing ran; the call is sent again to the new primary."""


# --- pools that wait for a server ----------------------------------------------------------


class _Patient:
    """Pool mixin: taking a connection waits up to ``patience`` s for a server to connect to."""

    patience: float = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.patience
        pause, waited_since = FIRST_PAUSE_S, None
        while True:
            try:
                conn = super().get_connection(*args, **kwargs)  # type: ignore[misc]
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError):
                raise
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.warning("redis.waiting", error=str(exc), up_to_s=round(left, 1))
                time.sleep(min(pause, left))
                pause = min(pause * 2, LONGEST_PAUSE_S)
                continue
            if waited_since is not None:
                log.warning("redis.reconnected", waited_s=round(time.monotonic() - waited_since, 2))
            return conn


class PatientPool(_Patient, redis.ConnectionPool):
    """A :class:`redis.ConnectionPool` that waits for its server (see :class:`_Patient`)."""


class PatientSentinelPool(_Patient, SentinelConnectionPool):
    """A Sentinel pool that waits for a primary (see :class:`_Patient`)."""


class FollowingConnection(SentinelManagedConnection):
    """A connection to the primary the Sentinels name that says when that primary was demoted."""

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_connected:
            # reconnecting here (a resend after PrimaryMoved) asks the Sentinels again,
            # rather than dialling the address of the demoted primary
            self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ConnectionError as exc:
            # redis-py turns a READONLY/UNBLOCKED reply into a ConnectionError (and drops
            # the connection, so the next connect asks the Sentinels again)
            if isinstance(exc.__context__, redis.ResponseError):
                raise PrimaryMoved(str(exc)) from exc
            raise


# --- connect -------------------------------------------------------------------------------


def connect(
    settings: Settings,
    *,
    check: bool = True,
    patience: float | None = None,
    **options: Any,
) -> redis.Redis:
    """A client for ``settings.redis_url`` (rediss:// and ACL users are URL parts; a
    ``redis+sentinel://`` URL follows the primary through failovers).

    With ``check``, PING first and raise :class:`RedisUnavailable` with the URL (password
    hidden) when nothing answers — at once, without waiting for a server, unless Sentinels
    answer (a failover in progress is waited for, as by any call). Afterwards taking a
    connection waits up to ``patience`` s (default ``RELAY_REDIS_RECONNECT_TIMEOUT``) for a
    server. Every reply is awaited at most ``RELAY_REDIS_SOCKET_TIMEOUT`` s (a lost reply
    raises :class:`redis.TimeoutError` instead of hanging the thread). ``options`` go to the
    connections (``relay serve`` sets a shorter ``socket_timeout`` and ``max_connections``,
    and no patience: it answers 503 at once instead).
    """
    sentinel = is_sentinel_url(settings.redis_url)
    try:
        conn = _sentinel_client(settings, options) if sentinel else _client(settings, options)
    except ValueError as exc:
        raise ConfigError(f"RELAY_REDIS_URL: {exc}") from None
    pool = conn.connection_pool
    if check:
        try:
            try:
                conn.ping()
            except redis.ConnectionError:
                if not (sentinel and _sentinels_monitor(pool)):
                    raise
                log.warning("redis.no_primary_yet", url=safe_url(settings.redis_url))
                _set_patience(pool, settings.redis_reconnect_timeout)
                conn.ping()
        except redis.RedisError as exc:
            conn.close()
            raise RedisUnavailable(
                f"cannot reach Redis at {safe_url(settings.redis_url)}: {exc}"
            ) from None
    _set_patience(pool, settings.redis_reconnect_timeout if patience is None else patience)
    return conn


def connect_async(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client for ``settings.redis_url`` (``relay serve``'s event streams), a
    ``redis+sentinel://`` URL following the primary; ``options`` go to the connections
    (``socket_timeout`` is ``RELAY_REDIS_SOCKET_TIMEOUT`` unless given)."""
    options = {"socket_timeout": settings.redis_socket_timeout, **options}
    if not is_sentinel_url(settings.redis_url):
        return aioredis.Redis.from_url(settings.redis_url, **options)
    url = parse_sentinel_url(settings.redis_url)
    secret = settings.redis_sentinel_password
    sentinel = AsyncSentinel(
        list(url.sentinels),
        sentinel_kwargs={
            "password": secret.get_secret_value() if secret is not None else None,
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        },
    )
    client: aioredis.Redis = sentinel.master_for(
        url.master, db=url.db, username=url.username, password=url.password, **options
    )
    return client


def _set_patience(pool: object, seconds: float) -> None:
    if isinstance(pool, _Patient):
        pool.patience = seconds


def _sentinels_monitor(pool: object) -> bool:
    """Whether a Sentinel of a Sentinel pool answers and monitors its master (by name)."""
    manager = getattr(pool, "sentinel_manager", None)
    name = getattr(pool, "service_name", None)
    for node in getattr(manager, "sentinels", []):
        try:
            if name in node.sentinel_masters():
                return True
        except redis.RedisError:
            continue
    return False


def _client(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    # TCP keepalive is a TCP option: redis-py refuses it for unix:// sockets.
    keepalive = {} if settings.redis_url.startswith("unix:") else {"socket_keepalive": True}
    pool = PatientPool.from_url(
        settings.redis_url,
        **{
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": settings.redis_socket_timeout,
            "health_check_interval": 30,
            **keepalive,
            **options,
        },
    )
    register_secret(pool.connection_kwargs.get("password"))
    return redis.Redis.from_pool(pool)


def _sentinel_client(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    url = parse_sentinel_url(settings.redis_url)
    secret = settings.redis_sentinel_password
    sentinel_password = secret.get_secret_value() if secret is not None else None
    register_secret(url.password)
    register_secret(sentinel_password)
    sentinel = Sentinel(
        list(url.sentinels),
        sentinel_kwargs={
            "password": sentinel_password,
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        },
    )
    client: redis.Redis = sentinel.master_for(
        url.master,
        connection_pool_class=PatientSentinelPool,
        connection_class=FollowingConnection,
        **{
            "db": url.db,
            "username": url.username,
            "password": url.password,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": settings.redis_socket_timeout,
            "socket_keepalive": True,
            "health_check_interval": 30,
            "retry": Retry(
                ExponentialBackoff(cap=LONGEST_PAUSE_S, base=FIRST_PAUSE_S),
                DEMOTED_RETRIES,
                supported_errors=(PrimaryMoved,),
            ),
            **options,
        },
    )
    return client


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: the userinfo's (``redis://``,
    ``redis+sentinel://``) and a ``password=`` query parameter's."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{creds}@{host}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.I)


def text(value: bytes | str) -> str:
    """A Redis reply (bytes, or str on a decoding connection) as text."""
    return value.decode() if isinstance(value, bytes) else value


def maybe_text(value: bytes | str | None) -> str | None:
    """Like :func:`text`, passing None through (a missing key or field)."""
    return None if value is None else text(value)


def delete_prefix(conn: redis.Redis, prefix: str, *, rq_jobs: bool = True) -> int:
    """Delete every key under ``<prefix>:`` and, with ``rq_jobs``, RQ's keys of the prefix:
    its queues and registries (``rq:<kind>:<prefix>-<queue>``) and its jobs' hashes
    (``rq:job:<job tag>-...``: relay's job ids start with the prefix). SCAN-based, in chunks;
    returns how many keys went."""
    from relay.keys import Keys

    patterns = [f"{prefix}:*"]
    if rq_jobs:
        patterns.append(f"rq:*:{prefix}-*")
        tag = Keys(prefix).job_tag
        if tag != prefix:
            patterns.append(f"rq:*:{tag}-*")
    deleted = sum(delete_matching(conn, pattern) for pattern in patterns)
    if rq_jobs:
        queues = [q for q in conn.smembers("rq:queues") if f":{prefix}-".encode() in q]
        if queues:
            conn.srem("rq:queues", *queues)
    return deleted


def delete_matching(conn: redis.Redis, pattern: str) -> int:
    """Delete every key matching the glob ``pattern`` (SCAN-based, in chunks); returns how
    many keys went."""
    deleted = 0
    batch: list[bytes] = []
    for key in conn.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(conn.delete(*batch))
            batch = []
    if batch:
        deleted += int(conn.delete(*batch))
    return deleted
