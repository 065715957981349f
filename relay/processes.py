"""relay's processes as Redis sees them: heartbeats, who is dead, and leases.

Every long-running process (a worker, through its duties thread; a reconciler) writes a
heartbeat to ``Keys.processes`` (name → JSON ``{"kind", "seen" (ms), "pid", "host"}``)
about every second. A process whose beat is older than ``RELAY_PROCESS_DEAD_AFTER`` is
dead: the sweep re-arms lanes whose ticket job it had started, gives back its leases, and
recovery takes its in-flight batches without waiting for ``RELAY_INFLIGHT_TIMEOUT``. A
name with no beat is not judged here (it is not a relay process, or it never started).

A :class:`Lease` is a key one named owner holds for a while (``lua/lease.lua``): a
reconciler's lease on a device, the device sync's, a verification's. It expires on its own
when its owner dies; the sweep gives back a dead owner's lease at once.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from relay import scripts
from relay.connection import text

if TYPE_CHECKING:
    from relay.context import Context
    from relay.settings import Settings

LEASE_MARGIN_S = 30.0
"""Added to the longest gateway read when sizing a lease held across gateway calls."""


def process_name(kind: str) -> str:
    """A name unique to this process: ``kind:host:pid:random`` (RQ worker names too)."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Beat:
    """A process's last heartbeat."""

    name: str
    kind: str
    seen_ms: int
    pid: int | None = None
    host: str | None = None

    def age_s(self, now_ms: int) -> float:
        return (now_ms - self.seen_ms) / 1000

    @classmethod
    def parse(cls, name: bytes | str, raw: bytes | str) -> Beat | None:
        """The beat stored for ``name``; None when unreadable."""
        try:
            data = json.loads(raw)
            seen = data["seen"]
        except (ValueError, KeyError, TypeError):
            return None
        if isinstance(seen, bool) or not isinstance(seen, int | float):
            return None
        pid = data.get("pid")
        return cls(
            text(name),
            str(data.get("kind") or ""),
            int(seen),
            pid if isinstance(pid, int) else None,
            data.get("host") if isinstance(data.get("host"), str) else None,
        )


def beat(ctx: Context, name: str, kind: str) -> None:
    """Record that process ``name`` (of ``kind``: worker, reconciler, serve) is alive now."""
    data = {"kind": kind, "seen": ctx.now_ms(), "pid": os.getpid(), "host": socket.gethostname()}
    ctx.conn.hset(ctx.keys.processes, name, json.dumps(data))


def forget(ctx: Context, name: str) -> None:
    """Remove ``name``'s heartbeat (on a clean exit)."""
    ctx.conn.hdel(ctx.keys.processes, name)


def read_beats(ctx: Context) -> dict[str, Beat]:
    """Every process's last heartbeat, by name."""
    raw: dict[Any, Any] = ctx.conn.hgetall(ctx.keys.processes)
    beats = (Beat.parse(name, value) for name, value in raw.items())
    return {b.name: b for b in beats if b is not None}


def is_dead(ctx: Context, beat: Beat | None) -> bool:
    """Whether the process of ``beat`` went silent (``RELAY_PROCESS_DEAD_AFTER``).

    No beat (None) is not dead: a name relay never heard of is not judged here.
    """
    if beat is None:
        return False
    return beat.age_s(ctx.now_ms()) > ctx.settings.process_dead_after


def lease_ttl_ms(settings: Settings) -> int:
    """How long a lease held across gateway reads lives: the longest read, with its retries,
    plus :data:`LEASE_MARGIN_S`. Holders renew it before each call."""
    longest = settings.gateway_timeout * (settings.gateway_retries + 1)
    return int((longest + LEASE_MARGIN_S) * 1000)


class LeaseLost(Exception):
    """The owner no longer holds the lease it works under (it stalled past the TTL)."""


class Lease:
    """A named lease in Redis held by one owner with a TTL (``lua/lease.lua``)."""

    def __init__(self, conn: redis.Redis, key: str, owner: str, ttl_ms: int) -> None:
        self.conn, self.key, self.owner, self.ttl_ms = conn, key, owner, ttl_ms

    def hold(self, ttl_ms: int | None = None) -> bool:
        """Take the lease, or renew it when already ours (for ``ttl_ms``, default the
        lease's own); False when someone else holds it."""
        ttl = self.ttl_ms if ttl_ms is None else max(1, ttl_ms)
        return bool(scripts.call(self.conn, "lease", [self.key], [self.owner, ttl]))

    def renew(self) -> None:
        """Renew, or raise :class:`LeaseLost` when another process took it meanwhile."""
        if not self.hold():
            raise LeaseLost(self.key)

    def release(self) -> bool:
        """Give the lease back if ``owner`` still holds it; True when it did."""
        return bool(scripts.call(self.conn, "lease", [self.key], [self.owner, 0]))
