"""One injectable clock, so pacing and expiry are tested without sleeping.

Inside Redis every time is integer milliseconds since the epoch; :func:`to_ms` is the one
conversion from seconds, and :meth:`Clock.now_ms` the clock's own reading in ms.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


def to_ms(seconds: float) -> int:
    """Seconds (epoch or a duration) as whole milliseconds."""
    return round(seconds * 1000)


def from_ms(ms: int | str | bytes) -> datetime:
    """An epoch-ms value as stored in Redis, as an aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


class Clock(Protocol):
    """Wall-clock seconds since the epoch, as a float."""

    def now(self) -> float: ...

    def now_ms(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def now_ms(self) -> int:
        return to_ms(self.now())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to (``advance`` or ``sleep``)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def now_ms(self) -> int:
        return to_ms(self.now())

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


SYSTEM_CLOCK: Clock = SystemClock()
