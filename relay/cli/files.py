"""Message files for ``relay send --file``: JSON Lines or CSV, one message per line or row.

Fields are the message's own names (``sendto, body, device_id, sim, urgent, customerid,
timetosend, key, ttl``). Each message keeps its line number (the CSV header is line 1; a CSV
row whose quoted cell spans lines counts as its last line), so every error can point at
it. A line that cannot be read as a message at all (broken JSON, a CSV row with too many
cells) comes back as a :class:`~relay.errors.ValidationError` in place of the message.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

from relay.errors import ValidationError

FileFormat = Literal["jsonl", "csv"]
FIELDS = (
    "sendto",
    "body",
    "device_id",
    "sim",
    "urgent",
    "customerid",
    "timetosend",
    "key",
    "ttl",
)
_INT_FIELDS = frozenset({"device_id", "sim", "customerid"})
# ASCII digits, at most 19 (int() of thousands of digits raises); longer text goes to
# validation as it is, which refuses it naming the field.
_INT = re.compile(r"[+-]?[0-9]{1,19}")
_EXTRA = "\x00extra"  # DictReader's key of cells beyond the header
# What undecodable bytes become when the file is read with errors="surrogateescape".
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})

Line = tuple[int, dict[str, Any] | ValidationError]


def detect_format(path: Path, given: str | None) -> FileFormat:
    """``given`` if set, else by extension (``.jsonl``, ``.ndjson``, ``.json``, ``.csv``)."""
    if given:
        return "csv" if given.lower() == "csv" else "jsonl"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ValidationError(
        "--format", f"cannot tell the format of {path.name!r}; give --format jsonl or csv"
    )


def read_lines(path: Path, fmt: FileFormat) -> list[Line]:
    """Every message of the file with its line number, in file order.

    Bytes that are not UTF-8 spoil only the lines that hold them.
    """
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    handle = io.StringIO(text, newline="")
    return list(_read_csv(handle) if fmt == "csv" else _read_jsonl(handle))


def _not_utf8(lineno: int) -> ValidationError:
    return ValidationError("line", "is not UTF-8 text", index=lineno)


def _read_jsonl(handle: TextIO) -> Iterator[Line]:
    for lineno, line in enumerate(handle, start=1):
        text = line.strip()
        if not text:
            continue
        if _UNDECODABLE.search(text):
            yield lineno, _not_utf8(lineno)
            continue
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also numbers of over 4300 digits
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(":")[0]
            yield lineno, ValidationError("line", f"not valid JSON ({reason})", index=lineno)
            continue
        if not isinstance(data, dict):
            yield lineno, ValidationError("line", "not a JSON object", index=lineno)
            continue
        yield lineno, data


def _read_csv(handle: TextIO) -> Iterator[Line]:
    reader = csv.DictReader(handle, restkey=_EXTRA)
    last = 1  # the line the last row read ended on (the header's)
    try:
        for lineno, item in _csv_rows(reader):
            last = lineno
            yield lineno, item
    except csv.Error as exc:  # e.g. a cell past csv's field size limit: reading stops here
        lineno = max(reader.line_num, last + 1)
        yield lineno, ValidationError("line", f"unreadable CSV ({exc})", index=lineno)


def _csv_rows(reader: csv.DictReader[str]) -> Iterator[Line]:
    if not reader.fieldnames:
        return
    reader.fieldnames = [name.strip() for name in reader.fieldnames]
    if any(_UNDECODABLE.search(name) for name in reader.fieldnames):
        yield 1, _not_utf8(1)
        return
    for row in reader:
        lineno = reader.line_num  # the line the row ends on (rows rarely span lines)
        if any(_UNDECODABLE.search(v) for v in row.values() if isinstance(v, str)):
            yield lineno, _not_utf8(lineno)
            continue
        if _EXTRA in row:
            yield (
                lineno,
                ValidationError("line", "more cells than the header has columns", index=lineno),
            )
            continue
        yield (
            lineno,
            {k: _cell(k, v) for k, v in row.items() if k is not None and v not in (None, "")},
        )


def _cell(name: str, value: str) -> Any:
    """A CSV cell: digits of integer fields as ints, 0/1/true/false of ``urgent`` as bools."""
    text = value.strip()
    if name in _INT_FIELDS and _INT.fullmatch(text):
        return int(text)
    if name == "urgent" and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    return value
