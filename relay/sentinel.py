"""``redis+sentinel://`` URLs: which Sentinels to ask for which primary, with which database.

``redis+sentinel://[[user]:password@]host1:port1[,host2:port2...]/<master>[/<db>]``

The userinfo is the data node's (the primary's and replicas') user and password; the
Sentinels' own password comes from ``RELAY_REDIS_SENTINEL_PASSWORD``. A host without a port
uses 26379, Sentinel's default. The connection made from it is in :mod:`relay.connection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

SCHEME = "redis+sentinel://"
DEFAULT_PORT = 26379
SHAPE = "redis+sentinel://[[user]:password@]host:port[,host:port...]/<master>[/<db>]"


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``url`` taken apart; ValueError says what is wrong (and never repeats a password)."""
    if not is_sentinel_url(url):
        raise ValueError(f"must start with {SCHEME}")
    rest = url[len(SCHEME) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"takes no query or fragment: {SHAPE}")
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    sentinels = tuple(_host(part) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ValueError(f"names no Sentinel host: {SHAPE}")
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise ValueError(f"names no master (the name Sentinel monitors): {SHAPE}")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"the database after the master must be a number: {SHAPE}")
    username, password = _userinfo(userinfo)
    return SentinelUrl(
        sentinels=sentinels,
        master=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
    )


def _host(part: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [::1]:26379
        host, _, port = part[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = part.partition(":")
    if not host:
        raise ValueError(f"has an empty Sentinel host: {SHAPE}")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Sentinel {host!r} has no valid port ({port!r})")
    return host, int(port)


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)
