"""Times of a send request: ``timetosend`` (when to send) and ``ttl`` (by when it must be
submitted), checked and turned into epoch milliseconds (:mod:`relay.produce.validation`
explains what each accepts)."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time
from typing import Any

from relay.errors import ValidationError

#: Epoch seconds beyond this (year 5138) are surely milliseconds given by mistake.
EPOCH_MAX = 100_000_000_000
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")

#: What ``timetosend`` may be given as.
TimeToSend = datetime | date | str | int | float | None


# --- ttl -------------------------------------------------------------------------------


def ttl_ms(value: Any, default: float | None) -> int | None:
    """A ttl in whole ms (at least 1): a positive number of seconds or numeric text; None or
    a blank means ``default`` (None: no ttl)."""
    if value is None or value == "":
        return None if default is None else max(1, round(default * 1000))
    if isinstance(value, bool):
        raise ValidationError("ttl", "must be a number of seconds, not a bool")
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        value = float(value.strip())
    if isinstance(value, int) and value > EPOCH_MAX:
        raise ValidationError("ttl", f"is too long; at most {EPOCH_MAX} seconds")
    if not isinstance(value, int | float):
        raise ValidationError("ttl", f"must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError("ttl", f"is {value!r}; must be more than 0 seconds")
    if seconds > EPOCH_MAX:
        raise ValidationError("ttl", f"is too long; at most {EPOCH_MAX} seconds")
    return max(1, round(seconds * 1000))


# --- timetosend ------------------------------------------------------------------------


def due_ms(value: Any, now: float) -> int | None:
    """The due time of ``timetosend`` in epoch ms; None when absent or not after ``now``."""
    if value is None or value == "":
        return None
    seconds = to_epoch(value)
    if seconds <= now:
        return None
    return round(seconds * 1000)


def to_epoch(value: Any) -> float:
    """``timetosend`` as epoch seconds."""
    if isinstance(value, datetime):
        return _aware(value).timestamp()
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC).timestamp()
    if isinstance(value, bool):
        raise ValidationError("timetosend", "must be a time, not a bool")
    if isinstance(value, int) and abs(value) > EPOCH_MAX:
        # refused here: float() of an int past 1e308 raises OverflowError
        shown = value if value.bit_length() <= 64 else "a huge number"
        why = (
            "epoch seconds must be a positive number"
            if value < 0
            else "give epoch seconds, not milliseconds"
        )
        raise ValidationError("timetosend", f"is {shown}; {why}")
    if isinstance(value, int | float):
        return _epoch_seconds(float(value))
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER_TEXT.fullmatch(text):
            return _epoch_seconds(float(text))
        try:
            return _aware(datetime.fromisoformat(text)).timestamp()
        except ValueError:
            pass
    raise ValidationError(
        "timetosend",
        f"must be a datetime, ISO 8601 text (YYYY-MM-DD HH:MM:SS) or epoch seconds, not {value!r}",
    )


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _epoch_seconds(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(
            "timetosend", f"is {seconds!r}; epoch seconds must be a positive number"
        )
    if seconds > EPOCH_MAX:
        raise ValidationError(
            "timetosend", f"is {seconds:.0f}; give epoch seconds, not milliseconds"
        )
    return seconds
