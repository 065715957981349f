"""``relay bench``: relay beside plain RQ on a real Redis and the simulator (relay.bench)."""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from relay.bench.config import MEASURES, BenchConfig

if TYPE_CHECKING:
    from rich.console import Console

EMBEDDED = "embedded"


@click.command("bench")
@click.option(
    "--redis-url",
    default=lambda: os.environ.get("RELAY_REDIS_URL", EMBEDDED),
    show_default="RELAY_REDIS_URL or " + EMBEDDED,
    help="A real Redis server (fakeredis is refused); keys go under a prefix of the bench's "
    "own and are deleted afterwards. 'embedded': the embedded Valkey server (relay.embedded), "
    "started for the run.",
)
@click.option("--quick", is_flag=True, help="Smaller sizes: about a minute.")
@click.option("--tiny", is_flag=True, hidden=True, help="Smallest sizes (the test suite).")
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bench-results.json"),
    show_default=True,
    help="Where to write every number as JSON.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(MEASURES),
    help="Run only this measurement (repeatable).",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Profile the worker (end to end) and the reconciler with pyinstrument; reports here.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where worker and simulator logs go (default: a new temporary directory).",
)
@click.option(
    "--soak",
    "soak_minutes",
    type=click.FloatRange(min=0),
    help="Instead: repeat the urgent-latency scenario under added CPU load for MINUTES; "
    "if an urgent message does not arrive, dump relay's state, keep its keys, exit 1.",
    metavar="MINUTES",
)
@click.option(
    "--soak-load",
    type=click.IntRange(min=0),
    help="Spinning processes of the soak's added CPU load (default: one per core).",
)
def bench(
    redis_url: str,
    quick: bool,
    tiny: bool,
    json_out: Path,
    only: tuple[str, ...],
    profile_dir: Path | None,
    log_dir: Path | None,
    soak_minutes: float | None,
    soak_load: int | None,
) -> None:
    """Measure enqueue, end to end, urgent latency, memory, gateway calls, scale-out and
    the reconciler, beside plain RQ; print a table and write JSON. With ``--soak``, hunt
    for urgent messages that never arrive instead."""
    from rich.console import Console

    from relay.log import configure

    configure("WARNING", json=True)
    console = Console(stderr=True)
    with ExitStack() as stack:
        if redis_url == EMBEDDED:
            redis_url = _embedded(stack, console)
        cfg = BenchConfig.for_mode(
            "tiny" if tiny else "quick" if quick else "full",
            redis_url=redis_url,
            measures=tuple(m for m in MEASURES if not only or m in only),
            log_dir=log_dir or Path(tempfile.mkdtemp(prefix="relay-bench-")),
            profile_dir=profile_dir,
        )
        if soak_minutes is not None:
            _soak(cfg, soak_minutes, soak_load, json_out, console)
            return
        _bench(cfg, json_out, console)


def _embedded(stack: ExitStack, console: Console) -> str:
    """Start the embedded engine for the run (stopped when ``stack`` closes); its URL."""
    from relay.embedded import EmbeddedServer
    from relay.errors import EmbeddedServerError

    try:
        server = stack.enter_context(EmbeddedServer())
    except EmbeddedServerError as exc:
        raise click.ClickException(f"{exc} (or give --redis-url)") from None
    console.print(f"[dim]redis: the embedded {server.engine}, started for this run[/dim]")
    return server.url


def _bench(cfg: BenchConfig, json_out: Path, console: Console) -> None:
    from relay.bench.report import Measurement, fmt, render
    from relay.bench.suite import BenchError, run

    def progress(m: Measurement) -> None:
        status = "failed: " + m.error if m.error else "done"
        console.print(f"[dim]{m.name}: {status} in {fmt(m.seconds, ' s')}[/dim]")

    console.print(f"[dim]relay bench ({cfg.mode}) on {cfg.redis_url}; logs in {cfg.log_dir}[/dim]")
    try:
        results = run(cfg, on_done=progress)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    results.write_json(json_out)
    render(results)
    engine = results.redis
    click.echo(f"redis: {engine['engine']}, allocator {engine['mem_allocator']}", err=True)
    click.echo(f"JSON written to {json_out}", err=True)


def _soak(
    cfg: BenchConfig, minutes: float, load: int | None, json_out: Path, console: Console
) -> None:
    import json

    from relay.bench.env import check_real_redis
    from relay.bench.soak import SoakRun, soak
    from relay.bench.suite import BenchError

    try:
        check_real_redis(cfg.redis_url)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None

    def show(run: SoakRun) -> None:
        click.echo(run.line())

    console.print(
        f"[dim]relay bench --soak {minutes:g} ({cfg.mode} latency scenario) on {cfg.redis_url}; "
        f"logs in {cfg.log_dir}[/dim]"
    )
    result = soak(cfg, minutes, load=load, on_run=show)
    json_out.write_text(json.dumps(result.to_dict(), indent=2))
    click.echo(
        f"soak: {len(result.runs)} runs under {result.load_processes} spinning processes, "
        f"{result.sent} urgent messages, {result.missing} missing, "
        f"{result.stalls} stalled lanes re-armed by the sweep"
    )
    click.echo(f"JSON written to {json_out}", err=True)
    failed = next((r for r in result.runs if r.missing), None)
    if failed is not None:
        raise click.ClickException(
            f"{failed.missing} urgent messages never arrived in run {failed.number}; "
            f"state dumped to {failed.dump} (workers' stacks in their logs in {cfg.log_dir}); "
            f"keys kept under the prefixes {', '.join(failed.kept_prefixes)}"
        )


COMMANDS = [bench]
