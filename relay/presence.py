"""Which devices are online: decided at each device sync, kept in ``Keys.offline``.

A device is offline when its ``lastseen`` (from ``getalldevices``) is older than
``RELAY_DEVICE_OFFLINE_AFTER`` seconds, or three of its polls (``delaybetweenrequest``) when
that is longer: a phone polling every 60 s is not offline after 120 s of silence.

After each sync (:func:`relay.devices.sync_devices`) :func:`record` runs ``lua/presence.lua``:
``Keys.offline`` gains the devices that went offline and loses those that came back, and
each change adds one event to the events stream (``event`` ``device.offline`` or
``device.online``, ``device_id``, ``state``, ``at``, ``lastseen``), which the webhook and
``GET /v1/events`` carry like any other. The lanes of a device that came back get their
tickets re-armed (:func:`relay.dispatch.tickets.rearm`), so messages held while it was away
go at once; the pooled messages waiting in the lanes of a device that went offline go back
to their pools (:mod:`relay.handback`). Devices the gateway no longer lists are left as they
were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relay import scripts
from relay.connection import maybe_text, text
from relay.dispatch.tickets import wake
from relay.lanes import KINDS, device_sims
from relay.log import get_logger

if TYPE_CHECKING:
    from relay.context import Context
    from relay.settings import Settings

log = get_logger(__name__)

POLLS_BEFORE_OFFLINE = 3
"""A device is never offline before missing this many of its polls."""


@dataclass(frozen=True)
class Presence:
    """One device as a sync saw it: online or not, and when it was last seen."""

    device: int
    online: bool
    lastseen_ms: int | None


def offline_after(settings: Settings, poll: float | None) -> float:
    """Seconds of silence after which a device polling every ``poll`` s is offline."""
    return max(settings.device_offline_after, POLLS_BEFORE_OFFLINE * (poll or 0.0))


def is_online(settings: Settings, seen: datetime | None, poll: float | None, now: float) -> bool:
    """Whether a device last seen at ``seen`` (never: None) counts as online at ``now``."""
    if seen is None:
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    return now - seen.timestamp() <= offline_after(settings, poll)


@dataclass(frozen=True)
class Changes:
    """What :func:`record` changed: the devices that came back, and those that went offline."""

    back: list[int]
    gone: list[int]


def record(ctx: Context, seen: Sequence[Presence]) -> Changes:
    """``lua/presence.lua``: update ``Keys.offline`` and emit one event per change; re-arm
    the lanes of the devices that came back. Returns the changes."""
    if not seen:
        return Changes([], [])
    args: list[scripts.Arg] = [ctx.settings.events_maxlen, ctx.now_ms()]
    for p in seen:
        args += [p.device, "1" if p.online else "0", "" if p.lastseen_ms is None else p.lastseen_ms]
    answer: Any = scripts.call(ctx.conn, "presence", [ctx.keys.offline, ctx.keys.events], args)
    back, gone = ([int(text(dev)) for dev in ids] for ids in answer)
    if back:
        log.info("devices.back_online", devices=back, rearmed=rearm_devices(ctx, back))
    return Changes(back, gone)


def rearm_devices(ctx: Context, devices: Iterable[int]) -> list[str]:
    """Re-arm the ticket of each lane of ``devices`` that holds messages; returns the lanes."""
    wanted = set(devices)
    lanes = [
        pair.lane(kind)
        for pair in device_sims(ctx.conn, ctx.keys)
        if pair.device in wanted
        for kind in KINDS
    ]
    with ctx.conn.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.llen(ctx.keys.lane(lane))
            pipe.get(ctx.keys.ticket(lane))
        raw = pipe.execute()
    return [
        lane.member
        for i, lane in enumerate(lanes)
        if int(raw[2 * i]) > 0 and wake(ctx, lane, maybe_text(raw[2 * i + 1]))
    ]


def offline_devices(ctx: Context) -> set[int]:
    """The devices currently offline (``Keys.offline``)."""
    members: Any = ctx.conn.smembers(ctx.keys.offline)
    return {int(text(m)) for m in members}
