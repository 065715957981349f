"""What every ``relay`` command shares: settings from the global options, the library facade,
consoles, and the one place that turns errors into one line on stderr and an exit code.

Exit codes: 0 success, 1 a runtime failure (Redis down, unknown id, gateway refused, a
timeout), 2 bad usage or input (unknown option, invalid message, bad setting), 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import redis
from rich.console import Console

from relay.errors import ConfigError, RelayError, ValidationError
from relay.log import redact_text
from relay.settings import Settings, load_settings

if TYPE_CHECKING:
    from relay.context import Context
    from relay.core import Relay

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass
class CliState:
    """The global options of one ``relay`` invocation and what was built from them."""

    env_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        """Settings from the environment and ``--env-file`` (or ``.env``), read once.

        Raises :class:`ConfigError` naming the variable.
        """
        if self._settings is None:
            extra: dict[str, Any] = {}
            if self.env_file is not None:
                extra["_env_file"] = str(self.env_file)
            self._settings = load_settings(**extra)
            _remember_secrets(self._settings)
        return self._settings


def state() -> CliState:
    """The :class:`CliState` of the running command."""
    ctx = click.get_current_context()
    obj = ctx.find_object(CliState)
    if obj is None:
        obj = ctx.ensure_object(CliState)
    return obj


def configure_logging(settings: Settings, *, quiet: bool = True) -> None:
    """Logs go to stderr (stdout carries ids and JSON); one-shot commands log warnings only."""
    from relay.log import configure

    level = settings.log_level
    if quiet and level != "DEBUG":
        level = "WARNING"
    configure(level, settings.log_json)


@contextmanager
def open_relay(settings: Settings | None = None) -> Iterator[Relay]:
    """The library facade for one command, closed afterwards."""
    from relay.core import Relay

    settings = settings or state().settings()
    configure_logging(settings)
    relay = Relay(settings)
    try:
        yield relay
    finally:
        relay.close()


@contextmanager
def open_context(settings: Settings | None = None, *, quiet: bool = True) -> Iterator[Context]:
    """A :class:`relay.context.Context` (Redis checked) for one command, closed afterwards."""
    from relay.context import Context

    settings = settings or state().settings()
    configure_logging(settings, quiet=quiet)
    ctx = Context.from_settings(settings)
    try:
        yield ctx
    finally:
        ctx.close()


PIPE_WIDTH = 200
"""Columns of tables written to a pipe or file (a terminal uses its own width)."""


def stdout() -> Console:
    """A console on stdout: colours and tables on a terminal, plain and wide text otherwise."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout, one document, nothing else."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def fail(message: str, code: int = EXIT_RUNTIME) -> NoReturn:
    """Stop the command: ``message`` as one line on stderr, exit ``code`` (1 or 2)."""
    raise (InputFailure if code == EXIT_USAGE else CliFailure)(message)


class CliFailure(click.ClickException):
    """A runtime failure the command already worded: one line, exit 1."""

    exit_code = EXIT_RUNTIME


class InputFailure(CliFailure):
    """Bad input the command already worded (invalid file lines...): one line, exit 2."""

    exit_code = EXIT_USAGE


_SECRETS: set[str] = set()
"""The secret settings of this invocation (token, password, webhook key): never printed."""


def _remember_secrets(settings: Settings) -> None:
    for secret in (
        settings.gateway_token,
        settings.gateway_password,
        settings.webhook_secret,
        settings.redis_sentinel_password,
    ):
        if secret is not None and len(secret.get_secret_value()) >= 4:
            _SECRETS.add(secret.get_secret_value())


def hide_secrets(text: str) -> str:
    """``text`` with this invocation's secret settings replaced by ``***``."""
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return text


def one_line(text: str, *, redact: bool = True) -> str:
    """``text`` on one line; secrets hidden, and with ``redact`` also ``token=...``-like values
    (for text relay did not word itself: Redis and library messages)."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return redact_text(flat) if redact else hide_secrets(flat)


def exit_code_for(exc: BaseException) -> int:
    """The exit code an error stands for: 2 for bad usage, input or settings; 1 otherwise."""
    if isinstance(exc, click.UsageError | ValidationError | ConfigError):
        return EXIT_USAGE
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_RUNTIME


def describe(exc: BaseException) -> str:
    """The one line shown for ``exc`` (no traceback)."""
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return f"Error: {one_line(exc.format_message())}{hint}"
    if isinstance(exc, click.ClickException):
        return f"Error: {one_line(exc.format_message())}"
    if isinstance(exc, redis.RedisError):
        return f"Error: Redis: {one_line(str(exc)) or type(exc).__name__}"
    name = type(exc).__name__
    return f"Error: {one_line(str(exc), redact=not isinstance(exc, RelayError)) or name}"


def report_and_exit_code(exc: BaseException) -> int:
    """Write ``exc`` as one line on stderr and answer its exit code."""
    click.echo(describe(exc), err=True)
    return exit_code_for(exc)


USER_ERRORS: tuple[type[BaseException], ...] = (
    click.ClickException,
    RelayError,
    redis.RedisError,
)
"""Errors a user can cause: reported as one line, never a traceback."""
