"""API keys of ``relay serve``: created, listed and revoked with ``relay apikey``.

A key is ``rk_`` followed by 43 random URL-safe characters (256 bits from :mod:`secrets`),
shown once when it is made. Redis keeps only its SHA-256 digest: a key that long and random
needs no slow password hash, and the digest is what requests are looked up by
(``Keys.apikey(digest)``, one ``HGETALL`` per request), then compared again in constant time.
``Keys.apikeys`` maps names to digests so keys can be listed and revoked by name.

Nothing is cached in a process: a revoked key fails on the next request to every server
process. ``last used`` is written at most once per :data:`TOUCH_EVERY_MS` per key (the time
read with the key says when it is due), through ``lua/apikey_touch.lua``, which never brings
back a key revoked meanwhile.

Scopes: ``send`` enqueues, cancels and reads its messages' status; ``read`` reads status,
stats, devices, dead messages and events; ``admin`` does everything, including retrying
and purging dead messages and managing keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import redis

from relay import scripts
from relay.connection import maybe_text, text
from relay.context import Context
from relay.errors import ConflictError, ValidationError

SCOPES = ("send", "read", "admin")
"""The scopes a key may be created with."""
PREFIX = "rk_"
TOUCH_EVERY_MS = 60_000
"""``last used`` is written at most this often (ms) per key."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# What each scope grants; a route names the permission it needs.
# ``status`` (one message's record) is granted to every scope: a sender follows its messages.
SEND, READ, STATUS, ADMIN = "send", "read", "status", "admin"
GRANTS: dict[str, frozenset[str]] = {
    "send": frozenset({SEND, STATUS}),
    "read": frozenset({READ, STATUS}),
    "admin": frozenset({SEND, READ, STATUS, ADMIN}),
}


def digest(plaintext: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()


def stored_digest(raw: dict[Any, Any]) -> str:
    """The ``digest`` field of a stored key's hash (empty when there is none)."""
    return maybe_text(raw.get(b"digest") or raw.get("digest")) or ""


@dataclass(frozen=True)
class ApiKey:
    """One API key as stored (never its plaintext). ``scopes`` holds the scope it was
    created with; :meth:`allows` says what that grants."""

    name: str
    scopes: frozenset[str]
    created_ms: int
    last_used_ms: int | None

    def allows(self, permission: str) -> bool:
        """Whether this key may do what needs ``permission`` (``send``, ``read``, ``admin``)."""
        return any(permission in GRANTS.get(scope, frozenset()) for scope in self.scopes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``relay apikey list --json``)."""
        return {
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created_ms": self.created_ms,
            "last_used_ms": self.last_used_ms,
        }

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> ApiKey:
        h = {text(k): text(v) for k, v in raw.items()}
        used = h.get("used")
        return cls(
            name=h.get("name", ""),
            scopes=frozenset(s for s in h.get("scope", "").split(",") if s),
            created_ms=int(h.get("created") or 0),
            last_used_ms=int(used) if used else None,
        )


class ApiKeys:
    """Create, authenticate, list and revoke API keys in Redis."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = ctx.keys

    def create(self, name: str, scope: str) -> tuple[ApiKey, str]:
        """A new key named ``name`` with ``scope``: (its record, its plaintext, shown once).

        Raises :class:`ValidationError` for a bad name or scope and :class:`ConflictError`
        when the name is taken (revoke it first).
        """
        if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
            raise ValidationError(
                "name",
                "must be 1-64 letters, digits, '.', '_' or '-', starting with one letter or digit",
            )
        if scope not in SCOPES:
            raise ValidationError("scope", f"must be one of {', '.join(SCOPES)}, not {scope!r}")
        plaintext = PREFIX + secrets.token_urlsafe(32)
        key_digest = digest(plaintext)
        now = self.ctx.now_ms()
        record: dict[str | bytes, str | bytes | int | float] = {
            "name": name,
            "scope": scope,
            "created": now,
            "digest": key_digest,
        }
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.apikeys)  # type: ignore[no-untyped-call]
                if pipe.hexists(self.keys.apikeys, name):
                    raise ConflictError(f"an API key named {name!r} exists; revoke it first")
                pipe.multi()
                pipe.hset(self.keys.apikeys, name, key_digest)
                pipe.hset(self.keys.apikey(key_digest), mapping=record)  # type: ignore[arg-type]
                pipe.execute()
            except redis.WatchError:
                raise ConflictError(f"an API key named {name!r} was just created") from None
        return ApiKey(name, frozenset({scope}), now, None), plaintext

    def authenticate(self, plaintext: str) -> ApiKey | None:
        """The key whose plaintext this is, or None (unknown, revoked, malformed)."""
        if not plaintext.startswith(PREFIX) or len(plaintext) > 200:
            return None
        key_digest = digest(plaintext)
        raw: dict[Any, Any] = self.ctx.conn.hgetall(self.keys.apikey(key_digest))
        stored = stored_digest(raw)
        if not stored or not hmac.compare_digest(stored, key_digest):
            return None
        key = ApiKey.from_hash(raw)
        now = self.ctx.now_ms()
        if key.last_used_ms is None or now - key.last_used_ms >= TOUCH_EVERY_MS:
            scripts.call(self.ctx.conn, "apikey_touch", [self.keys.apikey(key_digest)], [now])
        return key

    def list(self) -> list[ApiKey]:
        """Every key, by name."""
        index: dict[Any, Any] = self.ctx.conn.hgetall(self.keys.apikeys)
        names = sorted(text(n) for n in index)
        pipe = self.ctx.conn.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(
                self.keys.apikey(maybe_text(index.get(name.encode(), index.get(name))) or "")
            )
        return [ApiKey.from_hash(raw) for raw in pipe.execute() if raw]

    def revoke(self, name: str) -> bool:
        """Delete the key named ``name``; False when there is none. Takes effect on the next
        request of every server process."""
        key_digest = maybe_text(self.ctx.conn.hget(self.keys.apikeys, name)) or ""
        if not key_digest:
            return False
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.apikeys, name)
            pipe.delete(self.keys.apikey(key_digest))
            removed, _ = pipe.execute()
        return bool(removed)
