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
