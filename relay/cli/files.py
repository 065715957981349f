"""Message files for ``relay send --file``: JSON Lines or CSV, one message per line or row.

Fields are the message's own names (``sendto, body, device_id, sim, urgent, customerid,
timetosend, key``). Each message keeps its line number (the CSV header is line 1; a CSV
row whose quoted cell spans lines counts as its last line), so every error can point at
it. A line that cannot be read as a message at all (broken JSON, a CSV row with too many
cells) comes back as a :class:`~relay.errors.ValidationError` in place of the message.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

from relay.errors import ValidationError

FileFormat = Literal["jsonl", "csv"]
FIELDS = ("sendto", "body", "device_id", "sim", "urgent", "customerid", "timetosend", "key")
_INT_FIELDS = frozenset({"device_id", "sim", "customerid"})
_INT = re.compile(r"^[+-]?\d+$")
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
    """Every message of the file with its line number, in file order."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(_read_csv(handle) if fmt == "csv" else _read_jsonl(handle))


def _read_jsonl(handle: TextIO) -> Iterator[Line]:
    for lineno, line in enumerate(handle, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield lineno, ValidationError("line", f"not valid JSON ({exc.msg})", index=lineno)
            continue
        if not isinstance(data, dict):
            yield lineno, ValidationError("line", "not a JSON object", index=lineno)
            continue
        yield lineno, data


def _read_csv(handle: TextIO) -> Iterator[Line]:
    reader = csv.DictReader(handle, restkey="\x00extra")
    if not reader.fieldnames:
        return
    reader.fieldnames = [name.strip() for name in reader.fieldnames]
    for row in reader:
        lineno = reader.line_num  # the line the row ends on (rows rarely span lines)
        if "\x00extra" in row:
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
    if name in _INT_FIELDS and _INT.match(text):
        return int(text)
    if name == "urgent" and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    return value
