"""The events stream (``Keys.events``) and helpers for the services that read it.

Every state change of a message adds one entry to the stream, in the same Lua script that
changes the record (``lua/transition.lua``; ``lua/enqueue.lua`` for the first one). The
stream is capped near ``RELAY_EVENTS_MAXLEN`` entries. An entry's fields:

===============  ==========================================================================
``id``           the relay message id
``state``        the state the message moved to (``relay.states.State``)
``prev``         the state it left (empty for the first event of a message)
``final``        ``1`` when the message will not change again (``sent`` with ``final`` 1 is
                 a message whose delivery report never came), else ``0``
``at``           when, in ms since the epoch
``device_id``    device the message goes through
``sim``          SIM slot (0-5)
``customerid``   the sender's customer id, when given
``sms_id``       the gateway's id, once known
``status``       the gateway's last status code, once known
``statustitle``  the gateway's words for it
``error``        why a message failed or was rejected
``urgent``       ``1`` for urgent messages, else ``0``
===============  ==========================================================================

Devices add events too (``lua/presence.lua``, after a device sync): ``event``
``device.offline`` or ``device.online``, ``device_id``, ``state`` (``offline`` / ``online``),
``at`` and ``lastseen`` (ms, when the phone last polled); they have no message ``id``. A
message's entries have no ``event`` field: :class:`Event` reads it as ``message``.

Fields without a value are left out. A message's first event (``queued`` or ``scheduled``,
written by ``lua/enqueue.lua``) is lean, as it is the one every message has: no ``prev``,
``final`` 0 left out, no ``at`` (the message's creation, the time in its id), ``sim`` 0 and
``urgent`` 0 left out; :class:`Event` fills all of them in. The event's own id is the stream
entry id (``1718000000000-0``): unique, increasing, usable to deduplicate.

Readers use consumer groups, so several processes share the work and nothing is lost when
one dies: :func:`read_events` creates the group when needed, first takes over entries that
a dead consumer left unacknowledged for ``min_idle_ms`` (``XAUTOCLAIM``), then reads new
ones (``XREADGROUP``); :func:`ack` acknowledges what was handled (``XACK``). Delivery is at
least once: a reader that dies before acknowledging has its entries handed to another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from relay.connection import text
from relay.context import Context
from relay.ids import ID_LENGTH, id_time_ms
from relay.log import get_logger
from relay.states import FINAL_STATES

log = get_logger(__name__)

DEFAULT_MIN_IDLE_MS = 60_000
"""Entries unacknowledged this long (ms) are taken over from their consumer."""

_CLAIM_ROUNDS = 10
"""XAUTOCLAIM scans the pending list in steps; at most this many steps per read."""

_INT_FIELDS = ("device_id", "sim", "customerid", "sms_id", "status", "lastseen")
MESSAGE = "message"
"""The ``event`` of a message's state change (device events name themselves)."""
DEVICE_OFFLINE = "device.offline"
DEVICE_ONLINE = "device.online"
_TEXT_FIELDS = ("statustitle", "error")


@dataclass(frozen=True)
class Event:
    """One state change of one message, as read from the stream."""

    event_id: str
    id: str
    state: str
    prev: str | None
    final: bool
    at_ms: int
    device_id: int | None = None
    sim: int | None = None
    customerid: int | None = None
    sms_id: int | None = None
    status: int | None = None
    statustitle: str | None = None
    error: str | None = None
    urgent: bool = False
    event: str = MESSAGE
    lastseen_ms: int | None = None

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> Event:
        """Parse a stream entry (field values as Redis returns them)."""
        raw = {text(k): text(v) for k, v in fields.items()}
        ints = {name: int(raw[name]) if raw.get(name) else None for name in _INT_FIELDS}
        ints["lastseen_ms"] = ints.pop("lastseen")
        kind = raw.get("event") or MESSAGE
        if ints["sim"] is None and ints["device_id"] is not None and kind == MESSAGE:
            ints["sim"] = 0  # a lean first event leaves SIM 0 out
        texts = {name: raw.get(name) or None for name in _TEXT_FIELDS}
        return cls(
            event_id=text(entry_id),
            id=raw.get("id", ""),
            state=raw.get("state", ""),
            prev=raw.get("prev") or None,
            final=raw.get("final") == "1",
            at_ms=int(raw.get("at") or 0) or _created_ms(raw.get("id", "")),
            urgent=raw.get("urgent") == "1",
            event=kind,
            **ints,  # type: ignore[arg-type]
            **texts,  # type: ignore[arg-type]
        )

    @property
    def at(self) -> datetime:
        """When the change happened (aware, UTC)."""
        return datetime.fromtimestamp(self.at_ms / 1000, tz=UTC)

    @property
    def is_final(self) -> bool:
        """Whether the message ends with this event (a final state, or ``sent`` made final)."""
        return self.final or self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The JSON form webhooks send: ``event_id`` first, ``at`` as ISO 8601 and ``at_ms``;
        ``lastseen`` (ISO 8601) and ``lastseen_ms`` are null but on device events."""
        seen = None
        if self.lastseen_ms is not None:
            seen = datetime.fromtimestamp(self.lastseen_ms / 1000, tz=UTC)
        return {
            "event_id": self.event_id,
            "event": self.event,
            "id": self.id,
            "state": self.state,
            "prev": self.prev,
            "final": self.final,
            "at": self.at.isoformat(timespec="milliseconds"),
            "at_ms": self.at_ms,
            "device_id": self.device_id,
            "sim": self.sim,
            "customerid": self.customerid,
            "sms_id": self.sms_id,
            "status": self.status,
            "statustitle": self.statustitle,
            "error": self.error,
            "urgent": self.urgent,
            "lastseen": seen.isoformat(timespec="milliseconds") if seen else None,
            "lastseen_ms": self.lastseen_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`to_dict` (webhook jobs carry events in this form)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def _created_ms(msg_id: str) -> int:
    """A lean first event's time: its message's creation, the time in the id."""
    try:
        return id_time_ms(msg_id) if len(msg_id) == ID_LENGTH else 0
    except ValueError:
        return 0


def ensure_group(ctx: Context, group: str, *, start: str = "0") -> bool:
    """Create consumer group ``group`` on the stream (and the stream) unless it exists.

    ``start`` is where a new group begins: ``"0"`` (every entry still in the stream) or
    ``"$"`` (only entries added from now on). Returns True when it was created.
    """
    try:
        ctx.conn.xgroup_create(ctx.keys.events, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    log.info("events.group_created", group=group, start=start)
    return True


def _parse(entries: Sequence[Any]) -> list[Event]:
    """Events of ``[(entry_id, fields), ...]``; entries already trimmed away (no fields) skipped."""
    return [Event.from_entry(entry_id, fields) for entry_id, fields in entries if fields]


def claim_stale(
    ctx: Context, group: str, consumer: str, *, count: int, min_idle_ms: int
) -> list[Event]:
    """Take over up to ``count`` entries unacknowledged for ``min_idle_ms`` (``XAUTOCLAIM``).

    Entries trimmed from the stream while pending are acknowledged, so they stop coming back.
    """
    events: list[Event] = []
    cursor: Any = "0-0"
    for _ in range(_CLAIM_ROUNDS):
        answer: Any = ctx.conn.xautoclaim(
            ctx.keys.events,
            group,
            consumer,
            min_idle_time=min_idle_ms,
            start_id=cursor,
            count=count - len(events),
        )
        cursor, entries = answer[0], answer[1]
        gone = [entry_id for entry_id, fields in entries if not fields]
        if gone:
            ctx.conn.xack(ctx.keys.events, group, *gone)
        events += _parse(entries)
        if len(events) >= count or text(cursor) == "0-0":
            break
    return events


def read_events(
    ctx: Context,
    group: str,
    consumer: str,
    count: int = 100,
    block_ms: int | None = None,
    *,
    min_idle_ms: int | None = DEFAULT_MIN_IDLE_MS,
    start: str = "0",
) -> list[Event]:
    """Up to ``count`` events for ``consumer`` of ``group``: stale ones first, then new ones.

    Creates the group when missing (from ``start``). ``block_ms`` waits that long for new
    entries when none is there (None: do not wait). Acknowledge handled events with
    :func:`ack`; unacknowledged ones go to whichever reader asks after ``min_idle_ms``
    (None: take over nothing this time, only read new entries).
    """
    try:
        return _read(ctx, group, consumer, count, block_ms, min_idle_ms)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
    ensure_group(ctx, group, start=start)
    return _read(ctx, group, consumer, count, block_ms, min_idle_ms)


def _read(
    ctx: Context,
    group: str,
    consumer: str,
    count: int,
    block_ms: int | None,
    min_idle_ms: int | None,
) -> list[Event]:
    events: list[Event] = []
    if min_idle_ms is not None:
        events = claim_stale(ctx, group, consumer, count=count, min_idle_ms=min_idle_ms)
    if len(events) >= count:
        return events
    answer: Any = ctx.conn.xreadgroup(
        group, consumer, {ctx.keys.events: ">"}, count=count - len(events), block=block_ms
    )
    for _stream, entries in answer or []:
        events += _parse(entries)
    return events


def ack(ctx: Context, group: str, event_ids: Sequence[str]) -> int:
    """Acknowledge ``event_ids`` for ``group``; returns how many were pending."""
    if not event_ids:
        return 0
    return int(ctx.conn.xack(ctx.keys.events, group, *event_ids))


def pending_ids(ctx: Context, group: str, event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` are still unacknowledged in ``group``."""
    pipe = ctx.conn.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.xpending_range(ctx.keys.events, group, min=event_id, max=event_id, count=1)
    return {event_id for event_id, found in zip(event_ids, pipe.execute(), strict=True) if found}
