"""``Relay``: the library facade. ``from relay import Relay``.

::

    with Relay.from_env() as relay:
        msg_id = relay.send("+4915752982212", "Your code is 4711", device_id=260, urgent=True)
        print(relay.status(msg_id).state)

One ``Relay`` holds one :class:`relay.context.Context` (settings, Redis connection pool,
keys, store, clock, lazily the gateway client); it is safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis

from relay.clock import SYSTEM_CLOCK, Clock
from relay.closing import Closing
from relay.context import Context
from relay.errors import NotFoundError
from relay.produce.producer import DEFAULT_CHUNK, Producer
from relay.produce.validation import TimeToSend
from relay.settings import Settings, load_settings
from relay.store import Message

if TYPE_CHECKING:
    from relay.gateway import GatewayClient
    from relay.results.stats import Stats


class Relay(Closing):
    """Send messages, follow and cancel them, read the numbers.

    ``settings`` default to the environment (``RELAY_*``, ``.env``); ``conn`` to a pool on
    ``settings.redis_url``; ``gateway`` to a client made from settings on first use.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        conn: redis.Redis | None = None,
        clock: Clock = SYSTEM_CLOCK,
        gateway: GatewayClient | None = None,
    ) -> None:
        self.ctx = Context.from_settings(settings, conn=conn, clock=clock, gateway=gateway)
        self.producer = Producer(self.ctx)

    @classmethod
    def from_env(cls, **overrides: Any) -> Relay:
        """A relay configured from the environment, with ``overrides`` (setting names) on top."""
        return cls(load_settings(**overrides))

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def send(
        self,
        sendto: str,
        body: str,
        device_id: int,
        sim: int = 0,
        urgent: bool = False,
        customerid: int | None = None,
        timetosend: TimeToSend = None,
        key: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """Queue one message (scheduled when ``timetosend`` is in the future); return its id.

        With ``key`` seen before (within ``RELAY_IDEMPOTENCY_TTL``), return the first id
        and store nothing. ``ttl``: seconds from now within which it must be submitted,
        else it ends ``expired`` (default ``RELAY_DEFAULT_TTL``). Raises
        :class:`relay.errors.ValidationError` naming the field.
        """
        return self.producer.send(
            sendto,
            body,
            device_id,
            sim=sim,
            urgent=urgent,
            customerid=customerid,
            timetosend=timetosend,
            key=key,
            ttl=ttl,
        )

    def send_many(
        self, items: Iterable[Mapping[str, Any]], *, chunk_size: int = DEFAULT_CHUNK
    ) -> list[str]:
        """Queue many messages (mappings of the ``send`` fields); one id per item, in order.

        Everything is validated first: a bad item raises naming its index, nothing stored.
        """
        return self.producer.send_many(items, chunk_size=chunk_size)

    def status(self, msg_id: str) -> Message:
        """The message record. Raises :class:`relay.errors.NotFoundError` for an unknown id."""
        msg = self.ctx.store.get(msg_id)
        if msg is None:
            raise NotFoundError(f"no message {msg_id}")
        return msg

    def cancel(self, msg_id: str) -> Message:
        """Cancel a message still waiting in relay; return its record (state ``cancelled``).

        Raises ``NotFoundError``, or ``ConflictError`` once a worker has claimed it.
        """
        return self.producer.cancel(msg_id)

    def stats(self) -> Stats:
        """Lane depths, states, in-flight and awaiting numbers (see :mod:`relay.results.stats`)."""
        from relay.results.stats import collect

        return collect(self.ctx)

    def close(self) -> None:
        """Release the Redis connections and the gateway client (given ones too)."""
        self.ctx.close()
