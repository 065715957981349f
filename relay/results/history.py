"""The rolling history the dashboard draws: changes of state per minute, urgent latency.

Both live in Redis, written where the changes happen, so they survive restarts of every
process and every process reads the same numbers:

- **Throughput.** ``lua/transition.lua`` (every state change but a message's first, which
  ``lua/enqueue.lua`` writes) adds each change into the hash of its minute,
  ``Keys.history(minute)`` (minute = epoch ms // 60,000; field = the new state), which expires
  25 hours after its last change: 1,440 minute buckets at most, a few fields each.
- **Urgent latency.** Where urgent messages become ``submitted`` (the dispatcher's
  ``stored``, and recovery when a batch in doubt is found at the gateway),
  :func:`record_latency` queues ``lua/latency.lua`` in the same MULTI: one sample per
  message, *queued → stored at the gateway* in ms, into the list of that minute,
  ``Keys.latency(minute)``, which keeps the newest :data:`LATENCY_CAP` samples and expires
  after :data:`LATENCY_TTL_S`. Percentiles are exact while a minute holds at most that many
  urgent messages (beyond, they are those of its latest ones).

:func:`read_history` is the ``GET /v1/history`` document: one entry per minute (oldest first,
the current, partial minute last) and p50/p99 over the last 5 and 60 minutes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from relay import scripts
from relay.connection import text
from relay.states import State
from relay.store import created_ms

if TYPE_CHECKING:
    import redis

    from relay.context import Context

MINUTE_MS = 60_000
HISTORY_MINUTES = 1440
"""Minutes of throughput kept (``lua/transition.lua`` sets the 25 h TTL: one hour spare)."""
LATENCY_CAP = 2000
"""Most urgent latency samples kept per minute (the newest)."""
LATENCY_TTL_S = 2 * 3600
"""How long a minute's latency samples are kept (the widest window is 60 minutes)."""
LATENCY_WINDOWS = (5, 60)
"""Minutes over which p50/p99 are given."""
STATES = (
    State.SUBMITTED,
    State.SENT,
    State.DELIVERED,
    State.FAILED,
    State.REJECTED,
    State.CANCELLED,
    State.EXPIRED,
)
"""The states counted per minute in the document (changes into the others are bookkeeping:
``queued`` after a retry, ``submitting``, ``unknown``)."""


def minute_of(ms: int) -> int:
    """The minute bucket of an epoch time in ms."""
    return ms // MINUTE_MS


def record_latency(
    ctx: Context, pipe: redis.client.Pipeline, ids: Sequence[str], stored_ms: int
) -> None:
    """Queue on ``pipe`` one latency sample per urgent message in ``ids``, stored at the
    gateway at ``stored_ms``: ``stored_ms`` - its ``t_queued`` (``lua/latency.lua``)."""
    if not ids:
        return
    keys = [ctx.keys.latency(minute_of(stored_ms)), *(ctx.keys.msg(i) for i in ids)]
    created = [created_ms(i, {}) or "" for i in ids]  # "": not an id of relay's
    args: list[scripts.Arg] = [stored_ms, LATENCY_CAP, LATENCY_TTL_S, *created]
    scripts.queue(pipe, "latency", keys, args, int)


@dataclass(frozen=True)
class Latency:
    """Urgent latency over the last ``minutes`` minute buckets (the current one included)."""

    minutes: int
    count: int
    p50_ms: int | None
    p99_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(ordered: Sequence[int], pct: float) -> int | None:
    """The nearest-rank ``pct`` percentile of ascending ``ordered`` (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def read_history(ctx: Context, minutes: int = 60) -> dict[str, Any]:
    """The ``GET /v1/history`` document for the last ``minutes`` (1 to 1,440) minutes."""
    minutes = max(1, min(HISTORY_MINUTES, minutes))
    now_ms = ctx.now_ms()
    last = minute_of(now_ms)
    first = last - max(LATENCY_WINDOWS) + 1  # the latency samples of the widest window
    pipe = ctx.conn.pipeline(transaction=False)
    for minute in range(last - minutes + 1, last + 1):  # throughput
        pipe.hgetall(ctx.keys.history(minute))
    for minute in range(first, last + 1):
        pipe.lrange(ctx.keys.latency(minute), 0, -1)
    out = pipe.execute()
    counts, samples = out[:minutes], out[minutes:]
    shown = range(last - minutes + 1, last + 1)
    rows = [_row(minute, raw) for minute, raw in zip(shown, counts, strict=True)]
    return {
        "at": now_ms / 1000,
        "minutes": minutes,
        "states": [s.value for s in STATES],
        "throughput": rows,
        "latency": [
            _latency(window, samples[len(samples) - window :]).to_dict()
            for window in LATENCY_WINDOWS
        ],
    }


def _row(minute: int, raw: dict[Any, Any]) -> dict[str, int]:
    got = {text(k): int(v) for k, v in raw.items()}
    return {"minute": minute * 60, **{s.value: got.get(s.value, 0) for s in STATES}}


def _latency(window: int, buckets: Sequence[list[Any]]) -> Latency:
    ordered = sorted(int(v) for bucket in buckets for v in bucket)
    return Latency(window, len(ordered), percentile(ordered, 50), percentile(ordered, 99))
