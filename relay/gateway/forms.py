"""Request forms of the gateway endpoints and the parsers of their answers.

Pure functions, no I/O except reading an attached image file: the client composes them
with its exchange and retry policy. Form values are always strings (the gateway reads
``application/x-www-form-urlencoded`` or ``multipart/form-data`` fields).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel

from relay.errors import ValidationError
from relay.gateway.dates import format_request_datetime
from relay.log import register_secret

Form = dict[str, str]
# An image for ``addsms``: a path, or (filename, content, content type).
Upload = str | os.PathLike[str] | tuple[str, bytes, str]
M = TypeVar("M", bound=BaseModel)
DateArg = datetime | date | str | None


def message_fields(
    sendto: str,
    body: str,
    device_id: int,
    sim: int,
    timetosend: DateArg,
    customerid: int | None,
    urgent: bool,
) -> Form:
    """The message fields shared by ``addsms`` and ``smstosend`` (token/login not included)."""
    fields = {"sendto": sendto, "body": body, "device_id": str(device_id), "sim": str(sim)}
    if timetosend is not None:
        fields["timetosend"] = format_request_datetime(timetosend)
    if customerid is not None:
        fields["customerid"] = str(customerid)
    fields["urgent"] = "1" if urgent else "0"
    return fields


def load_upload(file: Upload | None, body: str) -> dict[str, tuple[str, bytes, str]] | None:
    """The multipart ``files`` of an ``addsms`` image, or None without one.

    Raises :class:`ValidationError` when there is neither a body nor a readable file, so
    nothing is sent.
    """
    if file is None:
        if not body:
            raise ValidationError("body", "must not be empty unless a file is attached")
        return None
    if isinstance(file, tuple):
        return {"file": file}
    path = Path(file)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ValidationError("file", f"cannot read {path.name!r}: {exc.strerror}") from None
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {"file": (path.name, content, kind)}


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("timezone", f"unknown time zone {name!r}") from None


def _is_aware(value: DateArg) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


def sms_query(
    *,
    device_id: int | None,
    status: int | None,
    begindate: DateArg,
    enddate: DateArg,
    sim: int | None,
    customerid: int | None,
    onlycount: bool,
    phone: str | None,
    orderbydesc: bool,
    timezone: str | None,
) -> Form:
    """The ``getallsms`` filters (token not included); unset filters are left out.

    Aware datetimes are converted into ``timezone``, or into UTC when none is given, and
    the zone they are expressed in is then sent as ``timezone`` so the gateway reads them
    right.
    """
    if timezone is None and (_is_aware(begindate) or _is_aware(enddate)):
        timezone = "UTC"
    zone = _zone(timezone) if timezone is not None else None
    fields: Form = {}
    numbers = {"device_id": device_id, "status": status, "sim": sim, "customerid": customerid}
    for name, number in numbers.items():
        if number is not None:
            fields[name] = str(number)
    for name, when in (("begindate", begindate), ("enddate", enddate)):
        if when is not None:
            fields[name] = format_request_datetime(when, zone)
    if onlycount:
        fields["onlycount"] = "1"
    if phone is not None:
        fields["phone"] = phone
    if orderbydesc:
        fields["orderbydesc"] = "1"
    if timezone is not None:
        fields["timezone"] = timezone
    return fields


# --- answer parsers: raise ValueError on a wrong shape (the client makes it GatewayBadResponse)


def model_parser(model: type[M]) -> Callable[[Any], M]:
    """A parser validating a JSON object answer into ``model``."""

    def parse(payload: Any) -> M:
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        return model.model_validate(payload)

    return parse


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def id_field(key: str) -> Callable[[Any], int]:
    """A parser of answers carrying one new id (``sms_id``, ``tag_id``...): the id.

    A bare number as the whole answer is accepted too (``savepaket`` is documented only
    as answering "the newsletter id").
    """

    def parse(payload: Any) -> int:
        value = payload.get(key) if isinstance(payload, dict) else payload
        number = _positive_int(value)
        if number is None:
            raise ValueError(f"no positive integer {key} in the answer")
        return number

    return parse


def token_field(payload: Any) -> str:
    """The ``token`` of a ``gettoken`` answer, registered as a secret at once."""
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ValueError("no token in the answer")
    token = token.strip()
    register_secret(token)
    return token


def accepted(payload: Any) -> None:
    """An ``addalotofsms`` answer: success must be said (``"error":0``), not assumed.

    ``"error":1`` was already raised; an answer without an ``error`` field is a wrong shape
    (the submitting call then reports an unknown outcome).
    """
    if not isinstance(payload, dict) or "error" not in payload:
        raise ValueError("no error field in the answer")
