"""``relay status``, ``cancel``, ``stats`` and ``devices``: read (and cancel) what relay holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

import click
from rich.console import RenderableType
from rich.table import Table

from relay.cli.common import open_context, open_relay, print_json, stdout
from relay.cli.render import message_table, stats_view, titled_table
from relay.clock import Clock

if TYPE_CHECKING:
    from relay.store import Message


@click.command("status")
@click.argument("msg_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def status(msg_id: str, as_json: bool) -> None:
    """Show one message: state, gateway id and status, error, the time of each step."""
    with open_relay() as relay:
        message = relay.status(msg_id)
    _show_message(message, as_json)


@click.command("cancel")
@click.argument("msg_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled record as JSON.")
def cancel(msg_id: str, as_json: bool) -> None:
    """Cancel a message still waiting in relay (scheduled or queued)."""
    with open_relay() as relay:
        message = relay.cancel(msg_id)
    _show_message(message, as_json)


def _show_message(message: Message, as_json: bool) -> None:
    if as_json:
        print_json(message.to_dict())
    else:
        stdout().print(message_table(message.to_dict()))


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
def stats(as_json: bool, watch: bool) -> None:
    """Lanes per device/SIM (urgent, bulk, scheduled, in flight, awaiting) and totals by state."""
    from relay.results.stats import collect

    if as_json and watch:
        raise click.UsageError("--watch shows a live table; it does not go with --json")
    with open_context() as ctx:
        if as_json:
            print_json(collect(ctx).to_dict())
        elif watch:
            _watch(lambda: stats_view(collect(ctx), compact=True), ctx.clock)
        else:
            stdout().print(stats_view(collect(ctx)))


def _watch(render: Callable[[], RenderableType], clock: Clock) -> None:
    """Show ``render()`` and refresh it every second until Ctrl-C."""
    from rich.live import Live

    try:
        with Live(render(), console=stdout(), refresh_per_second=4, screen=False) as live:
            while True:
                clock.sleep(1.0)
                live.update(render())
    except KeyboardInterrupt:
        return


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@click.option(
    "--no-sync", is_flag=True, help="Show what relay last stored; do not ask the gateway."
)
def devices(as_json: bool, no_sync: bool) -> None:
    """Devices from the gateway (getalldevices) and the send interval and burst relay uses."""
    from relay.devices import list_devices

    with open_context() as ctx:
        rows = [_plain(item) for item in list_devices(ctx, sync=not no_sync)]
    if as_json:
        print_json(rows)
        return
    stdout().print(_devices_table(rows))


def _plain(item: Any) -> dict[str, Any]:
    """A device row as a plain dict, whatever shape ``list_devices`` gives it."""
    if isinstance(item, Mapping):
        return dict(item)
    if hasattr(item, "to_dict"):
        return dict(item.to_dict())
    if hasattr(item, "model_dump"):
        return dict(item.model_dump(mode="json"))
    if is_dataclass(item) and not isinstance(item, type):
        return asdict(item)
    return {"device": str(item)}


_DEVICE_COLUMNS = (
    "device",
    "title",
    "online",
    "last seen",
    "each SMS (gw)",
    "poll (gw)",
    "sim",
    "interval in use",
    "burst",
)


def _devices_table(rows: list[dict[str, Any]]) -> Table:
    """One row per device and SIM: the gateway's delays and the pace relay uses."""
    table = titled_table("Devices", _DEVICE_COLUMNS, right=("device", "sim", "burst"))
    for row in rows:
        sims = row.get("sims") or {"-": {}}
        for sim, pace in sims.items():
            interval = pace.get("interval_s")
            shown = "unlimited" if pace.get("unlimited") else _seconds(interval)
            if pace.get("overridden"):
                shown += " (override)"
            table.add_row(
                _cell(row.get("id")),
                _cell(row.get("title")),
                _cell(row.get("online")),
                _cell(row.get("lastseen")),
                _seconds(row.get("delaybetweeneachsms")),
                _seconds(row.get("delaybetweenrequest")),
                str(sim),
                shown,
                _cell(pace.get("burst")),
            )
    return table


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):g} s"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


COMMANDS = [status, cancel, stats, devices]
