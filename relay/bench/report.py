"""Results of a bench run: measurements, targets, the rich table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Target:
    """A goal a measured ``value`` must reach: ``value >= limit`` (``at_least``) or ``<=``."""

    name: str
    value: float
    limit: float
    at_least: bool
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def goal(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {_fmt(self.limit)}{self.unit}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met, "goal": self.goal}


@dataclass(frozen=True)
class Row:
    """One line of the table: what, relay's number, the comparison's, and the target."""

    label: str
    relay: str
    other: str = ""
    target: Target | None = None


@dataclass
class Measurement:
    """What one measurement found: ``values`` (JSON), the table ``rows``, its ``targets``."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    error: str | None = None

    def target(
        self, name: str, value: float, limit: float, *, at_least: bool, unit: str = ""
    ) -> Target:
        t = Target(name, float(value), float(limit), at_least, unit)
        self.targets.append(t)
        return t

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "targets": [t.to_dict() for t in self.targets],
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
            "load_before_after": [round(x, 2) for x in self.load],
            "error": self.error,
        }


def machine() -> dict[str, Any]:
    """Where the numbers come from (``hiredis``: redis-py parses replies in C)."""
    from redis.utils import HIREDIS_AVAILABLE

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        "hiredis": HIREDIS_AVAILABLE,
    }


@dataclass
class Results:
    """Every measurement of one run."""

    config: dict[str, Any]
    redis: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        targets = [t.to_dict() | {"measure": m.name} for m in self.measurements for t in m.targets]
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "machine": machine(),
            "redis": self.redis,
            "config": self.config,
            "measurements": {m.name: m.to_dict() for m in self.measurements},
            "targets": targets,
            "targets_met": sum(1 for t in targets if t["met"]),
            "targets_total": len(targets),
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def fmt(value: float, unit: str = "") -> str:
    """A number as the table shows it."""
    return f"{_fmt(value)}{unit}"


def table(results: Results) -> Table:
    """The rich table of ``results``: one section per measurement."""
    t = Table(title="relay bench", show_lines=False, header_style="bold")
    for column in ("measure", "what", "relay", "compared with", "target", ""):
        t.add_column(column)
    for m in results.measurements:
        if m.error:
            t.add_row(m.name, "[red]failed[/red]", m.error[:60], "", "", "")
            continue
        for i, row in enumerate(m.rows):
            goal, mark = "", ""
            if row.target is not None:
                goal = row.target.goal
                mark = "[green]met[/green]" if row.target.met else "[red]missed[/red]"
            t.add_row(m.name if i == 0 else "", row.label, row.relay, row.other, goal, mark)
        t.add_section()
    return t


def _tty() -> bool:
    import sys

    return sys.stdout.isatty()


def render(results: Results, console: Console | None = None) -> None:
    """Print the table, every note, and the targets met."""
    console = console or Console(width=None if _tty() else 132)
    console.print(table(results))
    for m in results.measurements:
        for note in m.notes:
            console.print(f"[dim]{m.name}: {note}[/dim]")
    data = results.to_dict()
    console.print(f"targets met: {data['targets_met']} of {data['targets_total']}")
