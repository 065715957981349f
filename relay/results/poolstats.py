"""The pool and quota numbers of ``relay stats`` and the metrics.

Per pool (``RELAY_POOLS``): what waits in its urgent and bulk lanes, how many members are
online (not in ``Keys.offline``) and how many of those have quota room; a pool with waiting
messages and no member both online and with room is ``held``. Per device/SIM with a limit
(``RELAY_DEVICE_LIMITS``): used/limit of the current hour and day windows (``Keys.quota``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from relay.keys import Keys
from relay.lanes import DeviceSim, pool_lanes
from relay.pools import DAY_MS, HOUR_MS, Limit, limit_of, members, pools_of

if TYPE_CHECKING:
    from relay.settings import Settings

HELD = "held: all members offline or at quota"


@dataclass(frozen=True)
class QuotaStats:
    """Used/limit of one device/SIM's quota windows now (limit 0: none)."""

    member: str
    hour_used: int
    hour_limit: int
    day_used: int
    day_limit: int
    urgent_over: bool

    def windows(self) -> list[tuple[int, int]]:
        """(used, limit) of the hour and of the day (limit 0: none)."""
        return [(self.hour_used, self.hour_limit), (self.day_used, self.day_limit)]

    @property
    def spent(self) -> bool:
        """No room left in a window with a limit: it takes no bulk until the window rolls."""
        hour = self.hour_limit > 0 and self.hour_used >= self.hour_limit
        return hour or (self.day_limit > 0 and self.day_used >= self.day_limit)


@dataclass(frozen=True)
class PoolStats:
    """One pool: what waits in its lanes, and the members that may take it."""

    name: str
    urgent: int
    bulk: int
    members: list[str]
    online: int
    open: int
    """Members online with quota room."""

    @property
    def held(self) -> bool:
        return self.urgent + self.bulk > 0 and self.open == 0

    @property
    def status(self) -> str:
        return HELD if self.held else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "urgent": self.urgent,
            "bulk": self.bulk,
            "members": self.members,
            "online": self.online,
            "open": self.open,
            "held": self.held,
            "status": self.status,
        }


@dataclass(frozen=True)
class PoolReport:
    """What :func:`collect_pools` read."""

    pools: list[PoolStats]
    quotas: list[QuotaStats]
    offline: list[int]
    config: Mapping[str, list[str]]
    """``RELAY_POOLS``."""

    def of_lane(self, pair: DeviceSim) -> dict[str, Any]:
        """A device/SIM's pool (its first) and the quota window with the least room."""
        names = pools_of(self.config, pair)
        out: dict[str, Any] = {"pool": names[0] if names else None}
        quota = next((q for q in self.quotas if q.member == pair.member), None)
        windows = [(u, c) for u, c in quota.windows() if c > 0] if quota else []
        if windows:
            out["quota_used"], out["quota_limit"] = min(windows, key=lambda w: w[1] - w[0])
        return out


class PoolReads:
    """The reads of a :class:`PoolReport`, queued on a caller's pipeline (``relay.results.
    stats`` adds them to its first round trip) and parsed from its answers."""

    def __init__(self, keys: Keys, settings: Settings, now_ms: int) -> None:
        self.keys = keys
        self.settings = settings
        self.names = sorted(settings.pools)
        self.limited = sorted(filter(None, map(DeviceSim.parse, settings.device_limits)))
        self.hour, self.day = now_ms // HOUR_MS, now_ms // DAY_MS

    @property
    def members(self) -> list[DeviceSim]:
        """Every member of a pool (stats show their lanes even when only pooled messages
        went through them)."""
        return sorted({p for name in self.names for p in members(self.settings.pools, name)})

    def queue(self, pipe: redis.client.Pipeline) -> None:
        k = self.keys
        for name in self.names:
            for lane in pool_lanes(name):
                pipe.llen(k.pool_lane(lane))
        for pair in self.limited:
            pipe.get(k.quota(pair, "h", self.hour))
            pipe.get(k.quota(pair, "d", self.day))

    def parse(self, out: list[Any], offline: set[int]) -> PoolReport:
        """The report from the answers of :meth:`queue` (in order, first one first), with
        the devices offline now (``Keys.offline``, which the caller reads)."""
        base = 2 * len(self.names)
        quotas = [
            _quota(pair, limit_of(self.settings.device_limits, pair), out[base + 2 * i :])
            for i, pair in enumerate(self.limited)
        ]
        spent = {q.member for q in quotas if q.spent}
        pools = [
            _pool(name, self.settings.pools, out[2 * i], out[2 * i + 1], offline, spent)
            for i, name in enumerate(self.names)
        ]
        return PoolReport(pools, quotas, sorted(offline), self.settings.pools)


def pool_gauges(pools: list[PoolStats], quotas: list[QuotaStats]) -> Iterator[Metric]:
    """The Prometheus families of pools and quotas (listed in :mod:`relay.results.metrics`)."""
    depth = GaugeMetricFamily(
        "relay_pool_depth", "Messages waiting per pool and lane.", labels=["pool", "lane"]
    )
    held = GaugeMetricFamily(
        "relay_pool_held",
        "1 when a pool's messages wait with no member able to take them.",
        labels=["pool"],
    )
    for pool in pools:
        depth.add_metric([pool.name, "urgent"], pool.urgent)
        depth.add_metric([pool.name, "bulk"], pool.bulk)
        held.add_metric([pool.name], 1 if pool.held else 0)
    used = GaugeMetricFamily(
        "relay_quota_used",
        "Messages taken in the current quota window.",
        labels=["device", "sim", "window"],
    )
    limit = GaugeMetricFamily(
        "relay_quota_limit",
        "Quota of the window (RELAY_DEVICE_LIMITS).",
        labels=["device", "sim", "window"],
    )
    for quota in quotas:
        dev, sim = quota.member.split(":")
        for window, n, cap in (
            ("hour", quota.hour_used, quota.hour_limit),
            ("day", quota.day_used, quota.day_limit),
        ):
            if cap > 0:
                used.add_metric([dev, sim, window], n)
                limit.add_metric([dev, sim, window], cap)
    yield from (depth, held, used, limit)


def _quota(pair: DeviceSim, limit: Limit, used: list[Any]) -> QuotaStats:
    return QuotaStats(
        pair.member,
        int(used[0] or 0),
        limit.per_hour,
        int(used[1] or 0),
        limit.per_day,
        limit.urgent_over,
    )


def _pool(
    name: str,
    pools: Mapping[str, list[str]],
    urgent: int,
    bulk: int,
    offline: set[int],
    spent: set[str],
) -> PoolStats:
    pairs = members(pools, name)
    online = [p for p in pairs if p.device not in offline]
    return PoolStats(
        name,
        int(urgent),
        int(bulk),
        [p.member for p in pairs],
        len(online),
        sum(1 for p in online if p.member not in spent),
    )
