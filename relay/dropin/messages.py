"""Drop-in send requests (``addsms``, ``smstosend``, ``addalotofsms``) as relay messages.

The gateway's fields become the mappings ``Relay.send_many`` takes, so relay's own
validation (docs/design.md, invariant 9) decides what is valid; this module only reads the
gateway's ways of writing a value:

- ``sendto`` may list several recipients separated by commas: one message each, in order
  (empty entries, as in ``"a,,b"`` or a trailing comma, are skipped).
- Numbers may be strings (``"260"``); an empty ``sim``, ``customerid``, ``urgent`` or
  ``timetosend`` means "not given", as at the gateway.
- ``urgent`` also takes ``yes``/``on``/``no``/``off``.
- ``timetosend`` ``0`` means now; a wall-clock time (``YYYY-MM-DD[ HH:MM[:SS]]``) is read in
  ``RELAY_DROPIN_TIMEZONE``; ISO 8601 with an offset and epoch seconds are taken as they are.

A request holds at most :data:`MAX_MESSAGES` messages once lists are fanned out, so it is
stored by one call of relay's enqueue script: all of it, or (on any invalid item) none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from relay.dropin.dates import parse_wall
from relay.dropin.params import Params
from relay.errors import DropinRefused, ValidationError

#: Most messages one drop-in request may store (one enqueue call: all or nothing).
MAX_MESSAGES = 1000
_OPTIONAL = ("sim", "customerid", "urgent", "timetosend")
_FLAG_WORDS = {"yes": "1", "on": "1", "no": "0", "off": "0"}


@dataclass(frozen=True)
class Batch:
    """Messages ready for ``send_many`` and, for each, where it came from in the request
    (``"smsdata[2]: "``, ``"recipient 3: "``, or ``""``), for error messages."""

    items: list[dict[str, Any]]
    origins: list[str]

    def refusal(self, exc: ValidationError) -> DropinRefused:
        """The drop-in answer's refusal for relay's validation error ``exc``."""
        where = self.origins[exc.index] if exc.index is not None else ""
        return DropinRefused(f"{where}Field '{exc.field}' {exc.reason}")


def single(params: Params, tz: ZoneInfo) -> Batch:
    """The messages of one ``addsms``/``smstosend`` request (several for a comma list)."""
    items = _fan_out(params.fields, tz)
    many = len(items) > 1
    origins = [
        f"recipient {i + 1} ({item['sendto']}): " if many else "" for i, item in enumerate(items)
    ]
    return _checked(Batch(items, origins))


def bulk(params: Params, tz: ZoneInfo) -> tuple[str, Batch]:
    """The token and the messages of an ``addalotofsms`` request.

    ``datajson`` (a form field holding ``{"token":…, "smsdata":[…]}``) or the same object as
    the JSON body; a ``token`` beside ``datajson`` counts when the JSON has none.
    """
    data = _datajson(params)
    token = data.get("token")
    if token is None or str(token).strip() == "":
        token = params.text("token")
    smsdata = data.get("smsdata")
    if not isinstance(smsdata, list) or not smsdata:
        raise DropinRefused("Field 'smsdata' must be a non-empty list of messages")
    items: list[dict[str, Any]] = []
    origins: list[str] = []
    for index, entry in enumerate(smsdata):
        if not isinstance(entry, Mapping):
            raise DropinRefused(f"smsdata[{index}]: must be an object")
        fanned = _fan_out({str(k).lower(): v for k, v in entry.items()}, tz, f"smsdata[{index}]")
        items += fanned
        origins += [f"smsdata[{index}]: "] * len(fanned)
    return str(token).strip(), _checked(Batch(items, origins))


def _checked(batch: Batch) -> Batch:
    if len(batch.items) > MAX_MESSAGES:
        raise DropinRefused(
            f"{len(batch.items)} messages in one request; at most {MAX_MESSAGES} are allowed"
        )
    return batch


def _datajson(params: Params) -> Mapping[str, Any]:
    raw = params.fields.get("datajson")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if "smsdata" in params.fields:  # a raw JSON body {token, smsdata}
            return params.fields
        raise DropinRefused("Field 'datajson' is required")
    if isinstance(raw, Mapping):
        return raw
    try:
        data = json.loads(str(raw))
    except (ValueError, RecursionError):
        raise DropinRefused("Field 'datajson' is not valid JSON") from None
    if not isinstance(data, dict):
        raise DropinRefused("Field 'datajson' must be a JSON object with token and smsdata")
    return data


def _fan_out(fields: Mapping[str, Any], tz: ZoneInfo, where: str = "") -> list[dict[str, Any]]:
    """One message item per recipient of ``fields["sendto"]``."""
    base = _item(fields, tz)
    numbers = _recipients(fields.get("sendto"))
    if not numbers:
        prefix = f"{where}: " if where else ""
        raise DropinRefused(f"{prefix}Field 'sendto' is required")
    return [{**base, "sendto": number} for number in numbers]


def _recipients(value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return [value]  # relay's validation names the wrong type
    return [part.strip() for part in value.split(",") if part.strip()]


def _item(fields: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """The message fields of one gateway message, sendto aside."""
    item: dict[str, Any] = {"body": _body(fields.get("body")), "device_id": fields.get("device_id")}
    if isinstance(item["device_id"], str) and not item["device_id"].strip():
        item["device_id"] = None
    for name in _OPTIONAL:
        value = fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        item[name] = value
    if isinstance(item.get("urgent"), str):
        word = item["urgent"].strip().lower()
        item["urgent"] = _FLAG_WORDS.get(word, word)
    if "timetosend" in item:
        when = _timetosend(item.pop("timetosend"), tz)
        if when is not None:
            item["timetosend"] = when
    return item


def _body(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _timetosend(value: Any, tz: ZoneInfo) -> Any:
    """None for "now" (``0``), an aware datetime for a wall-clock time, else ``value``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return None
    if isinstance(value, str):
        if value.strip() == "0":
            return None
        wall = parse_wall(value, tz)
        if wall is not None:
            return wall
    return value
