"""Integer message ids for the drop-in front, and its index of messages by device and time.

The gateway's clients cast ``sms_id`` to an int (``(int)$response['sms_id']`` in the PHP
SDK), so the drop-in answers an integer relay issues: ``INCRBY`` on ``Keys.dropin_seq``,
unique across every server process and never reused (a request that fails after taking
ids leaves a gap). Both ways are mapped: ``Keys.dropin_ids`` (integer → relay id) and the
record's ``dropin_id`` field (relay id → integer). ``lua/dropin_ids.lua`` writes all of it,
plus the per-device index ``Keys.dropin_index(dev)`` (members ``<int>:<relay id>``, scored
by creation ms) that drop-in ``getallsms`` reads, in one atomic step.

The map and the index live as long as the records: :meth:`DropinIds.prune` removes the
entries whose record has expired (only entries older than ``RELAY_RECORD_TTL`` can be;
checked a bounded number at a time, from a random place among those, so long-lived
records cannot block the pruning of the ones behind them).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from relay import scripts
from relay.connection import maybe_text, text
from relay.context import Context
from relay.ids import id_time_ms

#: Index members read per round trip when listing.
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One indexed drop-in message: its integer id, relay id and creation time (ms)."""

    number: int
    msg_id: str
    created_ms: int


def _entries(page: Any) -> list[Entry]:
    """Entries of a ZRANGE ... WITHSCORES reply."""
    out = []
    for member, score in page:
        number, _, msg_id = text(member).partition(":")
        out.append(Entry(int(number), msg_id, int(score)))
    return out


class DropinIds:
    """Issues, maps and indexes the integer ids of drop-in messages."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = ctx.keys

    def assign(self, msg_ids: Sequence[str], devices: Sequence[int]) -> int:
        """Give ``msg_ids`` (just stored, of ``devices``) consecutive integer ids; the first."""
        k = self.keys
        keys = [k.dropin_seq, k.dropin_ids, k.dropin_devices]
        args: list[str | int] = []
        for msg_id, dev in zip(msg_ids, devices, strict=True):
            keys += (k.msg(msg_id), k.dropin_index(dev))
            args += (msg_id, dev, id_time_ms(msg_id))
        return int(scripts.call(self.ctx.conn, "dropin_ids", keys, args))

    def lookup(self, number: int) -> str | None:
        """The relay id of integer id ``number`` (None: never issued, or pruned)."""
        value = self.ctx.conn.hget(self.keys.dropin_ids, str(number))
        return maybe_text(value)

    def devices(self) -> list[int]:
        """Every device that has drop-in messages, in ascending order."""
        members = self.ctx.conn.smembers(self.keys.dropin_devices)
        return sorted(int(text(m)) for m in members if text(m).lstrip("-").isdigit())

    def entries(
        self, dev: int, begin_ms: int | None = None, end_ms: int | None = None, desc: bool = False
    ) -> Iterator[Entry]:
        """The indexed messages of ``dev`` created within ``begin_ms``..``end_ms`` (both
        included), oldest first (newest first with ``desc``), read a page at a time."""
        key = self.keys.dropin_index(dev)
        low: float | str = "-inf" if begin_ms is None else begin_ms
        high: float | str = "+inf" if end_ms is None else end_ms
        offset = 0
        while True:
            if desc:
                page = self.ctx.conn.zrevrangebyscore(
                    key, high, low, start=offset, num=PAGE, withscores=True
                )
            else:
                page = self.ctx.conn.zrangebyscore(
                    key, low, high, start=offset, num=PAGE, withscores=True
                )
            yield from _entries(page)
            if len(page) < PAGE:
                return
            offset += PAGE

    def prune(self, dev: int, budget: int = 1000) -> int:
        """Remove up to ``budget`` checked entries of ``dev`` whose record has expired;
        returns how many were removed."""
        conn, key = self.ctx.conn, self.keys.dropin_index(dev)
        horizon = self.ctx.now_ms() - self.ctx.settings.record_ttl * 1000
        old = int(conn.zcount(key, "-inf", horizon))
        if old == 0:
            return 0
        start = random.randrange(max(1, old - budget + 1))
        page = conn.zrangebyscore(key, "-inf", horizon, start=start, num=budget, withscores=True)
        entries = _entries(page)
        pipe = conn.pipeline(transaction=False)
        for entry in entries:
            pipe.exists(self.keys.msg(entry.msg_id))
        gone = [e for e, alive in zip(entries, pipe.execute(), strict=True) if not alive]
        if gone:
            with conn.pipeline(transaction=True) as tx:
                tx.zrem(key, *(f"{e.number}:{e.msg_id}" for e in gone))
                tx.hdel(self.keys.dropin_ids, *(str(e.number) for e in gone))
                tx.execute()
        return len(gone)
