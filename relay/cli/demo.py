"""``relay demo``: the whole pipeline on this machine, no Redis server or gateway account needed."""

from __future__ import annotations

import click

from relay.cli.common import print_json, stdout


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
    """Run relay end to end: embedded Redis, gateway simulator, workers, reconciler, mixed load."""
    from relay.cli.render import summary_view
    from relay.demo import DemoConfig, run_demo

    console = stdout()
    show_live = console.is_terminal if live is None else live
    config = DemoConfig(bulk=size, workers=workers, timeout=timeout)
    summary = run_demo(config, console=console if show_live and not as_json else None)
    if as_json:
        print_json(summary.to_dict())
    else:
        console.print(summary_view(summary))
    if not summary.complete:
        raise click.exceptions.Exit(1)


COMMANDS = [demo]
