"""Find messages by what a person has at hand: a relay id, a drop-in integer id, or a phone.

- A **relay id** (``0mhx3k2p4a7fq1``) is its record's key.
- A **drop-in id** (the integer ``/getdata/addsms`` answered) is mapped to its relay id by
  ``Keys.dropin_ids`` (:class:`relay.dropin.ids.DropinIds`).
- A **phone number** has no index: relay writes none at enqueue (that would cost every send a
  write and a key per number for as long as records live). Instead the lookup reads the
  events stream backwards, newest first, a page at a time, collects the message ids it names
  and reads their numbers, up to a budget of events (``scan``, default
  :data:`SCAN_DEFAULT`). So it finds the messages that changed state within that recent window
  (at 10 messages a second, the default covers about the last half hour of changes) at a cost
  paid only by whoever looks, and the answer says how far back it looked
  (``scanned_events``, ``scanned_since``, ``complete``). Numbers match on their digits: the
  record's number ends with the query's digits (leading zeros dropped, at least
  :data:`PHONE_MIN_DIGITS`), so ``015752982212`` finds ``+4915752982212``.

Every found message comes with its record (``times`` holds when it reached each state) and
the events of it met in the scanned window, oldest first: its history of states, with the
gateway's codes and words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.connection import text
from relay.context import Context
from relay.dropin.ids import DropinIds
from relay.ids import ID_LENGTH
from relay.results.events import Event
from relay.store import Message

SCAN_DEFAULT = 20_000
"""Events read (newest first) to find messages by phone, and their events, by default."""
SCAN_MAX = 200_000
PAGE = 1000
PHONE_MIN_DIGITS = 6
LIMIT_DEFAULT = 20

_RELAY_ID = re.compile(rf"[0-9a-z]{{{ID_LENGTH}}}")
_DROPIN_ID = re.compile(r"[0-9]{1,18}")
_PHONE = re.compile(r"\+?[0-9 ()./-]{6,40}")


@dataclass
class Found:
    """A message found: its record and the events of it met in the scanned window."""

    via: str
    message: Message
    events: list[Event] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.message.to_dict(),
            "via": self.via,
            "events": [e.to_dict() for e in self.events],
        }


@dataclass
class LookupResult:
    """What :func:`lookup` found for ``query``, newest first, and how far back it looked."""

    query: str
    kinds: list[str]
    found: list[Found]
    scanned_events: int = 0
    scanned_since_ms: int | None = None
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "kinds": self.kinds,
            "messages": [f.to_dict() for f in self.found],
            "scanned_events": self.scanned_events,
            "scanned_since_ms": self.scanned_since_ms,
            "complete": self.complete,
        }


def kinds_of(query: str) -> list[str]:
    """What ``query`` may be: ``id``, ``dropin``, ``phone`` (digits may be both of the last)."""
    query = query.strip()
    kinds = []
    if _RELAY_ID.fullmatch(query) and not query.isdigit():
        kinds.append("id")
    if _DROPIN_ID.fullmatch(query):
        kinds.append("dropin")
    if _PHONE.fullmatch(query) and len(_digits(query)) >= PHONE_MIN_DIGITS:
        kinds.append("phone")
    return kinds


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def lookup(
    ctx: Context, query: str, *, limit: int = LIMIT_DEFAULT, scan: int = SCAN_DEFAULT
) -> LookupResult:
    """The messages ``query`` names (at most ``limit``), with their recent events."""
    query = query.strip()
    kinds = kinds_of(query)
    result = LookupResult(query, kinds, [])
    direct: list[tuple[str, str]] = []
    if "id" in kinds:
        direct.append(("id", query))
    if "dropin" in kinds:
        msg_id = DropinIds(ctx).lookup(int(query))
        if msg_id is not None:
            direct.append(("dropin", msg_id))
    records = ctx.store.get_many([msg_id for _, msg_id in direct])
    for (via, _), record in zip(direct, records, strict=True):
        if record is not None and all(f.message.id != record.id for f in result.found):
            result.found.append(Found(via, record))
    wanted_phone = _digits(query).lstrip("0") if "phone" in kinds else ""
    if result.found or wanted_phone:
        _scan(ctx, result, wanted_phone, limit, max(0, min(SCAN_MAX, scan)))
    result.found = result.found[:limit]
    for found in result.found:
        found.events.reverse()  # read newest first; a history reads oldest first
    return result


def _scan(ctx: Context, result: LookupResult, phone: str, limit: int, budget: int) -> None:
    """Read the stream backwards (up to ``budget`` events): the events of the messages found,
    and, with ``phone``, messages whose number ends with those digits."""
    by_id = {f.message.id: f for f in result.found}
    checked: set[str] = set(by_id)
    for page in _pages(ctx, budget):
        result.scanned_events += len(page)
        if page:
            result.scanned_since_ms = page[-1].at_ms
        if phone and len(by_id) < limit:
            fresh = list(dict.fromkeys(e.id for e in page if e.id and e.id not in checked))
            checked.update(fresh)
            for record in _matching(ctx, fresh, phone):
                if len(by_id) < limit:
                    by_id[record.id] = Found("phone", record)
                    result.found.append(by_id[record.id])
        for event in page:
            found = by_id.get(event.id)
            if found is not None:
                found.events.append(event)
    result.complete = result.scanned_events < budget


def _pages(ctx: Context, budget: int) -> Iterator[list[Event]]:
    """Pages of events, newest first, until the stream or ``budget`` ends."""
    upper: str = "+"
    left = budget
    while left > 0:
        count = min(PAGE, left)
        entries: Any = ctx.conn.xrevrange(ctx.keys.events, max=upper, min="-", count=count)
        if not entries:
            return
        yield [Event.from_entry(entry_id, fields) for entry_id, fields in entries if fields]
        left -= len(entries)
        if len(entries) < count:
            return
        upper = "(" + text(entries[-1][0])


def _matching(ctx: Context, ids: Sequence[str], phone: str) -> list[Message]:
    """The records among ``ids`` whose number's digits end with ``phone``."""
    if not ids:
        return []
    pipe = ctx.conn.pipeline(transaction=False)
    for msg_id in ids:
        pipe.hget(ctx.keys.msg(msg_id), "sendto")
    hits = [
        msg_id
        for msg_id, sendto in zip(ids, pipe.execute(), strict=True)
        if sendto is not None and _digits(text(sendto)).endswith(phone)
    ]
    return [m for m in ctx.store.get_many(hits) if m is not None]
