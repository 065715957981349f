"""Device delays from ``getalldevices``, the settings overrides, and the :class:`Pace` of each
device/SIM.

The gateway describes each phone with ``delaybetweeneachsms`` (seconds between two SMS; may
be null) and ``delaybetweenrequest`` (seconds between two polls of the cloud). relay keeps
the last answer in ``Keys.devices`` (device id → JSON) and the time of that sync in
``Keys.devices_synced``; whichever process finds the sync older than
``RELAY_DEVICE_REFRESH`` refreshes it, under a short lease so only one does.

:func:`pace_for` turns those delays into the pacing of one device/SIM: the interval between
two messages (``RELAY_DEVICE_OVERRIDES`` first, then the device's ``delaybetweeneachsms``,
then ``RELAY_DEFAULT_SEND_INTERVAL``) and the burst that covers one poll. The delays are
cached in-process for about a second; the pacing *state* (``tat``) lives only in Redis
(``lua/claim.lua``).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relay import presence
from relay.connection import text
from relay.errors import RelayError
from relay.handback import hand_back
from relay.lanes import device_sims
from relay.log import get_logger
from relay.processes import Lease, lease_ttl_ms, process_name

if TYPE_CHECKING:
    from relay.context import Context
    from relay.gateway import Device
    from relay.settings import Settings

log = get_logger(__name__)

CACHE_SECONDS = 1.0
"""How long one process reuses a device's delays read from Redis."""
REFRESH_LEASE = "devices-refresh"
"""Lease name (``Keys.lease``) held by the one process refreshing the devices."""
SYNC_FAILED = "sync-failed"
"""Holds the refresh lease after a failed sync, until the retry is due."""
RETRY_SECONDS = 30.0
"""After a failed sync, the next attempt waits this long (or ``device_refresh`` if shorter)."""
MAX_DELAY_S = 86400.0
"""A gateway delay beyond this (or not finite) is garbage: the defaults apply instead."""

_cache: dict[tuple[str, int], tuple[float, float | None, float | None]] = {}


@dataclass(frozen=True)
class Pace:
    """How fast relay may hand messages of one device/SIM to the gateway.

    ``interval_s`` seconds between two messages (0: unlimited), ``burst`` messages may go
    at once (enough to cover one poll of the phone, ``poll_s``). ``overridden`` says the
    interval comes from ``RELAY_DEVICE_OVERRIDES`` rather than the gateway.
    """

    interval_s: float
    burst: int
    poll_s: float = 0.0
    overridden: bool = False

    @property
    def unlimited(self) -> bool:
        return self.interval_s <= 0

    @property
    def interval_ms(self) -> int:
        """The interval in whole ms as the claim script takes it (0: unlimited, else ≥ 1)."""
        return 0 if self.unlimited else max(1, round(self.interval_s * 1000))


def compute_pace(
    settings: Settings, dev: int, sim: int, each: float | None, poll: float | None
) -> Pace:
    """The pace of ``dev``/``sim`` given the gateway's delays (None: not known)."""
    each, poll = _usable(each), _usable(poll)
    override = settings.send_interval_override(dev, sim)
    if override is not None:
        interval = override
    elif each is not None and each >= 0:
        interval = float(each)
    else:
        interval = settings.default_send_interval
    poll_s = float(poll) if poll is not None and poll > 0 else settings.default_poll_interval
    burst = 1 if interval <= 0 else max(1, math.ceil(poll_s / interval - 1e-9))
    return Pace(interval_s=interval, burst=burst, poll_s=poll_s, overridden=override is not None)


def _usable(seconds: float | None) -> float | None:
    """A delay to pace by, or None for one no phone has (infinite, NaN, over a day)."""
    if seconds is None or not math.isfinite(seconds) or seconds > MAX_DELAY_S:
        return None
    return seconds


def pace_for(ctx: Context, dev: int, sim: int) -> Pace:
    """The pace of ``dev``/``sim`` now (delays cached for :data:`CACHE_SECONDS`)."""
    each, poll = _delays(ctx, dev)
    return compute_pace(ctx.settings, dev, sim, each, poll)


def _delays(ctx: Context, dev: int) -> tuple[float | None, float | None]:
    """(delaybetweeneachsms, delaybetweenrequest) of ``dev`` as last synced."""
    now = ctx.clock.now()
    key = (ctx.keys.prefix, dev)
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    stored = stored_device(ctx, dev)
    each, poll = (stored.each, stored.poll) if stored else (None, None)
    _cache[key] = (now + CACHE_SECONDS, each, poll)
    return each, poll


def poll_delay(ctx: Context, dev: int) -> float:
    """The device's ``delaybetweenrequest`` as last synced, else the settings' default."""
    _, poll = _delays(ctx, dev)
    return poll if poll is not None else ctx.settings.default_poll_interval


# --- the stored devices -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredDevice:
    """A device as the last sync stored it in ``Keys.devices`` (the gateway's JSON fields
    plus ``online`` as of the sync), read in one place."""

    id: int
    data: dict[str, Any]

    @classmethod
    def parse(cls, dev: int, raw: bytes | str | None) -> StoredDevice | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return cls(dev, data) if isinstance(data, dict) else None

    @property
    def title(self) -> str | None:
        title = self.data.get("title")
        return title if isinstance(title, str) else None

    @property
    def each(self) -> float | None:
        """``delaybetweeneachsms`` (None: not given)."""
        return _number(self.data.get("delaybetweeneachsms"))

    @property
    def poll(self) -> float | None:
        """``delaybetweenrequest`` (None: not given)."""
        return _number(self.data.get("delaybetweenrequest"))

    @property
    def lastseen(self) -> datetime | None:
        from relay.gateway.dates import parse_gateway_datetime

        try:
            seen = parse_gateway_datetime(self.data.get("lastseen"))
        except ValueError:
            return None
        if seen is not None and seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        return seen

    @property
    def sims(self) -> set[int]:
        """The SIM slots the phone reports."""
        slots = self.data.get("siminfo") or []
        return {int(s["slot"]) for s in slots if isinstance(s, dict) and "slot" in s}

    def online(self, settings: Settings, now: float) -> bool | None:
        """Online as of the sync (its ``online`` flag), else from a recent ``lastseen``."""
        flag = self.data.get("online")
        if isinstance(flag, bool):
            return flag
        seen = self.lastseen
        return None if seen is None else presence.is_online(settings, seen, self.poll, now)


def stored_device(ctx: Context, dev: int) -> StoredDevice | None:
    return StoredDevice.parse(dev, ctx.conn.hget(ctx.keys.devices, str(dev)))


def stored_devices(ctx: Context) -> dict[int, StoredDevice]:
    raw: dict[Any, Any] = ctx.conn.hgetall(ctx.keys.devices)
    devices = (StoredDevice.parse(int(text(k)), v) for k, v in raw.items())
    return {d.id: d for d in devices if d is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def forget_cache(prefix: str | None = None) -> None:
    """Drop cached delays (of one key prefix, or all): the next :func:`pace_for` reads Redis."""
    for key in [k for k in _cache if prefix is None or k[0] == prefix]:
        _cache.pop(key, None)


# --- sync ---------------------------------------------------------------------------------


def sync_devices(ctx: Context) -> list[Device]:
    """Fetch ``getalldevices`` and replace ``Keys.devices`` with it; returns the devices.

    Raises the gateway's errors (:class:`relay.errors.GatewayError`) unchanged.
    """
    devices = ctx.gateway.get_all_devices()
    now = ctx.clock.now()
    stored = {d.id: _device_json(ctx.settings, d, now) for d in devices}
    mapping: dict[Any, Any] = {str(dev): json.dumps(data) for dev, data in stored.items()}
    with ctx.conn.pipeline(transaction=True) as pipe:
        pipe.delete(ctx.keys.devices)
        if mapping:
            pipe.hset(ctx.keys.devices, mapping=mapping)
        pipe.set(ctx.keys.devices_synced, ctx.now_ms())
        pipe.execute()
    forget_cache(ctx.keys.prefix)
    changes = presence.record(ctx, [_presence(d, stored[d.id]["online"]) for d in devices])
    if changes.gone:
        hand_back(ctx, changes.gone)
    log.info("devices.synced", devices=len(devices))
    return devices


def _device_json(settings: Settings, device: Device, now: float) -> dict[str, Any]:
    """The stored form: the gateway's fields (JSON types) plus ``online`` as of the sync."""
    data = device.model_dump(mode="json")
    data["online"] = presence.is_online(settings, device.lastseen, device.delaybetweenrequest, now)
    return data


def _presence(device: Device, online: bool) -> presence.Presence:
    seen = device.lastseen
    if seen is not None and seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    seen_ms = None if seen is None else int(seen.timestamp() * 1000)
    return presence.Presence(device.id, online, seen_ms)


def refresh_if_stale(ctx: Context, *, owner: str | None = None) -> bool:
    """Sync the devices if the last sync is older than ``RELAY_DEVICE_REFRESH``.

    Only the process that takes the refresh lease syncs; a failed sync is logged and the
    lease is kept for :data:`RETRY_SECONDS` so the gateway is not asked again at once.
    Returns True when this call synced.
    """
    settings = ctx.settings
    synced = ctx.conn.get(ctx.keys.devices_synced)
    if synced is not None and ctx.now_ms() - int(synced) < settings.device_refresh * 1000:
        return False
    lease = Lease(
        ctx.conn,
        ctx.keys.lease(REFRESH_LEASE),
        owner or process_name("devices"),
        lease_ttl_ms(settings),
    )
    if not lease.hold():
        return False
    try:
        sync_devices(ctx)
    except RelayError as exc:
        # the lease passes to a placeholder owner nobody is, so no process (this one
        # included) asks the gateway again before it expires
        retry_ms = int(1000 * min(RETRY_SECONDS, settings.device_refresh))
        lease.release()
        Lease(ctx.conn, lease.key, SYNC_FAILED, retry_ms).hold()
        log.warning("devices.sync_failed", error=str(exc), retry_in_s=retry_ms / 1000)
        return False
    lease.release()
    return True


def await_first_sync(
    ctx: Context,
    *,
    owner: str | None = None,
    wait: float = 10.0,
    stop: threading.Event | None = None,
) -> bool:
    """At start-up: sync the devices if stale, or wait up to ``wait`` s for the process that is.

    Claiming before the first sync would pace with the defaults. Returns True once the
    devices were synced at least once (False if the gateway could not be asked in time, or
    ``stop`` was set meanwhile: a stop signal during start-up is heeded).
    """
    deadline = ctx.clock.now() + wait
    while True:
        refresh_if_stale(ctx, owner=owner)
        if ctx.conn.get(ctx.keys.devices_synced) is not None:
            return True
        if (stop is not None and stop.is_set()) or ctx.clock.now() >= deadline:
            if stop is None or not stop.is_set():
                log.warning("devices.not_synced", waited_s=wait)
            return False
        ctx.clock.sleep(0.1)


# --- listing (relay devices) --------------------------------------------------------------


@dataclass(frozen=True)
class DeviceView:
    """One device as ``relay devices`` shows it: the gateway's view and the pace in use.

    ``known`` is False for a device relay has lanes for but the gateway did not list.
    ``offline``: the device is in ``Keys.offline`` (messages addressed to it are held).
    ``paces`` holds the pace of every SIM slot the device reports or relay has used.
    """

    id: int
    title: str | None
    known: bool
    online: bool | None
    lastseen: datetime | None
    delaybetweeneachsms: float | None
    delaybetweenrequest: float | None
    paces: dict[int, Pace] = field(default_factory=dict)
    offline: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``relay devices --json``)."""
        return {
            "id": self.id,
            "title": self.title,
            "known": self.known,
            "online": self.online,
            "offline": self.offline,
            "lastseen": self.lastseen.isoformat() if self.lastseen else None,
            "delaybetweeneachsms": self.delaybetweeneachsms,
            "delaybetweenrequest": self.delaybetweenrequest,
            "sims": {
                str(sim): {
                    "interval_s": p.interval_s,
                    "burst": p.burst,
                    "unlimited": p.unlimited,
                    "overridden": p.overridden,
                }
                for sim, p in sorted(self.paces.items())
            },
        }


def list_devices(ctx: Context, sync: bool = True) -> list[DeviceView]:
    """Every device the gateway lists (synced first with ``sync``) or relay has lanes for."""
    if sync:
        sync_devices(ctx)
    stored = stored_devices(ctx)
    offline = presence.offline_devices(ctx)
    used: dict[int, set[int]] = {}
    for pair in device_sims(ctx.conn, ctx.keys):
        used.setdefault(pair.device, set()).add(pair.sim)
    return [
        replace(_view(ctx, dev, stored.get(dev), used.get(dev, set())), offline=dev in offline)
        for dev in sorted(stored.keys() | used.keys())
    ]


def _view(ctx: Context, dev: int, stored: StoredDevice | None, used: set[int]) -> DeviceView:
    each = stored.each if stored else None
    poll = stored.poll if stored else None
    sims = sorted((stored.sims if stored else set()) | used) or [0]
    return DeviceView(
        id=dev,
        title=stored.title if stored else None,
        known=stored is not None,
        online=stored.online(ctx.settings, ctx.clock.now()) if stored else None,
        lastseen=stored.lastseen if stored else None,
        delaybetweeneachsms=each,
        delaybetweenrequest=poll,
        paces={sim: compute_pace(ctx.settings, dev, sim, each, poll) for sim in sims},
    )
