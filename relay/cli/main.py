"""The ``relay`` command: a click group whose every error is one line on stderr.

Commands live one module per area (``send``, ``inspect``, ``processes``, ``demo``); each
imports the relay modules it needs inside its function, so ``relay --help`` works even
where an optional piece is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from relay.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    USER_ERRORS,
    CliState,
    report_and_exit_code,
)


class RelayGroup(click.Group):
    """A click group that reports user errors as one line and exits 2 (usage) or 1 (runtime)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else EXIT_OK
        except (click.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            code = EXIT_INTERRUPTED
        except USER_ERRORS as exc:
            code = report_and_exit_code(exc)
        if not standalone_mode:
            return code
        sys.stdout.flush()
        sys.exit(code)


@click.group(cls=RelayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read RELAY_* settings from this file (default: ./.env). Environment variables win.",
)
@click.version_option(package_name="relay-sms", prog_name="relay")
@click.pass_context
def cli(ctx: click.Context, env_file: Path | None) -> None:
    """relay: send SMS, WhatsApp and RCS through your own phones (SMSGateway24),
    paced per device, urgent first, every status written back."""
    ctx.obj = CliState(env_file=env_file)


def _register() -> None:
    from relay.cli import bench, dead, demo, inspect, processes, send, serve

    for module in (send, inspect, processes, demo, bench, dead, serve):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Entry point of the ``relay`` console script."""
    cli.main(prog_name="relay")
