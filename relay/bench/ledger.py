"""Reading rates, latencies and pacing off the simulator's ledger (its own store times)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Entry = dict[str, Any]


@dataclass(frozen=True)
class Flow:
    """How a set of messages reached the gateway: count, span, steady rate, duplicates."""

    stored: int
    requests: int
    first: float
    last: float
    rate: float
    duplicates: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "requests": self.requests,
            "span_s": self.last - self.first,
            "msgs_per_s": self.rate,
            "duplicates": self.duplicates,
        }


def flow(entries: Sequence[Entry]) -> Flow:
    """The steady rate: messages after the first request, over the time from the first
    store to the last (so a first batch of 500 and a first single message count alike).
    ``duplicates`` counts bodies stored more than once (each bench body is unique)."""
    if not entries:
        return Flow(0, 0, 0.0, 0.0, 0.0, 0)
    ordered = sorted(entries, key=lambda e: (e["stored_at"], e["sms_id"]))
    first_request = ordered[0]["request"]["request_id"]
    head = sum(1 for e in ordered if e["request"]["request_id"] == first_request)
    first, last = ordered[0]["stored_at"], ordered[-1]["stored_at"]
    span = last - first
    rate = (len(ordered) - head) / span if span > 0 else math.inf
    bodies = Counter(e["body"] for e in entries)
    requests = len({e["request"]["request_id"] for e in entries})
    return Flow(len(entries), requests, first, last, rate, sum(c - 1 for c in bodies.values()))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class PacingCheck:
    """Per device: the most messages stored by any moment, beyond what pacing allows."""

    devices: int
    worst_excess: float
    violations: int
    cap_used: float

    @property
    def held(self) -> bool:
        return self.violations == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "worst_excess_msgs": self.worst_excess,
            "violations": self.violations,
            "held": self.held,
            "share_of_pacing_cap_used": self.cap_used,
        }


#: relay's claim script reads time in whole (rounded) milliseconds.
CLOCK_SLACK_S = 0.001


def check_pacing(
    entries: Sequence[Entry], start: float, interval: float, burst: int
) -> PacingCheck:
    """Whether every device/SIM stayed within ``burst + (t - start) / interval`` messages
    stored by each moment ``t``, ``start`` being a moment before its first claim (relay's
    GCRA then allows exactly that many claims by ``t``, and a message is stored only after
    its claim; :data:`CLOCK_SLACK_S` covers the millisecond rounding). ``cap_used``: the
    messages stored over the most the bound allowed by the last store, averaged over
    devices (1.0: pacing was the limit)."""
    by_lane: dict[tuple[int, int], list[float]] = defaultdict(list)
    for e in entries:
        by_lane[(e["device_id"], e["sim"])].append(e["stored_at"])
    worst, violations, used = -math.inf, 0, []
    for times in by_lane.values():
        times.sort()
        for n, t in enumerate(times, start=1):
            excess = n - (burst + (t - start + CLOCK_SLACK_S) / interval)
            worst = max(worst, excess)
            if excess > 1e-9:
                violations += 1
        used.append(len(times) / (burst + (times[-1] - start) / interval))
    return PacingCheck(
        len(by_lane), worst if by_lane else 0.0, violations, sum(used) / len(used) if used else 0.0
    )
