"""The things every relay component works with, made once per process.

A worker process sets its context with :func:`use` at start-up; RQ job functions (which
receive only plain JSON arguments) get it with :func:`current`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from relay.clock import SYSTEM_CLOCK, Clock
from relay.connection import connect
from relay.keys import Keys
from relay.settings import Settings, load_settings
from relay.store import Store

if TYPE_CHECKING:
    from relay.gateway import GatewayClient


@dataclass
class Context:
    settings: Settings
    conn: redis.Redis
    clock: Clock = SYSTEM_CLOCK
    keys: Keys = field(init=False)
    store: Store = field(init=False)
    _gateway: GatewayClient | None = None

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.key_prefix)
        self.store = Store(
            self.conn,
            self.keys,
            clock=self.clock,
            events_maxlen=self.settings.events_maxlen,
            record_ttl=self.settings.record_ttl,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        conn: redis.Redis | None = None,
        clock: Clock = SYSTEM_CLOCK,
        gateway: GatewayClient | None = None,
    ) -> Context:
        settings = settings or load_settings()
        return cls(settings=settings, conn=conn or connect(settings), clock=clock, _gateway=gateway)

    @property
    def gateway(self) -> GatewayClient:
        """The gateway client, made from settings on first use."""
        if self._gateway is None:
            from relay.gateway import GatewayClient

            self._gateway = GatewayClient.from_settings(self.settings)
        return self._gateway

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
        self.conn.close()


_current: Context | None = None


def use(ctx: Context) -> Context:
    """Make ``ctx`` this process's context (worker start-up, tests)."""
    global _current
    _current = ctx
    return ctx


def swap(ctx: Context | None) -> Context | None:
    """Make ``ctx`` this process's context (or none); returns the one it replaces."""
    global _current
    previous, _current = _current, ctx
    return previous


def current() -> Context:
    """This process's context; made from the environment the first time if none was set."""
    global _current
    if _current is None:
        _current = Context.from_settings()
    return _current
