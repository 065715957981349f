"""Pooled messages an offline device holds go back to their pool.

A pooled message that returns to a lane (a refusal, a failed request, a batch verified
absent, a retried dead letter: :func:`relay.lanes.put_back`) goes to the lanes of the member
that took it, so a refused batch is bisected per device. If that member is (or goes)
offline, :func:`hand_back` moves those messages (``queued``, with a ``pool``) to the head of
their pool's lane of the same kind, in the order they had, with their record as before a
claim (``device_id`` 0, no SIM), atomically (``lua/handback.lua``); then the tickets of the
pool's online members of that kind are woken (:func:`relay.dispatch.tickets.wake`), so
another member takes them. Messages sent to the device itself stay held
(``RELAY_HOLD_OFFLINE``).

It runs when a device sync finds devices offline (:func:`relay.devices.sync_devices`, with
what :func:`relay.presence.record` found) and in
every sweep for the devices in ``Keys.offline`` (one may have gone offline before the
put-back). It looks at the first :data:`HEAD_IDS` ids of each lane: put-backs go to a lane's
head, new messages to its tail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from relay import scripts
from relay.connection import maybe_text, text
from relay.context import Context
from relay.dispatch.tickets import wake
from relay.lanes import DeviceSim, PoolLane, pool_lanes
from relay.log import get_logger
from relay.pools import members, pools_of
from relay.presence import offline_devices

log = get_logger(__name__)

HEAD_IDS = 1000
"""How many ids at the head of each lane of an offline member are looked at per call."""


@dataclass(frozen=True)
class HandBack:
    """What :func:`hand_back` moved from one device/SIM: ids per pool lane."""

    pair: DeviceSim
    moved: dict[PoolLane, int]


def hand_back(ctx: Context, devices: Iterable[int]) -> list[HandBack]:
    """Move the waiting pooled messages of the offline ones of ``devices`` back to their
    pools (see the module docstring); wake the members' tickets. Returns what moved."""
    wanted = set(devices)
    pools = ctx.settings.pools
    pairs = sorted({p for name in pools for p in members(pools, name) if p.device in wanted})
    done = [h for h in (_hand_back_pair(ctx, pair) for pair in pairs) if h.moved]
    for h in done:
        woken = [m for lane in h.moved for m in wake_members(ctx, lane)]
        log.info(
            "pools.handed_back",
            lane=h.pair.member,
            moved={lane.member: n for lane, n in h.moved.items()},
            rearmed=woken,
        )
    return done


def _hand_back_pair(ctx: Context, pair: DeviceSim) -> HandBack:
    """``lua/handback.lua`` for one device/SIM (layout in the script's header)."""
    k = ctx.keys
    names = pools_of(ctx.settings.pools, pair)
    own = [k.lane(pair.urgent), k.lane(pair.bulk)]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for key in own:
            pipe.lrange(key, 0, HEAD_IDS - 1)
        urgent, bulk = ([text(i) for i in ids] for ids in pipe.execute())
    if not names or not (urgent or bulk):
        return HandBack(pair, {})
    lanes = [*(pool_lanes(n)[0] for n in names), *(pool_lanes(n)[1] for n in names)]
    ids = [*urgent, *bulk]
    keys = [*own, k.offline, *(k.pool_lane(lane) for lane in lanes), *(k.msg(i) for i in ids)]
    args: list[scripts.Arg] = [pair.device, len(names), *names, len(urgent), *ids]
    answer: Any = scripts.call(ctx.conn, "handback", keys, args)
    flat = [int(v) for v in answer]
    return HandBack(pair, {lanes[i - 1]: n for i, n in zip(flat[::2], flat[1::2], strict=True)})


def wake_members(ctx: Context, lane: PoolLane) -> list[str]:
    """Wake the ticket of ``lane``'s kind of each online member of its pool (no ticket, or a
    timer: a fresh job now); returns the member lanes woken."""
    gone = offline_devices(ctx)
    targets = [
        p.lane(lane.kind) for p in members(ctx.settings.pools, lane.name) if p.device not in gone
    ]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for target in targets:
            pipe.get(ctx.keys.ticket(target))
        holders = [maybe_text(h) for h in pipe.execute()]
    return [t.member for t, holder in zip(targets, holders, strict=True) if wake(ctx, t, holder)]
