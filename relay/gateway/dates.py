"""Dates on the gateway's wire, both ways.

Answers carry PHP ``DateTime`` objects serialised as
``{"date": "2023-11-02 22:44:43.000000", "timezone_type": 3, "timezone": "Europe/Paris"}``:

- ``timezone_type`` 1: ``timezone`` is a UTC offset (``"+02:00"``);
- ``timezone_type`` 2: an abbreviation (``"CET"``, ``"UTC"``), mapped to its fixed offset;
- ``timezone_type`` 3: an IANA zone name, looked up with :mod:`zoneinfo`.

A zone that cannot be understood is taken as UTC rather than failing the whole answer.
Every parsed datetime is *aware*; a bare ``"YYYY-MM-DD HH:MM:SS"`` string is taken as UTC.

Requests want ``YYYY-MM-DD`` / ``YYYY-MM-DD HH:MM:SS`` (``addsms``, ``getallsms``) or
``DD.MM.YYYY H:i:s`` (``savepaket``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

REQUEST_FORMAT = "%Y-%m-%d %H:%M:%S"
REQUEST_DATE_FORMAT = "%Y-%m-%d"
PAKET_FORMAT = "%d.%m.%Y %H:%M:%S"

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2}):?(\d{2})?$", re.I)
_NULL_DATES = {"", "null", "0000-00-00 00:00:00", "0000-00-00"}

# Fixed offsets (hours) of the abbreviations PHP emits as timezone_type 2. Ambiguous ones
# (IST, CST in China, ...) take their most common meaning; unknown ones fall back to UTC.
_ABBREVIATIONS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "Z": 0, "UT": 0, "WET": 0, "WEST": 1, "BST": 1, "IST": 1,
    "CET": 1, "CEST": 2, "MET": 1, "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3, "TRT": 3,
    "GST": 4, "PKT": 5, "HKT": 8, "SGT": 8, "AWST": 8, "JST": 9, "KST": 9,
    "ACST": 9.5, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
    "AST": -4, "ADT": -3, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
    "MST": -7, "MDT": -6, "PST": -8, "PDT": -7, "AKST": -9, "AKDT": -8, "HST": -10,
}  # fmt: skip


def zone_from_offset(text: str) -> tzinfo | None:
    """The fixed zone of an offset such as ``"+02:00"``, ``"-0530"`` or ``"UTC+1"``; else None."""
    match = _OFFSET.match(text.strip())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
    return timezone(-delta if sign == "-" else delta)


def zone_from_abbreviation(text: str) -> tzinfo | None:
    """The fixed zone of an abbreviation such as ``"CET"``; None when it is not known."""
    hours = _ABBREVIATIONS.get(text.strip().upper())
    if hours is None:
        return None
    return UTC if hours == 0 else timezone(timedelta(hours=hours))


def zone_from_name(text: str) -> tzinfo | None:
    """The IANA zone ``text`` (``"Europe/Paris"``); None when zoneinfo does not know it."""
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None


def resolve_zone(name: Any, timezone_type: Any = None) -> tzinfo:
    """The zone of a gateway date object, trying its declared kind first, then the others.

    Gives UTC when nothing matches, so one odd zone never fails a whole answer.
    """
    if not isinstance(name, str) or not name.strip():
        return UTC
    by_kind = {"1": zone_from_offset, "2": zone_from_abbreviation, "3": zone_from_name}
    first = by_kind.get(str(timezone_type))
    for finder in (first, zone_from_offset, zone_from_abbreviation, zone_from_name):
        if finder is not None and (zone := finder(name)) is not None:
            return zone
    return UTC


def _parse_wall_clock(text: str) -> datetime:
    """``"2023-11-02 22:44:43.000000"`` (or ISO, or a bare date) as a datetime; may be naive."""
    return datetime.fromisoformat(text.strip())


def parse_gateway_datetime(value: Any) -> datetime | None:
    """Any date the gateway sends, as an aware datetime; None for null / empty / zero dates.

    Accepts the date object, a plain ``"YYYY-MM-DD HH:MM:SS"`` string (taken as UTC unless it
    carries an offset), a Unix timestamp, or a datetime. Raises ``ValueError`` on anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, dict):
        text = value.get("date")
        if text is None or (isinstance(text, str) and text.strip() in _NULL_DATES):
            return None
        wall = _parse_wall_clock(str(text))
        if wall.tzinfo is not None:
            return wall
        return wall.replace(tzinfo=resolve_zone(value.get("timezone"), value.get("timezone_type")))
    if isinstance(value, bool):
        raise ValueError(f"not a date: {value!r}")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC) if value else None
        except (OverflowError, OSError):  # far past time_t: garbage, not a date
            raise ValueError(f"not a date: {value!r}") from None
    if isinstance(value, str):
        if value.strip() in _NULL_DATES:
            return None
        return _aware(_parse_wall_clock(value))
    raise ValueError(f"not a date: {value!r}")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_request_datetime(value: datetime | date | str, zone: tzinfo | None = None) -> str:
    """``value`` as the gateway's request format.

    A datetime gives ``YYYY-MM-DD HH:MM:SS``: an aware one is first converted into ``zone``
    (when given), a naive one is sent as its own wall-clock time. A date gives ``YYYY-MM-DD``.
    A string is sent unchanged (the caller already formatted it).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if zone is not None and value.tzinfo is not None:
            value = value.astimezone(zone)
        return value.strftime(REQUEST_FORMAT)
    return value.strftime(REQUEST_DATE_FORMAT)


def format_paket_time(value: datetime | str) -> str:
    """``value`` as ``savepaket``'s ``time_to_send`` (``DD.MM.YYYY HH:MM:SS``, own wall time)."""
    if isinstance(value, str):
        return value
    return value.strftime(PAKET_FORMAT)
