"""Checking and normalising one send request, before anything is stored.

:func:`validate` takes a mapping (a ``send_many`` item, a CSV row, a JSON body);
:func:`check` takes the fields as arguments (the fast path of ``send``). Both return a
:class:`ValidMessage` or raise :class:`relay.errors.ValidationError` naming the field.

Decisions, so every entry point (library, CLI, HTTP) behaves the same:

- Integer fields (``device_id``, ``sim``, ``customerid``) take an ``int``, a float without
  a fraction (``260.0``: JSON may send one) or a string of digits (``"260"``: CSV and CLI
  give strings), up to ``2**63 - 1`` (the gateway's ids are 64-bit). ``True``/``False``
  are refused: a bool is never a device id.
- ``None`` in an optional field means "not given"; so does an empty string in
  ``customerid`` and ``timetosend`` (a blank CSV cell). An empty ``key`` is refused.
- ``urgent`` takes a bool, ``0``/``1`` or the strings ``true``/``false``/``1``/``0``.
- ``timetosend`` takes a datetime (naive means UTC), a date, an ISO 8601 string
  (``2030-01-02T03:04:05+02:00``, ``2030-01-02 03:04:05``, ``2030-01-02``; no offset means
  UTC) or epoch seconds (number or numeric string; a value that only makes sense as
  milliseconds is refused). A time not after ``now`` means "send now".
- ``ttl`` is seconds from the send (a positive number, or numeric text) within which the
  message must be submitted to the gateway, else it ends ``expired``; none given (None or
  a blank cell) means ``RELAY_DEFAULT_TTL`` (none by default). Held or scheduled messages
  count against it too.
- ``sendto`` is one recipient, given as a string. Spaces, dashes, dots, parentheses and
  slashes are dropped; what remains must be an optional ``+`` and 1-20 digits. With
  ``RELAY_DEFAULT_REGION`` set it becomes E.164 (``+4915752982212``); without, it is kept
  as cleaned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from relay.errors import ValidationError
from relay.lanes import LaneId, kind_of
from relay.settings import Settings

FIELDS = frozenset(
    {"sendto", "body", "device_id", "sim", "urgent", "customerid", "timetosend", "key", "ttl"}
)
REQUIRED = ("sendto", "body", "device_id")
SIM_MAX = 5
KEY_MAX = 200
DIGITS_MAX = 20
#: Epoch seconds beyond this (year 5138) are surely milliseconds given by mistake.
EPOCH_MAX = 100_000_000_000
#: Largest integer field value: the gateway keeps ids as signed 64-bit integers.
INT_MAX = 2**63 - 1

#: Spaces (incl. NBSP and the thin ones), dashes, dots, parentheses, slashes; not tabs or newlines.
_FORMATTING = re.compile("[ \u00a0\u2000-\u200a\u202f\u205f\u3000\\-\u2010-\u2015.()/]")
_PHONE = re.compile(rf"\+?[0-9]{{1,{DIGITS_MAX}}}")
_BAD_BODY_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
#: What ``timetosend`` may be given as (see the module docstring).
TimeToSend = datetime | date | str | int | float | None

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class ValidMessage:
    """A send request that passed every check, in the form relay stores.

    ``timetosend`` is the due time in epoch milliseconds when it lies in the future,
    else ``None`` (send now). ``ttl_ms`` is its ttl in milliseconds (None: none).
    """

    sendto: str
    body: str
    device_id: int
    sim: int = 0
    urgent: bool = False
    customerid: int | None = None
    timetosend: int | None = None
    key: str | None = None
    ttl_ms: int | None = None

    def deadline_ms(self, now_ms: int) -> int | None:
        """When its ttl ends (ms), for a message sent at ``now_ms``; None without a ttl."""
        return None if self.ttl_ms is None else now_ms + self.ttl_ms

    @property
    def lane(self) -> LaneId:
        """The lane this message waits on."""
        return LaneId(kind_of(self.urgent), self.device_id, self.sim)


def validate(
    data: Mapping[str, Any], settings: Settings, now: float, index: int | None = None
) -> ValidMessage:
    """Check one send request given as a mapping of the message fields.

    Unknown and missing required fields are refused by name; ``index`` (the position in a
    ``send_many`` input) is carried by the error.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(
            "item", f"must be a mapping of message fields, not {type(data).__name__}", index=index
        )
    unknown = sorted(str(name) for name in data if name not in FIELDS)
    if unknown:
        raise ValidationError(
            unknown[0],
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}",
            index=index,
        )
    for name in REQUIRED:
        if data.get(name) is None:
            raise ValidationError(name, "is required", index=index)
    return check(
        data["sendto"],
        data["body"],
        data["device_id"],
        data.get("sim"),
        data.get("urgent"),
        data.get("customerid"),
        data.get("timetosend"),
        data.get("key"),
        data.get("ttl"),
        settings=settings,
        now=now,
        index=index,
    )


def validate_all(
    items: Sequence[Any], settings: Settings, now: float
) -> tuple[list[ValidMessage], list[ValidationError]]:
    """Check every item of a batch: (the valid messages, one error per bad item).

    Unlike ``send_many``, which stops at the first bad item, this lists every bad item
    (each error's ``index`` is its position), so a caller can report them all at once;
    store the messages only when the error list is empty.
    """
    valid: list[ValidMessage] = []
    errors: list[ValidationError] = []
    for index, item in enumerate(items):
        try:
            valid.append(validate(item, settings, now, index=index))
        except ValidationError as exc:
            errors.append(exc)
    return valid, errors


def check(
    sendto: Any,
    body: Any,
    device_id: Any,
    sim: Any = 0,
    urgent: Any = False,
    customerid: Any = None,
    timetosend: Any = None,
    key: Any = None,
    ttl: Any = None,
    *,
    settings: Settings,
    now: float,
    index: int | None = None,
) -> ValidMessage:
    """Check the fields of one send request; the arguments mirror ``Relay.send``."""
    try:
        return ValidMessage(
            sendto=clean_sendto(sendto, settings.default_region),
            body=check_body(body, settings.body_max),
            device_id=check_int("device_id", device_id, low=1),
            sim=0 if sim is None else check_int("sim", sim, low=0, high=SIM_MAX),
            urgent=False if urgent is None else check_bool("urgent", urgent),
            customerid=_optional_int("customerid", customerid),
            timetosend=due_ms(timetosend, now),
            key=None if key is None else check_key(key),
            ttl_ms=ttl_ms(ttl, settings.default_ttl),
        )
    except ValidationError as exc:
        if index is None or exc.index is not None:
            raise
        raise ValidationError(exc.field, exc.reason, index=index) from None


# --- sendto ----------------------------------------------------------------------------


def clean_sendto(value: Any, region: str | None) -> str:
    """One recipient as digits with an optional leading ``+`` (E.164 when ``region`` is set)."""
    if not isinstance(value, str):
        raise ValidationError(
            "sendto",
            f"must be a string, not {type(value).__name__} "
            "(give the number as text so a leading + or 0 survives)",
        )
    if "," in value or ";" in value:
        raise ValidationError(
            "sendto", "holds several recipients; give one per message (send_many sends to many)"
        )
    cleaned = _FORMATTING.sub("", value)
    if not cleaned:
        raise ValidationError("sendto", "is empty")
    if _PHONE.fullmatch(cleaned) is None:
        raise ValidationError("sendto", _phone_problem(cleaned))
    return cleaned if region is None else to_e164(cleaned, region)


def _phone_problem(cleaned: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        return "contains control characters"
    if any(ch.isalpha() for ch in cleaned):
        return "contains letters; give a phone number"
    digits = cleaned.lstrip("+")
    if digits.isdigit() and digits.isascii() and len(digits) > DIGITS_MAX:
        return f"has more than {DIGITS_MAX} digits"
    return "must be digits with an optional leading +"


def to_e164(number: str, region: str) -> str:
    """``number`` in E.164, reading national numbers as numbers of ``region``."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError("sendto", f"is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValidationError(
            "sendto", f"{number} is not a possible phone number (region {region})"
        )
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


# --- body and key ----------------------------------------------------------------------


def check_body(value: Any, body_max: int) -> str:
    """The body unchanged, if it is non-blank text of at most ``body_max`` characters that
    encodes as UTF-8 and holds no control characters other than newline, CR and tab."""
    if not isinstance(value, str):
        raise ValidationError("body", f"must be a string, not {type(value).__name__}")
    if not value or value.isspace():
        raise ValidationError("body", "is empty")
    if len(value) > body_max:
        raise ValidationError(
            "body", f"has {len(value)} characters; at most {body_max} are allowed"
        )
    bad = _BAD_BODY_CHARS.search(value)
    if bad is not None:
        raise ValidationError(
            "body", f"contains control character U+{ord(bad.group()):04X} at position {bad.start()}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            "body", f"is not valid Unicode text (lone surrogate at position {exc.start})"
        ) from None
    return value


def check_key(value: Any) -> str:
    """An idempotency key: 1-200 printable characters."""
    if not isinstance(value, str):
        raise ValidationError("key", f"must be a string, not {type(value).__name__}")
    if not value:
        raise ValidationError("key", "is empty; leave it out (None) for no idempotency key")
    if len(value) > KEY_MAX:
        raise ValidationError("key", f"has {len(value)} characters; at most {KEY_MAX} are allowed")
    if not value.isprintable():
        raise ValidationError("key", "must hold printable characters only")
    return value


# --- numbers and flags -----------------------------------------------------------------


def check_int(field: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within ``low``..``high`` and never beyond :data:`INT_MAX`
    (what is accepted: module docstring)."""
    if type(value) is int:
        number = value
    elif isinstance(value, bool):
        raise ValidationError(field, "must be a whole number, not a bool")
    elif isinstance(value, int):
        number = int(value)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValidationError(field, f"must be a whole number, not {value!r}")
        number = int(value)
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        if len(value.strip().lstrip("+-").lstrip("0")) > len(str(INT_MAX)):
            # refused before int(), which raises ValueError past 4300 digits
            raise ValidationError(field, _too_large())
        number = int(value.strip())
    else:
        raise ValidationError(field, f"must be a whole number, not {value!r}")
    if low is not None and number < low:
        raise ValidationError(field, _range_text(number, low, high))
    if high is not None and number > high:
        raise ValidationError(field, _range_text(number, low, high))
    if abs(number) > INT_MAX:
        raise ValidationError(field, _too_large())
    return number


def _too_large() -> str:
    return f"is out of range; at most {INT_MAX} is allowed"


def _range_text(number: int, low: int | None, high: int | None) -> str:
    if high is None:
        return f"is {number}; must be at least {low}"
    return f"is {number}; must be between {low} and {high}"


def _optional_int(field: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    return check_int(field, value, low=0)


def check_bool(field: str, value: Any) -> bool:
    """``value`` as a bool: a bool, ``0``/``1``, or ``"true"``/``"false"``/``"1"``/``"0"``."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValidationError(field, f"must be true or false, not {value!r}")


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
