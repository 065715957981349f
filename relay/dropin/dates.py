"""Dates on the drop-in front: the gateway's request formats in, PHP date objects out.

Requests give ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM[:SS]`` wall-clock times, read in the
request's ``timezone`` (``getallsms``) or ``RELAY_DROPIN_TIMEZONE`` (the gateway reads them in
the account's zone). Answers carry ``{"date": "2023-11-02 22:44:43.120000",
"timezone_type": 3, "timezone": "Europe/Paris"}``, the form PHP's ``DateTime`` serialises to
and the PHP SDK's ``LastSeenDate`` is built from.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DateObject = dict[str, Any]

_WALL_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M")
_DATE_FORMAT = "%Y-%m-%d"


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming it when unknown."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def parse_wall(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime | None:
    """``text`` in one of the gateway's request formats as an aware datetime in ``tz``.

    A bare date is the start of that day, or its last second when ``end_of_day`` (so an
    ``enddate`` of ``2024-05-01`` includes the whole day). None when ``text`` is in none of
    the formats (it may still be ISO 8601 with an offset, or epoch seconds).
    """
    text = text.strip()
    for fmt in _WALL_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    try:
        day = datetime.strptime(text, _DATE_FORMAT).replace(tzinfo=tz)
    except ValueError:
        return None
    return day + timedelta(days=1, seconds=-1) if end_of_day else day


def date_object(ms: int | None, tz: ZoneInfo) -> DateObject | None:
    """The PHP date object of epoch milliseconds ``ms`` shown in ``tz`` (None stays None)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz)
    return {"date": moment.strftime("%Y-%m-%d %H:%M:%S.%f"), "timezone_type": 3, "timezone": tz.key}


def human(ms: int, tz: ZoneInfo) -> str:
    """``dd.mm.YYYY HH:MM:SS``, the ``*humanformat`` fields of ``getalldevices``."""
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%d.%m.%Y %H:%M:%S")
