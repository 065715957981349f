"""Reading request fields the way the gateway does, with its kind of error messages.

Every refusal raises :class:`ApiError`, whose text becomes ``{"error":1,"message":...}``;
a message names the field (``Field 'sendto' is required``), prefixed by
``smsdata[i]: `` inside an ``addalotofsms`` batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from relay.simulator.dates import parse_date
from relay.simulator.devices import SLOTS
from relay.simulator.engine import Draft

SECRET_FIELDS = frozenset({"token", "pass", "password", "email"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ApiError(Exception):
    """A request the gateway refuses; ``str(exc)`` is its ``message``."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(fields: Mapping[str, Any], name: str, *, prefix: str = "") -> str:
    """A required text field, as given (numbers become text)."""
    value = fields.get(name)
    if _missing(value):
        raise ApiError(f"{prefix}Field '{name}' is required")
    return str(value)


def integer(fields: Mapping[str, Any], name: str, *, prefix: str = "") -> int | None:
    """An optional whole number (``"260"``, ``260``, ``true``); None when absent or empty."""
    value = fields.get(name)
    if type(value) is int:
        return value
    if _missing(value):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ApiError(f"{prefix}Field '{name}' must be a whole number") from None


def required_int(fields: Mapping[str, Any], name: str, *, prefix: str = "") -> int:
    """A required whole number."""
    value = integer(fields, name, prefix=prefix)
    if value is None:
        raise ApiError(f"{prefix}Field '{name}' is required")
    return value


def flag(fields: Mapping[str, Any], name: str, *, prefix: str = "") -> int | None:
    """An optional 0/1 flag (``urgent``): None when absent, else 0 or 1."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool | int):
        return 1 if value else 0
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return 1
    if lowered in _FALSE:
        return 0
    raise ApiError(f"{prefix}Field '{name}' must be 0 or 1")


def when(fields: Mapping[str, Any], name: str, tz: ZoneInfo, *, prefix: str = "") -> float | None:
    """An optional date (``timetosend``); ``0`` and empty mean "now"."""
    value = fields.get(name)
    if _missing(value) or str(value).strip() == "0":
        return None
    try:
        return parse_date(str(value), tz)
    except ValueError:
        raise ApiError(
            f"{prefix}Field '{name}' must be YYYY-MM-DD or YYYY-MM-DD HH:MM:SS"
        ) from None


def public_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` without token, password and email: what the ledger keeps."""
    return {k: v for k, v in fields.items() if k not in SECRET_FIELDS}


def draft(
    fields: Mapping[str, Any],
    devices: Mapping[int, tuple[int, ...]],
    tz: ZoneInfo,
    *,
    prefix: str = "",
    body: str | None = None,
) -> Draft:
    """Validate one message (``addsms`` form or ``smsdata`` item) into a :class:`Draft`.

    ``devices`` maps each known device id to its SIM slots; ``body`` replaces the body
    field when an image was uploaded.
    """
    sendto = text(fields, "sendto", prefix=prefix)
    body = body if body is not None else text(fields, "body", prefix=prefix)
    device_id = required_int(fields, "device_id", prefix=prefix)
    sim = required_int(fields, "sim", prefix=prefix)
    if device_id not in devices:
        raise ApiError(f"{prefix}Device {device_id} not found")
    if sim not in SLOTS:
        raise ApiError(f"{prefix}Field 'sim' must be a slot from 0 to 5")
    if sim not in devices[device_id]:
        raise ApiError(f"{prefix}Sim slot {sim} is not available on device {device_id}")
    return Draft(
        device_id=device_id,
        sim=sim,
        sendto=sendto,
        body=body,
        customerid=integer(fields, "customerid", prefix=prefix),
        urgent=flag(fields, "urgent", prefix=prefix),
        timetosend=when(fields, "timetosend", tz, prefix=prefix),
        fields=public_fields(fields),
    )
