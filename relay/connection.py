"""Redis connections from settings: one place that knows the URL options relay relies on."""

from __future__ import annotations

import redis

from relay.errors import ConfigError, RelayError
from relay.settings import Settings


class RedisUnavailable(RelayError):
    """No Redis server answers at RELAY_REDIS_URL. Start one, or point the setting at one."""


def connect(settings: Settings, *, check: bool = True) -> redis.Redis:
    """A connection pool to ``settings.redis_url`` (rediss:// and ACL users are URL parts).

    With ``check``, PING first and raise :class:`RedisUnavailable` with the URL (password hidden).
    """
    # TCP keepalive is a TCP option: redis-py refuses it for unix:// sockets.
    keepalive = {} if settings.redis_url.startswith("unix:") else {"socket_keepalive": True}
    try:
        conn = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=5,
            health_check_interval=30,
            **keepalive,
        )
    except ValueError as exc:
        raise ConfigError(f"RELAY_REDIS_URL: {exc}") from None
    if check:
        try:
            conn.ping()
        except redis.RedisError as exc:
            raise RedisUnavailable(
                f"cannot reach Redis at {safe_url(settings.redis_url)}: {exc}"
            ) from None
    return conn


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{creds}@{host}"


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
    deleted = 0
    for pattern in patterns:
        batch: list[bytes] = []
        for key in conn.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(conn.delete(*batch))
                batch = []
        if batch:
            deleted += int(conn.delete(*batch))
    if rq_jobs:
        queues = [q for q in conn.smembers("rq:queues") if f":{prefix}-".encode() in q]
        if queues:
            conn.srem("rq:queues", *queues)
    return deleted
