"""Dates the way the gateway writes and reads them.

Answers carry ``{"date": "YYYY-MM-DD HH:MM:SS.000000", "timezone_type": 3, "timezone": zone}``
objects (whole seconds, like the real service); requests carry ``YYYY-MM-DD`` or
``YYYY-MM-DD HH:MM:SS`` in a zone the caller names or the simulator's own.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DateObject = dict[str, Any]

_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _local(ts: float, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(int(ts // 1), tz)


def date_object(ts: float | None, tz: ZoneInfo) -> DateObject | None:
    """The gateway's date object for epoch seconds ``ts`` shown in ``tz`` (None stays None)."""
    if ts is None:
        return None
    text = _local(ts, tz).strftime("%Y-%m-%d %H:%M:%S.000000")
    return {"date": text, "timezone_type": 3, "timezone": tz.key}


def human(ts: float, tz: ZoneInfo) -> str:
    """``dd.mm.YYYY HH:MM:SS``, the ``*humanformat`` fields of ``getalldevices``."""
    return _local(ts, tz).strftime("%d.%m.%Y %H:%M:%S")


def parse_date(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> float:
    """Epoch seconds of a request date read in ``tz``.

    A bare ``YYYY-MM-DD`` means the start of that day, or its last second when
    ``end_of_day`` (so ``enddate=2024-05-01`` includes the whole day). ``ValueError``
    when the text is in none of the accepted formats.
    """
    text = text.strip()
    for fmt in _FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if fmt == "%Y-%m-%d" and end_of_day:
            parsed += timedelta(days=1, seconds=-1)
        return parsed.replace(tzinfo=tz).timestamp()
    raise ValueError(f"{text!r} is not YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")
