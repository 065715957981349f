"""The batch record: one claimed batch of one device/SIM, from claim to outcome.

``lua/claim.lua`` writes ``Keys.batch(bid)`` (``dev``, ``sim``, ``kind``, ``ids``
comma-joined, ``claimed`` ms, ``worker``) and puts ``bid`` on ``Keys.inflight`` (score: the
claim time). The submitter drops both once the outcome is recorded. When the outcome is
unknown, the batch moves to ``Keys.verify`` (score: when its check may run) and gains
``doubted`` (ms the request was over on relay's side) and ``verify_tries``. A batch taken
from a silent worker is renamed ``<bid>.r`` (:data:`RECOVERED_SUFFIX`) as it moves, so the
late worker can no longer touch it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from relay import scripts
from relay.connection import text
from relay.context import Context
from relay.lanes import DeviceSim
from relay.log import get_logger

log = get_logger(__name__)

RECOVERED_SUFFIX = ".r"
"""Added to the id of a batch taken from a silent worker."""


@dataclass(frozen=True)
class Batch:
    """A claimed batch as ``lua/claim.lua`` recorded it (and recovery added to it)."""

    bid: str
    pair: DeviceSim
    ids: tuple[str, ...]
    claimed_ms: int
    worker: str | None = None
    tries: int = 0
    doubted_ms: int = 0
    """When the request was known to be over on relay's side (0: not recorded)."""

    @property
    def origin(self) -> str:
        """The id the batch was claimed under (its messages' ``batch`` field)."""
        return self.bid.removesuffix(RECOVERED_SUFFIX)

    @classmethod
    def from_hash(cls, bid: str, raw: Mapping[Any, Any]) -> Batch | None:
        """The batch, or None when its record is gone or unreadable."""
        h = {text(k): text(v) for k, v in raw.items()}
        try:
            return cls(
                bid,
                DeviceSim(int(h["dev"]), int(h["sim"])),
                tuple(i for i in h.get("ids", "").split(",") if i),
                int(h["claimed"]),
                h.get("worker") or None,
                int(h.get("verify_tries") or 0),
                int(h.get("doubted") or 0),
            )
        except (KeyError, ValueError):
            if raw:
                log.error("batch.unreadable", batch=bid, fields=sorted(h))
            return None


def load(ctx: Context, bid: str) -> Batch | None:
    """The batch ``bid``; None when gone (settled, or renamed as recovered)."""
    raw: Any = ctx.conn.hgetall(ctx.keys.batch(bid))
    return Batch.from_hash(bid, raw)


def load_many(ctx: Context, bids: list[str]) -> list[Batch | None]:
    pipe = ctx.conn.pipeline(transaction=False)
    for bid in bids:
        pipe.hgetall(ctx.keys.batch(bid))
    return [Batch.from_hash(b, raw) for b, raw in zip(bids, pipe.execute(), strict=True)]


def drop(pipe: redis.client.Pipeline, ctx: Context, bid: str) -> None:
    """Queue on ``pipe``: the batch leaves ``inflight`` and its record goes."""
    pipe.zrem(ctx.keys.inflight, bid)
    pipe.delete(ctx.keys.batch(bid))


def take(
    ctx: Context,
    src: str,
    dst: str,
    bid: str,
    *,
    due_ms: int,
    score_ms: int,
    rename_to: str | None = None,
) -> bool:
    """``lua/take.lua``: move ``bid`` from sorted set ``src`` to ``dst`` (score ``score_ms``)
    when its score is at most ``due_ms``, so exactly one process takes it; with
    ``rename_to``, the batch is renamed (member and record) as it moves."""
    keys = [src, dst]
    args: list[scripts.Arg] = [bid, due_ms, score_ms]
    if rename_to is not None:
        keys += [ctx.keys.batch(bid), ctx.keys.batch(rename_to)]
        args.append(rename_to)
    return bool(scripts.call(ctx.conn, "take", keys, args))
