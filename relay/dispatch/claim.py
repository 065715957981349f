"""Claiming a batch: ``lua/claim.lua``, the one atomic step where pacing is decided.

A ticket run claims every urgent id of its device/SIM first, then bulk ids within the GCRA
allowance, records the batch as in flight (:mod:`relay.dispatch.batch`) and keeps the
ticket's bookkeeping (see the script's header for the rules). :class:`Claim` is its answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from relay import scripts
from relay.connection import text
from relay.context import Context
from relay.devices import Pace
from relay.dispatch.tickets import run_bound_s
from relay.lanes import LaneId

Verdict = Literal["more", "timer", "released", "stale"]
"""What the claim did with the ticket: kept it (work may go now), put it on a timer (bulk
waits for pacing), released it (its lane is empty), or left it alone (this run is a stale
duplicate: another job holds the ticket)."""


@dataclass(frozen=True)
class Claim:
    """What ``claim.lua`` answered: the ids (urgent first), and what the ticket does next."""

    bid: str
    ids: list[str]
    n_urgent: int
    next_free_ms: int
    """When the next bulk batch may go (now, when nothing waits for pacing)."""
    verdict: Verdict
    cap: int
    """The batch size limit while bisecting a refusal (0: none)."""


_VERDICTS: dict[str, Verdict] = {
    "more": "more",
    "timer": "timer",
    "released": "released",
    "stale": "stale",
}


def _verdict(raw: bytes | str) -> Verdict:
    value = text(raw)
    if value not in _VERDICTS:
        raise ValueError(f"claim.lua answered an unknown verdict {value!r}")
    return _VERDICTS[value]


def claim(ctx: Context, lane: LaneId, pace: Pace, *, job: str, worker: str) -> Claim:
    """Claim the next batch of ``lane``'s device/SIM for the ticket ``lane`` held by ``job``."""
    k, bid, pair = ctx.keys, uuid.uuid4().hex[:16], lane.pair
    keys = [
        k.lane(pair.urgent),
        k.lane(pair.bulk),
        k.pace(pair),
        k.inflight,
        k.batch(bid),
        k.ticket(lane),
        k.timers,
        k.progress(lane),
    ]
    args: list[scripts.Arg] = [
        ctx.now_ms(),
        ctx.settings.batch_max,
        pace.interval_ms,
        pace.burst,
        bid,
        worker,
        lane.kind,
        lane.member,
        job,
        lane.device,
        lane.sim,
        round(run_bound_s(ctx.settings) * 1000),
    ]
    answer: Any = scripts.call(ctx.conn, "claim", keys, args)
    ids, n_urgent, next_free, verdict, cap = answer
    return Claim(
        bid, [text(i) for i in ids], int(n_urgent), int(next_free), _verdict(verdict), int(cap)
    )
