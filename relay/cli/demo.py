"""``relay demo``: the whole pipeline on this machine, no Redis server or gateway account needed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from relay.cli.common import fail, print_json, stdout

if TYPE_CHECKING:
    from rich.console import Console

    from relay.demo import OnUpdate


@click.command("demo")
@click.option(
    "--size",
    type=click.IntRange(10, 100_000),
    default=300,
    show_default=True,
    help="Messages in the bulk campaign.",
)
@click.option(
    "--workers", type=click.IntRange(1, 32), default=2, show_default=True, help="Worker processes."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@click.option(
    "--live/--no-live", default=None, help="Live view of lanes and states (default: on a terminal)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the closing summary as JSON.")
def demo(size: int, workers: int, timeout: float, live: bool | None, as_json: bool) -> None:
    """Run relay end to end: embedded Redis, gateway simulator, workers, reconciler, mixed load.

    Set RELAY_REDIS_URL to use a real Redis server instead (the demo's keys are removed after).
    """
    from relay.cli.render import summary_view
    from relay.demo import DemoConfig, run_demo
    from relay.log import configure

    configure("WARNING", json=False)
    console = stdout()
    show_live = (console.is_terminal if live is None else live) and not as_json
    config = DemoConfig(bulk=size, workers=workers, timeout=timeout)

    def on_api(url: str, key: str) -> None:
        click.echo(
            f"relay serve: {url} (docs: {url}/docs), demo API key: {key}\n"
            f"  try: curl -H 'Authorization: Bearer {key}' {url}/v1/stats\n"
            f"  dashboard: {url}/dashboard (log in with the key)",
            err=True,
        )

    with _live(console if show_live else None) as on_update:
        summary = run_demo(config, on_update=on_update, on_api=on_api)
    if as_json:
        print_json(summary.to_dict())
    else:
        console.print(summary_view(summary))
    if not summary.complete:
        fail(f"not every message was final after {timeout:g} s (worker logs: {summary.log_path})")


@contextmanager
def _live(console: Console | None) -> Iterator[OnUpdate | None]:
    """A rich Live view fed by the demo's updates (nothing without a console)."""
    if console is None:
        yield None
        return
    from rich.live import Live

    from relay.cli.render import demo_view

    with Live(console=console, refresh_per_second=4) as live:
        yield lambda stats, elapsed: live.update(demo_view(stats, elapsed))


COMMANDS = [demo]
