"""Finding relay's submitted messages among the gateway's records, and remembering matches.

:func:`fetch_records` asks ``getallsms`` for one device's records in a time window,
splitting a window whose answer is capped; :func:`find_matches` matches messages to those
records (:func:`relay.reconcile.matching.match`, looking by recipient when a second is
still capped); :func:`record_matches` records each ``sms_id`` once (``lua/match.lua``,
keeping ``Keys.sms_index(dev)``); :func:`prune_index` drops index entries whose record is
gone. The reconciler and recovery both use it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relay import scripts
from relay.connection import text
from relay.log import get_logger
from relay.reconcile.matching import Observation, Submitted, match
from relay.states import State
from relay.store import Message

if TYPE_CHECKING:
    from relay.context import Context
    from relay.gateway.models import SmsRecord

log = get_logger(__name__)


@dataclass
class Fetch:
    """Records of one device gathered from ``getallsms`` over a time window."""

    records: dict[int, SmsRecord] = field(default_factory=dict)
    requests: int = 0
    complete: bool = True

    def add(self, other: Fetch) -> None:
        """Take in the records (and the requests and completeness) of another fetch."""
        self.records.update(other.records)
        self.requests += other.requests
        self.complete = self.complete and other.complete


def _utc(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC)


def fetch_records(
    ctx: Context,
    device_id: int,
    begin: float,
    end: float,
    *,
    phone: str | None = None,
    before_request: Callable[[], None] | None = None,
) -> Fetch:
    """Every record of ``device_id`` created between ``begin`` and ``end`` (epoch s, inclusive),
    only those to ``phone`` when given.

    Dates go as whole UTC seconds. When an answer's ``count`` exceeds the records it holds
    (the gateway caps answers), the window is split in halves and each half asked again,
    down to one second; a one-second window still capped is kept as it is (``complete``
    False, logged): :func:`find_matches` then asks by phone.
    """
    fetch = Fetch()
    stack = [(int(begin // 1), int(-(-end // 1)))]
    while stack:
        first, last = stack.pop()
        if before_request is not None:
            before_request()
        answer = ctx.gateway.get_all_sms(
            device_id=device_id,
            begindate=_utc(first),
            enddate=_utc(last),
            phone=phone,
            timezone="UTC",
        )
        fetch.requests += 1
        if answer.more_available and last > first:
            middle = (first + last) // 2
            stack += [(middle + 1, last), (first, middle)]
            continue
        if answer.more_available:
            fetch.complete = False
            log.warning(
                "matching.window_capped",
                device=device_id,
                second=first,
                count=answer.count,
                returned=len(answer.records),
                by_phone=bool(phone),
            )
        fetch.records.update((record.id, record) for record in answer.records)
    return fetch


def taken_sms_ids(ctx: Context, dev: int, sms_ids: Sequence[int]) -> set[int]:
    """Which of ``sms_ids`` are already matched to a message (``Keys.sms_index(dev)``)."""
    if not sms_ids:
        return set()
    owners = ctx.conn.hmget(ctx.keys.sms_index(dev), [str(i) for i in sms_ids])
    return {sms for sms, owner in zip(sms_ids, owners, strict=True) if owner}


def record_matches(
    ctx: Context, dev: int, found: Sequence[tuple[str, Observation]], allowed: Iterable[State]
) -> set[str]:
    """Record ``sms_id``/status of messages in ``allowed`` states (``lua/match.lua``).

    Returns the ids recorded; a record another message already holds is refused.
    """
    if not found:
        return set()
    keys = [ctx.keys.sms_index(dev)] + [ctx.keys.msg(mid) for mid, _ in found]
    args: list[scripts.Arg] = [",".join(s.value for s in allowed)]
    for mid, obs in found:
        args += [mid, obs.sms_id, obs.status, obs.title]
    result = scripts.call(ctx.conn, "match", keys, args)
    return {mid for (mid, _), ok in zip(found, result, strict=True) if ok}


PHONE_LOOKUPS = 100
"""Most recipients asked for one by one per call of :func:`find_matches`."""


def find_matches(
    ctx: Context,
    dev: int,
    messages: Sequence[Submitted],
    fetch: Fetch,
    *,
    window: float,
    before_request: Callable[[], None] | None = None,
) -> dict[str, SmsRecord]:
    """:func:`match` ``messages`` to ``fetch``'s records not yet matched to another message.

    When ``fetch`` is incomplete (a second held more records than the gateway answers),
    the messages still unmatched are looked for by recipient (``getallsms`` with ``phone``,
    at most :data:`PHONE_LOOKUPS` recipients); the records found join ``fetch``.
    """
    taken = taken_sms_ids(ctx, dev, list(fetch.records))
    found = match(messages, fetch.records.values(), window=window, taken=taken)
    missing = [m for m in messages if m.id not in found]
    if fetch.complete or not missing:
        return found
    by_phone: dict[str, list[float]] = defaultdict(list)
    for m in missing:
        by_phone[m.sendto].append(m.submitted)
    for phone, times in list(by_phone.items())[:PHONE_LOOKUPS]:
        fetch.add(
            fetch_records(
                ctx,
                dev,
                min(times) - window,
                max(times) + window,
                phone=phone,
                before_request=before_request,
            )
        )
    taken = taken_sms_ids(ctx, dev, list(fetch.records))
    return match(messages, fetch.records.values(), window=window, taken=taken)


INDEX_PRUNE_STEP = 200


def prune_index(ctx: Context, dev: int, cursor: int) -> int:
    """Drop a few ``sms_index`` entries whose message record is gone (expired, so no new
    message can match that old record any more); returns the HSCAN cursor to go on from."""
    conn, keys = ctx.conn, ctx.keys
    answer: Any = conn.hscan(keys.sms_index(dev), cursor, count=INDEX_PRUNE_STEP)
    cursor, entries = answer
    if entries:
        pipe = conn.pipeline(transaction=False)
        for msg_id in entries.values():
            pipe.exists(keys.msg(text(msg_id)))
        gone = [sms for sms, alive in zip(entries, pipe.execute(), strict=True) if not alive]
        if gone:
            conn.hdel(keys.sms_index(dev), *gone)
    return int(cursor)


def submitted_of(message: Message, submitted_ms: int) -> Submitted:
    """What matching compares of a stored message handed to the gateway at ``submitted_ms``."""
    return Submitted(
        message.id,
        message.sendto,
        message.body,
        message.customerid,
        submitted_ms / 1000,
        message.sim,
    )


def unmatched_pending(ctx: Context, dev: int, lo_ms: int, hi_ms: int) -> list[Submitted]:
    """``dev``'s messages surely stored (pending, submitted between ``lo_ms`` and ``hi_ms``)
    whose gateway record is not known yet."""
    rows: Any = ctx.conn.zrangebyscore(ctx.keys.pending(dev), lo_ms, hi_ms, withscores=True)
    ids = [text(member) for member, _ in rows]
    messages = ctx.store.get_many(ids)
    return [
        submitted_of(m, int(score))
        for m, (_, score) in zip(messages, rows, strict=True)
        if m is not None and not m.final and m.sms_id is None
    ]
