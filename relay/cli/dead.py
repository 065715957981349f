"""``relay dead``: the messages the gateway kept refusing — list, retry, purge.

``relay dead list [--json]`` shows each with the gateway's own words; ``relay dead retry
ID...|--all`` queues them again at the head of their lanes with their attempts reset;
``relay dead purge ID...|--all [--yes]`` deletes them (asking first unless ``--yes``).
Retry and purge print the ids they handled on stdout, one per line, and one line on stderr
for each id they could not (exit 1 then).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from relay.cli.common import EXIT_RUNTIME, EXIT_USAGE, fail, open_context
from relay.cli.render import print_listing, titled_table

if TYPE_CHECKING:
    from relay.context import Context
    from relay.results.dead import DeadMessage, Outcome

IDS = click.argument("ids", nargs=-1, metavar="ID...")
ALL = click.option("--all", "every", is_flag=True, help="Every rejected message.")


@click.group("dead")
def dead() -> None:
    """Rejected messages: the gateway refused them RELAY_MAX_ATTEMPTS times."""


@dead.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as a JSON array.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many (oldest first).")
def list_command(as_json: bool, limit: int | None) -> None:
    """Show rejected messages, oldest first, with the gateway's words."""
    from relay.results.dead import count_dead, list_dead

    with open_context() as ctx:
        rows = list_dead(ctx, limit)
        total = count_dead(ctx)
    print_listing(rows, as_json, "No rejected messages.", lambda: _table(rows, total))


def _table(rows: Sequence[DeadMessage], total: int) -> Table:
    shown = f"{len(rows)} of {total}" if total > len(rows) else str(total)
    columns = ("id", "rejected at", "device/sim", "to", "attempts", "gateway said")
    table = titled_table(f"Rejected messages ({shown})", columns, overflow="fold")
    for row in rows:
        m = row.message
        when = row.rejected_at.strftime("%Y-%m-%d %H:%M:%S")
        if m is None:
            table.add_row(row.id, when, "-", "-", "-", Text("(record expired)", style="dim"))
            continue
        where = f"{m.device_id}/{m.sim}" + (" urgent" if m.urgent else "")
        table.add_row(m.id, when, where, m.sendto, str(m.attempts), Text(m.error or "-"))
    return table


@dead.command("retry")
@IDS
@ALL
def retry_command(ids: tuple[str, ...], every: bool) -> None:
    """Queue rejected messages again, at the head of their lanes, attempts reset."""
    from relay.results.dead import retry

    _run(ids, every, retry)


@dead.command("purge")
@IDS
@ALL
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
def purge_command(ids: tuple[str, ...], every: bool, yes: bool) -> None:
    """Delete rejected messages for good."""
    from relay.results.dead import purge

    _run(ids, every, purge, confirm=not yes)


def _run(
    ids: tuple[str, ...],
    every: bool,
    action: Callable[[Context, list[str]], Outcome],
    *,
    confirm: bool = False,
) -> None:
    if bool(ids) == every:
        raise click.UsageError("give the ids of rejected messages, or --all")
    from relay.results.dead import dead_ids

    with open_context() as ctx:
        chosen = dead_ids(ctx) if every else list(ids)
        if not chosen:
            click.echo("No rejected messages.", err=True)
            return
        if confirm:
            _confirm(len(chosen))
        outcome = action(ctx, chosen)
    for msg_id in outcome.done:
        click.echo(msg_id)
    for msg_id in outcome.missing:
        click.echo(f"{msg_id}: no such message (never sent, expired or purged)", err=True)
    for msg_id, state in outcome.not_rejected.items():
        click.echo(f"{msg_id}: is {state}, not rejected; left alone", err=True)
    if outcome.missing or outcome.not_rejected:
        raise click.exceptions.Exit(EXIT_RUNTIME)


def _confirm(n: int) -> None:
    try:
        ok = click.confirm(f"Delete {n} rejected message(s) for good?", err=True)
    except click.Abort:  # no answer (stdin closed): do nothing
        ok = False
    if not ok:
        fail("nothing purged (confirm, or pass --yes)", EXIT_USAGE)


COMMANDS = [dead]
