"""Durable acknowledgements: writes on ``RELAY_REDIS_MIN_REPLICAS`` replicas before relay
answers a ``send`` or calls the gateway with a batch (docs/design.md, invariant 11).

Redis replicates asynchronously: a primary that dies can take its last writes with it, and
Sentinel then promotes a replica that never saw them. ``WAIT n timeout`` blocks until ``n``
replicas acknowledged every write *of the connection it is sent on* (up to that
connection's last write: since the replication stream is ordered, that covers every write
any client made before it). redis-py takes a pool connection per command, so a ``WAIT``
sent after a write may go out on another connection — one whose last write is older, or
that never wrote, which then answers at once whatever the replicas hold. And inside
MULTI/EXEC ``WAIT`` does not block at all. So here the ``WAIT`` goes on the same
connection, right after the writes:

- :func:`run_script` sends ``EVALSHA … ; WAIT n t`` as one non-transactional pipeline: one
  round trip, one connection (``send``: ``lua/enqueue.lua``);
- :func:`pipeline` is a MULTI/EXEC pipeline whose ``execute()`` sends ``WAIT`` on the
  connection that ran the EXEC (the batch's ``queued → submitting``, a cancel).

When fewer replicas than wanted acknowledge within ``RELAY_REDIS_WAIT_TIMEOUT``,
:class:`relay.errors.NotReplicated` is raised instead of an answer: the writes are on the
primary, but a failover now could lose them. ``send`` then fails (the caller retries with
its ``key``) and a batch goes back to its lane instead of to the gateway.

With ``RELAY_REDIS_MIN_REPLICAS=0`` (the default) both are the plain calls, at no cost.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from functools import cache
from typing import Any

import redis
from redis.client import Pipeline
from redis.sentinel import SentinelConnectionPool

from relay import scripts
from relay.context import Context
from relay.errors import NotReplicated

EncodableT = scripts.Arg


def wanted(ctx: Context) -> int:
    """How many replicas ``ctx``'s writes must reach (``RELAY_REDIS_MIN_REPLICAS``)."""
    return ctx.settings.redis_min_replicas


def run_script(
    ctx: Context, name: str, keys: Sequence[str], args: Sequence[EncodableT], *, what: str
) -> Any:
    """``scripts.call(ctx.conn, name, keys, args)``, answered only once its writes are on
    ``RELAY_REDIS_MIN_REPLICAS`` replicas; else :class:`NotReplicated` naming ``what``."""
    if wanted(ctx) == 0:
        return scripts.call(ctx.conn, name, keys, args)
    sha = _sha(name)
    for _ in range(2):
        with _pipeline(ctx, what, transaction=False) as pipe:
            pipe.evalsha(sha, len(keys), *keys, *args)
            try:
                return pipe.execute()[0]
            except redis.exceptions.NoScriptError:
                # a new primary (after a failover) has an empty script cache; nothing ran
                ctx.conn.script_load(scripts.lua_source(name))
    raise RuntimeError(f"script {name} is not loaded on the primary after SCRIPT LOAD")


def pipeline(ctx: Context, *, what: str) -> Pipeline:
    """A MULTI/EXEC pipeline on ``ctx.conn`` whose ``execute()`` answers only once the
    transaction is on ``RELAY_REDIS_MIN_REPLICAS`` replicas; else :class:`NotReplicated`
    (naming ``what``, carrying the transaction's results as ``.results``)."""
    if wanted(ctx) == 0:
        return ctx.conn.pipeline(transaction=True)
    return _pipeline(ctx, what, transaction=True)


def _pipeline(ctx: Context, what: str, *, transaction: bool) -> ReplicatedPipeline:
    return ReplicatedPipeline(
        ctx.conn,
        replicas=wanted(ctx),
        timeout_s=ctx.settings.redis_wait_timeout,
        transaction=transaction,
        what=what,
    )


@cache
def _sha(name: str) -> str:
    return hashlib.sha1(scripts.lua_source(name).encode()).hexdigest()


class ReplicatedPipeline(Pipeline):
    """A pipeline that sends ``WAIT replicas timeout`` on its own connection after its
    commands (after the EXEC in a transaction) and raises :class:`NotReplicated` when fewer
    replicas acknowledged them in time."""

    def __init__(
        self,
        conn: redis.Redis,
        *,
        replicas: int,
        timeout_s: float,
        transaction: bool,
        what: str,
    ) -> None:
        super().__init__(conn.connection_pool, conn.response_callbacks, transaction, None)
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.timeout_ms = max(1, round(timeout_s * 1000))  # WAIT 0 would block forever
        self.what = what

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        results = super()._execute_transaction(connection, commands, raise_on_error)
        connection.send_command("WAIT", self.replicas, self.timeout_ms)
        self._check(connection.read_response(), results)
        return results

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        wait: tuple[tuple[Any, ...], dict[str, Any]] = (
            ("WAIT", self.replicas, self.timeout_ms),
            {},
        )
        results = super()._execute_pipeline(  # type: ignore[no-untyped-call]
            connection, [*commands, wait], raise_on_error
        )
        acked = results.pop()
        if isinstance(acked, Exception):
            raise acked
        self._check(acked, results)
        return results

    def _check(self, acked: Any, results: list[Any]) -> None:
        if int(acked) < self.replicas:
            self._ask_sentinels()
            raise NotReplicated(
                self.what, int(acked), self.replicas, self.timeout_s, results=results
            )

    def _ask_sentinels(self) -> None:
        """A primary without replicas may be one the Sentinels already replaced (it lives
        on until they demote it): ask them, so the next call goes to the new primary (the
        pool drops connections to an address that is no longer the primary's)."""
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            with contextlib.suppress(redis.RedisError):
                pool.get_master_address()  # type: ignore[no-untyped-call]
