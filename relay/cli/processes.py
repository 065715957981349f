"""``relay worker``, ``reconciler``, ``run`` and ``simulator``: the long-running processes."""

from __future__ import annotations

import errno
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from relay.cli.common import EXIT_RUNTIME, fail, open_context, print_json, state
from relay.log import get_logger

if TYPE_CHECKING:
    from relay.context import Context

log = get_logger(__name__)

METRICS_PORT = click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics on this port (default: RELAY_METRICS_PORT; none when unset).",
)


@contextmanager
def _metrics(ctx: Context, port: int | None) -> Iterator[None]:
    """Serve metrics on ``port`` (or the setting) for the duration of the block."""
    port = port or ctx.settings.metrics_port
    if port is None:
        yield
        return
    from relay.results.metrics import serve

    try:
        server = serve(ctx, port)
    except OSError as exc:
        fail(f"cannot serve metrics on port {port}: {exc.strerror or exc}")
    try:
        yield
    finally:
        server.stop()


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes to start and supervise.",
)
@METRICS_PORT
def worker(burst: bool, processes: int, metrics_port: int | None) -> None:
    """Run dispatch workers: RQ workers on the urgent then bulk queue, with the scheduler thread."""
    from relay.run.worker import run_worker

    with open_context(quiet=False) as ctx:  # settings and Redis checked: one-line errors
        settings = ctx.settings
    port = metrics_port or settings.metrics_port
    with _port_errors(port):
        run_worker(settings, burst=burst, processes=processes, metrics_port=port)


@contextmanager
def _port_errors(port: int | None) -> Iterator[None]:
    """A metrics port that cannot be bound becomes a one-line error."""
    try:
        yield
    except OSError as exc:
        if port is None or exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
        fail(f"cannot serve metrics on port {port}: {exc.strerror or exc}")


@click.command("reconciler")
@click.option("--once", is_flag=True, help="One pass over every device, print its report, exit.")
@METRICS_PORT
def reconciler(once: bool, metrics_port: int | None) -> None:
    """Follow submitted messages at the gateway and write their statuses back."""
    from relay.reconcile.reconciler import Reconciler
    from relay.run.supervisor import stop_on_signals

    with open_context(quiet=False) as ctx:
        rec = Reconciler(ctx)
        if once:
            print_json(_plain(rec.run_once()))
            return
        with stop_on_signals(threading.Event()) as stop, _metrics(ctx, metrics_port):
            rec.run(stop)


def _plain(report: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    if hasattr(report, "to_dict"):
        return report.to_dict()
    return report


@click.command("run")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes (each runs the scheduler thread too).",
)
@click.option("--until-idle", is_flag=True, help="Exit 0 once every message is final.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="With --until-idle: exit 1 if not idle after S seconds.",
)
@METRICS_PORT
def run(workers: int, until_idle: bool, timeout: float | None, metrics_port: int | None) -> None:
    """Workers, scheduler and reconciler in one command (for a single host, or a demo)."""
    from relay.run import supervisor as runner

    if timeout is not None and not until_idle:
        raise click.UsageError("--timeout goes with --until-idle")
    settings = state().settings()
    with (
        runner.stop_on_signals(threading.Event()) as stop,
        open_context(settings, quiet=False) as ctx,
        _metrics(ctx, metrics_port),
    ):
        idle = runner.run(
            settings, workers=workers, until_idle=until_idle, timeout=timeout, stop=stop
        )
    if not idle:
        fail(f"not idle after {timeout:g} s: {runner.describe_open(settings)}", EXIT_RUNTIME)


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8024,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--devices",
    "specs",
    multiple=True,
    metavar="SPEC",
    help="Phones as ID[:REQUEST[:EACH[:SIMS]]] (seconds between polls, between SMS; "
    "'-' = null), several separated by ';' or ', ' (default: 260:1:0.5;261:1:-).",
)
@click.option("--token", help="API token to accept (default: a new random one, printed).")
@click.option("--json", "as_json", is_flag=True, help="Print the banner as one JSON line.")
def simulator(
    host: str, port: int, specs: tuple[str, ...], token: str | None, as_json: bool
) -> None:
    """Run the SMSGateway24 simulator over HTTP (for trying relay without an account)."""
    from relay.simulator import DEFAULT_DEVICES, run_forever

    devices = [d for spec in specs for d in parse_devices(spec)] or list(DEFAULT_DEVICES)
    try:
        run_forever(host, port, devices, json_line=as_json, token=token)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


_SPLIT = re.compile(r";|,(?=\s*\d+:)|\s+")


def parse_devices(spec: str) -> list[Any]:
    """Simulator phones from ``spec`` (``relay simulator --help``); a bad one is a usage error."""
    from relay.simulator import parse_device

    devices = []
    for part in (p.strip() for p in _SPLIT.split(spec) if p and p.strip()):
        try:
            devices.append(parse_device(part))
        except ValueError as exc:
            raise click.BadParameter(f"{part!r}: {exc}", param_hint="--devices") from None
    if not devices:
        raise click.BadParameter("no devices given", param_hint="--devices")
    return devices


COMMANDS = [worker, reconciler, run, simulator]
