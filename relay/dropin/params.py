"""The parameters of a drop-in request, read the way the gateway's own clients send them.

Every style in use (docs/gateway-api.md, "What the gateway's own clients send") gives one merged
set of fields: the query string, then an urlencoded or multipart form body, then a JSON
object body; a later source wins for a name given twice.

- Names are case-insensitive: the PHP SDK's ``customerId`` is ``customerid``.
- Values stay as given (ints arrive as strings from forms, as numbers from JSON); the
  drop-in's fields module turns them into what relay's validation takes.
- ``+`` decodes to a space in a query or urlencoded form, so ``sendto=+4915752982212`` sent
  unencoded would lose its international prefix. In ``sendto`` and ``phone`` a raw ``+``
  that starts a number (at the start of the value or right after a comma) and is followed
  by a digit 1-9 is therefore kept as ``+``; every other raw ``+`` is a space, as usual.
  ``%2B`` is always ``+``.
- Multipart file parts are kept apart as :class:`Upload` (only ``addsms`` takes one).

A body that cannot be read as what it claims to be raises :class:`BadRequest`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus

from relay.errors import DropinRefused
from relay.multipart import NoParts, Unreadable, Upload, read_parts

_INT = re.compile(r"[+-]?[0-9]{1,19}")
_TRUE = frozenset({"1", "true", "yes", "on"})
#: Fields that hold phone numbers, where a raw leading ``+`` is the international prefix.
PHONE_FIELDS = frozenset({"sendto", "phone"})

# a run of raw "+" at the start of a number (value start or after a raw/encoded comma) before
# a digit 1-9: all but the last are spaces, the last one is the prefix
_NUMBER_START_PLUS = re.compile(r"(^|,|%2[cC])((?:\+|%20)*)\+(?=[1-9])")


class BadRequest(ValueError):
    """The request body cannot be read as the content type it claims (its text says why)."""


@dataclass(frozen=True)
class Params:
    """The merged fields of one request (names lower-cased) and its uploaded files."""

    fields: Mapping[str, Any]
    files: Mapping[str, Upload] = field(default_factory=dict)

    def text(self, name: str) -> str:
        """Field ``name`` as text, stripped; ``""`` when absent or null."""
        value = self.fields.get(name)
        return "" if value is None else str(value).strip()

    def integer(self, name: str, *, required: bool = False) -> int | None:
        """Field ``name`` as a whole number (``260``, ``"260"``, ``260.0``); None when absent
        or empty. Raises :class:`DropinRefused` naming the field otherwise."""
        value = self.fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise DropinRefused(f"Field '{name}' is required")
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is int:
            return value
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
        raise DropinRefused(f"Field '{name}' must be a whole number")

    def flag(self, name: str) -> bool:
        """Field ``name`` as a 0/1 flag (``1``, ``"1"``, ``true``, ``yes``, ``on``)."""
        value = self.fields.get(name)
        if isinstance(value, bool | int):
            return bool(value)
        return self.text(name).lower() in _TRUE


def canonical(name: str) -> str:
    """The name a field is known by: lower case, surrounding spaces dropped."""
    return name.strip().lower()


def read_params(query: str, content_type: str, body: bytes) -> Params:
    """The merged parameters of a request with the raw ``query`` string and ``body``."""
    fields: dict[str, Any] = {}
    _merge(fields, parse_form(query))
    files: dict[str, Upload] = {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        form, files = parse_multipart(content_type, body)
        _merge(fields, form.items())
    elif _is_json(kind, body):
        _merge(fields, parse_json(body).items())
    elif body.strip():
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the form body is not UTF-8 text") from None
        _merge(fields, parse_form(text))
    return Params(fields, files)


def _merge(fields: dict[str, Any], pairs: Any) -> None:
    for name, value in pairs:
        fields[canonical(name)] = value


def _is_json(kind: str, body: bytes) -> bool:
    """A JSON body: declared so, or undeclared (or text/plain) and shaped like an object."""
    if kind == "application/json" or kind.endswith("+json"):
        return bool(body.strip())
    return kind in ("", "text/plain") and body.lstrip().startswith(b"{")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("a JSON body must be an object of fields")
    return data


def parse_form(text: str) -> list[tuple[str, str]]:
    """``name=value`` pairs of a query string or urlencoded body (blank values kept)."""
    pairs = []
    for pair in text.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = _unquote(raw_name)
        if canonical(name) in PHONE_FIELDS:
            raw_value = _NUMBER_START_PLUS.sub(r"\1\2%2B", raw_value)
        pairs.append((name, _unquote(raw_value)))
    return pairs


def _unquote(raw: str) -> str:
    try:
        return unquote_plus(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"a form value is not UTF-8 once decoded: {unquote(raw)[:40]!r}") from None


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, Upload]]:
    """Text fields and file parts of a ``multipart/form-data`` body."""
    try:
        parts = read_parts(content_type, body)
    except Unreadable as exc:
        raise BadRequest(f"the multipart body cannot be read: {exc}") from None
    except NoParts as exc:
        raise BadRequest(f"the multipart body has {exc}") from None
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for part in parts:
        if part.upload is not None:
            files[canonical(part.name)] = part.upload
            continue
        try:
            fields[part.name] = part.data.decode(part.charset or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise BadRequest(f"multipart field {part.name!r} is not text in its charset") from None
    return fields, files
