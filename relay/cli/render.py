"""Rich renderings shared by ``relay status``, ``relay stats`` and the demo's live view."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from relay.cli.common import print_json, stdout
from relay.states import State

if TYPE_CHECKING:
    from relay.demo import DemoSummary
    from relay.results.stats import LaneStats, Stats

STATE_STYLES = {
    State.DELIVERED: "green",
    State.SENT: "green",
    State.FAILED: "red",
    State.REJECTED: "red",
    State.EXPIRED: "red",
    State.CANCELLED: "yellow",
    State.UNKNOWN: "magenta",
}


def message_table(record: Mapping[str, Any]) -> Table:
    """One message record as a two-column table (times under their step names)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in record.items():
        if name == "times":
            continue
        if value is None or value == "":
            continue
        text = Text.from_markup(_state_text(value)) if name == "state" else Text(str(value))
        table.add_row(name, text)
    for step, when in (record.get("times") or {}).items():
        table.add_row(f"t_{step}", Text(str(when)))
    return table


def _state_text(value: Any) -> str:
    try:
        style = STATE_STYLES.get(State(value))
    except ValueError:
        style = None
    return f"[{style}]{value}[/]" if style else escape(str(value))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _when(at: float | None, now: float) -> str:
    if at is None:
        return "-"
    if at <= now + 0.05:
        return "now"
    return f"in {_age(at - now)}"


def _online(value: bool | None) -> str:
    if value is None:
        return "?"
    return "[green]yes[/]" if value else "[red]no[/]"


def titled_table(
    title: str, columns: Sequence[str], *, right: Collection[str] = (), **options: Any
) -> Table:
    """An empty table titled at its top left: ``columns`` (those in ``right`` right-aligned,
    the others left-aligned), each with ``options`` (``rich``'s ``add_column`` arguments)."""
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left", **options)
    return table


def print_listing(
    items: Sequence[Any], as_json: bool, empty: str, table: Callable[[], Table]
) -> None:
    """A list command's output: with ``as_json`` a JSON array of the items' ``to_dict()``;
    otherwise ``empty`` on stderr when there are none, else ``table()`` on stdout."""
    if as_json:
        print_json([item.to_dict() for item in items])
    elif not items:
        click.echo(empty, err=True)
    else:
        stdout().print(table())


_LANE_COLUMNS = (
    "device",
    "sim",
    "urgent",
    "bulk",
    "scheduled",
    "in flight",
    "verifying",
    "awaiting status",
    "oldest queued",
    "next send",
    "online",
    "last seen",
)


def lanes_table(stats: Stats) -> Table:
    """One row per device/SIM."""
    table = titled_table("Lanes", _LANE_COLUMNS, right=set(_LANE_COLUMNS) - {"next send", "online"})
    for lane in stats.lanes:
        seen = stats.devices_lastseen.get(lane.device_id)
        table.add_row(*_lane_row(lane, stats.at), _seen(seen, stats.at))
    if stats.lanes:
        table.add_section()
        table.add_row(
            "all",
            "",
            str(sum(x.urgent for x in stats.lanes)),
            str(sum(x.bulk for x in stats.lanes)),
            str(stats.scheduled),
            str(stats.inflight),
            str(sum(x.verifying for x in stats.lanes)),
            str(stats.awaiting),
            "",
            "",
            "",
            "",
        )
    return table


def _seen(at: float | None, now: float) -> str:
    """How long ago a device was last seen (``-``: never synced)."""
    return "-" if at is None else f"{_age(max(0.0, now - at))} ago"


def _lane_row(lane: LaneStats, now: float) -> list[str]:
    return [
        str(lane.device_id),
        str(lane.sim),
        str(lane.urgent),
        str(lane.bulk),
        str(lane.scheduled),
        str(lane.inflight),
        str(lane.verifying),
        "-" if lane.awaiting is None else str(lane.awaiting),
        _age(lane.oldest_queued_s),
        _when(lane.next_send_at, now),
        _online(lane.online),
    ]


def states_table(stats: Stats) -> Table:
    """Messages per state, in the order a message goes through them."""
    table = Table(title="Messages by state", title_justify="left")
    table.add_column("state")
    table.add_column("messages", justify="right")
    for state in State:
        table.add_row(_state_text(state.value), str(stats.states.get(state.value, 0)))
    return table


def states_line(stats: Stats) -> str:
    """Messages per state on one line (states with none left out)."""
    parts = [f"{_state_text(name)} {count}" for name, count in stats.states.items() if count]
    return "messages: " + (" · ".join(parts) or "none")


def stats_view(stats: Stats, *, compact: bool = False) -> RenderableType:
    """The ``relay stats`` screen: lanes, then states (a table, or one line when ``compact``),
    then when it was read."""
    at = datetime.fromtimestamp(stats.at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    footer = f"[dim]{at} · {'idle' if stats.idle else 'working'}[/]"
    states = states_line(stats) if compact else states_table(stats)
    return Group(lanes_table(stats), states, footer)


def summary_view(summary: DemoSummary) -> RenderableType:
    """The demo's closing summary."""
    table = Table(title="relay demo: summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    verdict = "[green]every message final[/]" if summary.complete else "[red]timed out[/]"
    table.add_row("result", f"{verdict} after {summary.elapsed:.1f} s")
    table.add_row("messages", str(summary.total))
    for name, count in summary.states.items():
        table.add_row(Text.from_markup(f"  {_state_text(name)}"), str(count))
    table.add_row("urgent latency p50", secs(summary.urgent_latency_p50))
    table.add_row("urgent latency p99", secs(summary.urgent_latency_p99))
    table.add_row("gateway calls (addalotofsms)", str(summary.gateway_calls))
    table.add_row("messages per call", f"{summary.per_call:.1f}")
    per_phone = ", ".join(f"{d}: {n}" for d, n in sorted(summary.per_device.items()))
    table.add_row("stored per phone", per_phone)
    table.add_row("redis", summary.redis)
    if summary.api_url:
        table.add_row("HTTP API (while it ran)", summary.api_url)
    table.add_row("worker logs", Text(summary.log_path))
    return table


def demo_view(stats: Stats, elapsed: float) -> RenderableType:
    """The demo's live screen: a header line, the lanes, and the states on one line."""
    finished = sum(stats.states.values()) - stats.open_messages - stats.awaiting
    head = (
        f"[bold]relay demo[/] · {elapsed:5.1f} s · {stats.queued + stats.scheduled} waiting in "
        f"relay · {stats.inflight} in flight · {stats.awaiting} awaiting a status · "
        f"{finished} finished"
    )
    return Group(head, lanes_table(stats), states_line(stats))
