"""The Lua scripts of ``relay/lua/``: loaded once, run by EVALSHA (loaded on NOSCRIPT).

Each ``relay/lua/<name>.lua`` starts with a header stating its KEYS, ARGV and what it
changes; keys always come in KEYS, never built inside a script. Each script has ONE typed
function, in the module that owns what it changes, which builds its KEYS and ARGV and decodes
its answer into a small dataclass; nothing else calls :func:`call` or :func:`queue`:

=============  ==================================================================
script         typed function
=============  ==================================================================
enqueue        :meth:`relay.produce.producer.Producer` (``_enqueue``)
cancel         :meth:`relay.produce.producer.Producer.cancel` (``_take_out``)
promote        :func:`relay.produce.schedule.promote_lane`
claim          :func:`relay.dispatch.claim.claim`
handoff        :func:`relay.dispatch.tickets.handoff`
pop_due        :func:`relay.dispatch.tickets.pop_due`
requeue        :func:`relay.lanes.put_back`
take           :func:`relay.dispatch.batch.take`
transition     :meth:`relay.store.Store.transition`
records        :func:`relay.store.read_fields`
hashes         :func:`relay.store.read_records`
match          :func:`relay.reconcile.lookup.record_matches`
unpend         :func:`relay.reconcile.apply.unpend`
lease          :class:`relay.processes.Lease`
presence       :func:`relay.presence.record`
handback       :func:`relay.handback.hand_back` (``_hand_back_pair``)
expire         :func:`relay.dispatch.expiry.expire_due`
=============  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

import redis
from redis.commands.core import Script

Arg = str | int | float | bytes
T = TypeVar("T")


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


def call(client: redis.Redis, name: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
    """Run script ``name`` now and return its raw answer (for the typed functions)."""
    return _script(name, client)(keys=list(keys), args=list(args), client=client)


class Pending(Generic[T]):
    """A script call queued on a pipeline: :meth:`result` decodes its answer once the
    pipeline ran (``answers`` is what ``execute()`` returned)."""

    def __init__(self, index: int | None, decode: Callable[[Any], T]) -> None:
        self.index = index  # None: nothing was queued (decode gets None)
        self._decode = decode

    def result(self, answers: Sequence[Any]) -> T:
        return self._decode(None if self.index is None else answers[self.index])


def queue(
    pipe: redis.client.Pipeline,
    name: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    decode: Callable[[Any], T],
) -> Pending[T]:
    """Queue script ``name`` on ``pipe``; the returned :class:`Pending` decodes its answer."""
    index = len(pipe)
    _script(name, pipe)(keys=list(keys), args=list(args), client=pipe)
    return Pending(index, decode)
