"""The Lua scripts of ``relay/lua/``: loaded once, run by EVALSHA (loaded on NOSCRIPT).

Each ``relay/lua/<name>.lua`` starts with a header stating its KEYS, ARGV and what it
changes; keys always come in KEYS, never built inside a script.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

EncodableT = str | int | float | bytes


@cache
def lua_source(name: str) -> str:
    """The text of ``relay/lua/<name>.lua``."""
    return resources.files("relay").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


_scripts: dict[str, Script] = {}


def _script(name: str, client: redis.Redis | redis.client.Pipeline) -> Script:
    # A Script keeps the client it was made with only for its encoder: every call
    # passes its own client (or pipeline), so one Script per name serves them all.
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = Script(client, lua_source(name))
    return script


def run(
    client: redis.Redis | redis.client.Pipeline,
    name: str,
    keys: Sequence[str],
    args: Sequence[EncodableT],
) -> Any:
    """Run script ``name`` on ``client`` (a connection, or a pipeline to queue it on)."""
    return _script(name, client)(keys=list(keys), args=list(args), client=client)
