"""Claiming a batch: ``lua/claim.lua``, the one atomic step where pacing, quotas and the
online state are decided.

A ticket run claims the urgent ids of its device/SIM first (its own lane, then its pools'
lanes), then bulk ids (own, then pools') within the GCRA allowance and the quota windows
(``RELAY_DEVICE_LIMITS``), none while the device is offline (pooled ids never; its own while
``RELAY_HOLD_OFFLINE``); gives pooled ids this device/SIM; records the batch as in flight
(:mod:`relay.dispatch.batch`) and keeps the ticket's bookkeeping (see the script's header
for the rules). :class:`Claim` is its answer.
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
from relay.lanes import LaneId, pool_lanes
from relay.pools import DAY_MS, HOUR_MS, limit_of, pools_of

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


OFFLINE_RECHECK_MS = 5000
"""How long the ticket of an offline device with work waits before it looks again."""


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
    k, bid, pair, now = ctx.keys, uuid.uuid4().hex[:16], lane.pair, ctx.now_ms()
    settings = ctx.settings
    pools = [pool_lanes(name) for name in pools_of(settings.pools, pair)]
    limit = limit_of(settings.device_limits, pair)
    hour, day = now // HOUR_MS, now // DAY_MS
    keys = [
        k.lane(pair.urgent),
        k.lane(pair.bulk),
        k.pace(pair),
        k.inflight,
        k.batch(bid),
        k.ticket(lane),
        k.timers,
        k.offline,
        k.quota(pair, "h", hour),
        k.quota(pair, "d", day),
        k.progress(lane),
        *(k.pool_lane(urgent) for urgent, _ in pools),
        *(k.pool_lane(bulk) for _, bulk in pools),
    ]
    args: list[scripts.Arg] = [
        now,
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
        len(pools),
        "1" if settings.hold_offline else "0",
        limit.per_hour,
        limit.per_day,
        "1" if limit.urgent_over else "0",
        (hour + 1) * HOUR_MS,
        (day + 1) * DAY_MS,
        OFFLINE_RECHECK_MS,
        k.msg(""),
        round(run_bound_s(settings) * 1000),
    ]
    answer: Any = scripts.call(ctx.conn, "claim", keys, args)
    ids, n_urgent, next_free, verdict, cap = answer
    return Claim(
        bid, [text(i) for i in ids], int(n_urgent), int(next_free), _verdict(verdict), int(cap)
    )
