"""``relay send``: one message per ``--to``, or a JSONL/CSV file, all validated before storing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from relay.cli.common import EXIT_USAGE, fail, open_relay, print_json, state, stderr
from relay.cli.files import detect_format, read_lines
from relay.clock import SYSTEM_CLOCK
from relay.errors import ValidationError
from relay.settings import Settings

CHUNK = 1000
"""Messages per ``send_many`` call (and per progress-bar step)."""
PROGRESS_FROM = 2000
"""Files with at least this many messages get a progress bar (on a terminal)."""


@click.command("send")
@click.option(
    "--to",
    "recipients",
    multiple=True,
    metavar="PHONE",
    help="Recipient; repeat for several messages with the same body.",
)
@click.option("--body", help="Message text.")
# device, sim and customer id stay text here: the producer's validation reads them, as it
# reads every door's (click's int would take Unicode digits the library refuses)
@click.option("--device", "device_id", help="Gateway device id that sends it.")
@click.option(
    "--sim",
    default="0",
    show_default=True,
    help="SIM slot: 0-1 SMS, 2-3 WhatsApp, 4-5 RCS.",
)
@click.option("--urgent", is_flag=True, help="Urgent lane: goes before any bulk message.")
@click.option("--customer-id", "customerid", help="Your own id, echoed in statuses.")
@click.option(
    "--at",
    "timetosend",
    metavar="TIME",
    help="Send at this time (ISO 8601, 'YYYY-MM-DD HH:MM:SS' UTC, or epoch seconds).",
)
@click.option("--key", help="Idempotency key: sending again with it returns the first id.")
@click.option(
    "--ttl",
    metavar="SECONDS",
    help="Not submitted to the gateway within this many seconds: it ends expired, unsent.",
)
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL or CSV file of messages (fields: sendto,body,device_id,sim,urgent,"
    "customerid,timetosend,key,ttl).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Format of --file (default: its extension).",
)
@click.option(
    "--skip-invalid", is_flag=True, help="With --file: send the valid lines, report the others."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of ids in input order.")
def send(
    recipients: tuple[str, ...],
    body: str | None,
    device_id: str | None,
    sim: str,
    urgent: bool,
    customerid: str | None,
    timetosend: str | None,
    key: str | None,
    ttl: str | None,
    path: Path | None,
    fmt: str | None,
    skip_invalid: bool,
    as_json: bool,
) -> None:
    """Queue messages and print their ids (one per line, or --json)."""
    settings = state().settings()
    ids: Sequence[str | None]
    if path is not None:
        if recipients or body is not None:
            raise click.UsageError("give either --file or --to/--body, not both")
        ids = _send_file(settings, path, fmt, skip_invalid)
    else:
        if skip_invalid or fmt:
            raise click.UsageError("--skip-invalid and --format go with --file")
        items = _items_from_options(
            recipients, body, device_id, sim, urgent, customerid, timetosend, key, ttl
        )
        _, errors = _validate_all(settings, list(enumerate(items, start=1)))
        if errors:
            where = f" (--to #{errors[0].index})" if len(items) > 1 else ""
            fail(f"{errors[0].field}: {errors[0].reason}{where}", EXIT_USAGE)
        ids = _send_items(settings, items, progress=False)
    _print_ids(ids, as_json)


def _items_from_options(
    recipients: Sequence[str],
    body: str | None,
    device_id: str | None,
    sim: str,
    urgent: bool,
    customerid: str | None,
    timetosend: str | None,
    key: str | None,
    ttl: str | None = None,
) -> list[dict[str, Any]]:
    if not recipients:
        raise click.UsageError("Missing option '--to' (or give --file)")
    if body is None:
        raise click.UsageError("Missing option '--body'")
    if device_id is None:
        raise click.UsageError("Missing option '--device'")
    listed = next((to for to in recipients if "," in to or ";" in to), None)
    if listed is not None:
        fail(
            f"sendto: {listed!r} holds several recipients; repeat --to once per number", EXIT_USAGE
        )
    if key is not None and len(recipients) > 1:
        raise click.UsageError("--key identifies one message: give a single --to with it")
    common: dict[str, Any] = {"body": body, "device_id": device_id, "sim": sim, "urgent": urgent}
    optional = {"customerid": customerid, "timetosend": timetosend, "key": key, "ttl": ttl}
    common.update({k: v for k, v in optional.items() if v is not None})
    return [{"sendto": to, **common} for to in recipients]


def _validate_all(
    settings: Settings, lines: Sequence[tuple[int, Mapping[str, Any] | ValidationError]]
) -> tuple[list[tuple[int, Mapping[str, Any]]], list[ValidationError]]:
    """Every line checked with ``validate``: (valid lines, errors by line)."""
    from relay.produce.validation import validate

    now = SYSTEM_CLOCK.now()
    valid: list[tuple[int, Mapping[str, Any]]] = []
    errors: list[ValidationError] = []
    for lineno, data in lines:
        if isinstance(data, ValidationError):
            errors.append(data)
            continue
        try:
            validate(data, settings, now, index=lineno)
        except ValidationError as exc:
            exc.index = lineno
            errors.append(exc)
        else:
            valid.append((lineno, data))
    return valid, errors


def _send_file(
    settings: Settings, path: Path, fmt: str | None, skip_invalid: bool
) -> list[str | None]:
    lines = read_lines(path, detect_format(path, fmt))
    valid, errors = _validate_all(settings, lines)
    err = stderr()
    prefix = "skipped " if skip_invalid else ""
    for exc in errors:
        err.print(f"{prefix}line {exc.index}: {exc.field}: {exc.reason}", markup=False)
    if errors and not skip_invalid:
        fail(
            f"{len(errors)} invalid line(s) in {path.name}; nothing was sent "
            "(fix them, or pass --skip-invalid)",
            EXIT_USAGE,
        )
    if not lines:
        err.print(f"no messages in {path.name}", markup=False)
    sent = iter(
        _send_items(settings, [data for _, data in valid], progress=len(valid) >= PROGRESS_FROM)
    )
    bad = {exc.index for exc in errors}
    return [None if lineno in bad else next(sent) for lineno, _ in lines]


def _send_items(
    settings: Settings, items: Sequence[Mapping[str, Any]], *, progress: bool
) -> list[str]:
    """Store already validated items in chunks of :data:`CHUNK`; ids in input order."""
    ids: list[str] = []
    if not items:
        return ids
    with open_relay(settings) as relay, _progress(progress) as bar:
        task = bar.add_task("sending", total=len(items))
        if len(items) == 1:
            ids.append(relay.send(**items[0]))
        else:
            for start in range(0, len(items), CHUNK):
                chunk = items[start : start + CHUNK]
                ids.extend(relay.send_many(chunk))
                bar.advance(task, len(chunk))
    return ids


def _progress(enabled: bool) -> Progress:
    console = stderr()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=True,
    )


def _print_ids(ids: Sequence[str | None], as_json: bool) -> None:
    if as_json:
        print_json(list(ids))
        return
    for msg_id in ids:
        if msg_id is not None:
            click.echo(msg_id)


COMMANDS = [send]
