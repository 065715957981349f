"""``relay serve`` (the HTTP API) and ``relay apikey`` (its keys)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from relay.cli.common import fail, open_context, print_json, state

if TYPE_CHECKING:
    from rich.table import Table

    from relay.apikeys import ApiKey


@click.command("serve")
@click.option("--host", help="Address to listen on (default: RELAY_API_HOST, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on (default: RELAY_API_PORT, 8080; 0: any free port).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes sharing the port (default: RELAY_API_WORKERS, 1).",
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API: /v1 (API keys from `relay apikey`), /docs, /metrics."""
    from relay.api.server import serve as run_server
    from relay.cli.common import configure_logging

    settings = state().settings()
    configure_logging(settings, quiet=False)
    run_server(
        settings,
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        workers=workers or settings.api_workers,
    )


@click.group("apikey")
def apikey() -> None:
    """API keys of `relay serve`: create, list, revoke. Only a hash of each key is stored."""


@apikey.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(["send", "read", "admin"]),
    default="send",
    show_default=True,
    help="send: enqueue and follow messages; read: status, stats, events; admin: everything.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"name": ..., "key": ...}.')
def create(name: str, scope: str, as_json: bool) -> None:
    """Make a key and print it once (it cannot be shown again)."""
    from relay.apikeys import ApiKeys

    with open_context() as ctx:
        record, plaintext = ApiKeys(ctx).create(name, scope)
    if as_json:
        print_json({"name": record.name, "scope": scope, "key": plaintext})
        return
    click.echo(plaintext)
    click.echo(f"API key {record.name!r} (scope {scope}); it is shown only now.", err=True)


@apikey.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as a JSON array.")
def list_keys(as_json: bool) -> None:
    """Every key: name, scopes, created, last used (never the key)."""
    from relay.apikeys import ApiKeys
    from relay.cli.render import print_listing

    with open_context() as ctx:
        keys = ApiKeys(ctx).list()
    print_listing(keys, as_json, "No API keys.", lambda: _keys_table(keys))


def _keys_table(keys: Sequence[ApiKey]) -> Table:
    from relay.cli.render import titled_table
    from relay.clock import from_ms

    table = titled_table("API keys", ("name", "scopes", "created", "last used"))
    for k in keys:
        used = from_ms(k.last_used_ms).strftime("%Y-%m-%d %H:%M") if k.last_used_ms else "never"
        created = from_ms(k.created_ms).strftime("%Y-%m-%d %H:%M")
        table.add_row(k.name, ", ".join(sorted(k.scopes)), created, used)
    return table


@apikey.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Delete a key: every server process refuses it from the next request on."""
    from relay.apikeys import ApiKeys

    with open_context() as ctx:
        if not ApiKeys(ctx).revoke(name):
            fail(f"no API key named {name!r}")
    click.echo(f"API key {name!r} revoked.", err=True)


COMMANDS = [serve, apikey]
