"""Message TTLs: a message not submitted within its ``ttl`` ends ``expired``, never sent.

A message sent with a ``ttl`` (or under ``RELAY_DEFAULT_TTL``) carries its deadline in its
record (``exp``, ms) and in ``Keys.deadlines`` (id → deadline). Two places enforce it:

- :func:`expire_due`, a duty of every worker (:mod:`relay.run.duties`): the ids whose
  deadline has passed, in one MULTI: ``lua/expire.lua`` takes each one still ``queued`` or
  ``scheduled`` out of the lane or schedule that holds it (:func:`waiting_place`), and
  ``Store.transition`` (only messages still waiting whose deadline has passed) ends them
  ``expired`` with :data:`ERROR`, one event each, and drops them from ``deadlines``. Ids being
  submitted (``submitting``, ``unknown``) are looked at again a little later; ids past
  waiting (submitted, final, gone) just leave ``deadlines``: a message that reached the
  gateway never expires this way.
- the submitter (:meth:`relay.dispatch.submit.Submitter.start`): in the MULTI that moves a
  claimed batch to ``submitting``, a first transition ends ``expired`` every id of it whose
  deadline has passed, so a message that expired while its lane waited is not sent. With
  no deadline in Redis at all (no ttl in use) that transition is left out: one ``EXISTS``
  per batch is all a relay without ttls pays.

A message expires only while it is on ``deadlines``; it leaves when found past waiting
(submitted, final). A dead letter retried after its deadline was looked at is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay import durability, scripts
from relay.context import Context
from relay.keys import Keys
from relay.lanes import LaneId, kind_of
from relay.log import get_logger
from relay.states import WAITING_STATES, State
from relay.store import read_fields

log = get_logger(__name__)

ERROR = "not submitted within its ttl"
"""The ``error`` of a message that expired waiting (its ``expired`` event carries it)."""
PER_CALL = 500
"""Most due ids one :func:`expire_due` call handles."""
RECHECK_MS = 5_000
"""An id being submitted when its deadline passed is looked at again this much later."""
PLACE_FIELDS = ("device_id", "sim", "urgent")
"""What :func:`waiting_place` needs of a record."""


@dataclass(frozen=True)
class Place:
    """Where a waiting message is: the list it is queued on and the schedule it may be in."""

    lane: str
    schedule: str


def waiting_place(keys: Keys, record: Sequence[str | None]) -> Place:
    """The lane and the schedule that hold a queued or scheduled message, from its
    :data:`PLACE_FIELDS`: those of its device/SIM and urgency."""
    device, sim, urgent = record
    lane = LaneId(kind_of(urgent == "1"), int(device or 0), int(sim or 0))
    return Place(keys.lane(lane), keys.sched(lane))


def expire_due(ctx: Context, limit: int = PER_CALL) -> list[str]:
    """End ``expired`` up to ``limit`` waiting messages whose ttl has passed; their ids."""
    now_ms = ctx.now_ms()
    raw: Any = ctx.conn.zrangebyscore(ctx.keys.deadlines, "-inf", now_ms, start=0, num=limit)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
    if not ids:
        return []
    places = [
        waiting_place(ctx.keys, r) for r in read_fields(ctx.conn, ctx.keys, ids, PLACE_FIELDS)
    ]
    with durability.pipeline(ctx, what="expire") as pipe:
        scripts.queue(pipe, "expire", _expire_keys(ctx.keys, ids, places), _args(ids, now_ms), int)
        moved = ctx.store.queue_transition(
            pipe, ids, State.EXPIRED, WAITING_STATES, fields={"error": ERROR}, due_only=True
        )
        expired = moved.result(pipe.execute())
    if expired:
        log.info("messages.expired", count=len(expired), ids=expired[:20])
    return expired


def _expire_keys(keys: Keys, ids: Sequence[str], places: Sequence[Place]) -> list[str]:
    """KEYS of ``lua/expire.lua``: deadlines, then (record, lane, schedule) per id."""
    out = [keys.deadlines]
    for msg_id, place in zip(ids, places, strict=True):
        out += [keys.msg(msg_id), place.lane, place.schedule]
    return out


def _args(ids: Sequence[str], now_ms: int) -> list[scripts.Arg]:
    busy = ",".join(sorted(s.value for s in (State.SUBMITTING, State.UNKNOWN)))
    waiting = ",".join(sorted(s.value for s in WAITING_STATES))
    return [now_ms, waiting, busy, now_ms + RECHECK_MS, *ids]
