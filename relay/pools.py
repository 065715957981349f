"""Device pools (``RELAY_POOLS``) and per-SIM quotas (``RELAY_DEVICE_LIMITS``).

A pool is a name and its members, device/SIM pairs: a message sent to a pool waits in the
pool's own lanes (:class:`relay.lanes.PoolLane`) and goes to whichever member's ticket takes
it first, within that member's pacing, quota and online state (``lua/claim.lua``). A limit
caps what one device/SIM takes per hour and per day; urgent messages count against it and
pass it only with ``urgent_over``.

The checks here run when settings load; each error names the pool (or the limit's key) and
the member at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.lanes import DeviceSim

POOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LIMIT_FIELDS = frozenset({"per_hour", "per_day", "urgent_over"})


def member_of(text: Any, where: str) -> DeviceSim:
    """The device/SIM of a ``"dev:sim"`` text (``"260"`` means SIM 0); ValueError naming
    ``where`` otherwise."""
    raw = str(text).strip() if isinstance(text, str | int) and not isinstance(text, bool) else ""
    pair = DeviceSim.parse(raw if ":" in raw else f"{raw}:0")
    if pair is None or pair.device < 1 or not 0 <= pair.sim <= 5:
        raise ValueError(f'{where}: member {text!r} is not "device:sim" (such as "260:0")')
    return pair


def check_pools(raw: Mapping[str, Any]) -> dict[str, list[str]]:
    """``RELAY_POOLS`` checked: pool name → its members as ``"dev:sim"`` texts."""
    out: dict[str, list[str]] = {}
    for name, members in raw.items():
        if not isinstance(name, str) or POOL_NAME.fullmatch(name) is None:
            raise ValueError(f"pool name {name!r} must be 1-40 letters, digits, _ or -")
        if not isinstance(members, list) or not members:
            raise ValueError(f"pool {name!r} must list at least one member")
        pairs = [member_of(m, f"pool {name!r}").member for m in members]
        twice = sorted({m for m in pairs if pairs.count(m) > 1})
        if twice:
            raise ValueError(f"pool {name!r}: member {twice[0]!r} is listed twice")
        out[name] = pairs
    return out


@dataclass(frozen=True)
class Limit:
    """What one device/SIM may take: per hour, per day (0: no limit), and whether urgent
    messages pass a spent quota."""

    per_hour: int = 0
    per_day: int = 0
    urgent_over: bool = False


NO_LIMIT = Limit()


def check_limits(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``RELAY_DEVICE_LIMITS`` checked: ``"dev:sim"`` → its limit's fields."""
    out: dict[str, dict[str, Any]] = {}
    for key, spec in raw.items():
        pair = member_of(key, "limit")
        where = f"limit {pair.member!r}"
        if not isinstance(spec, Mapping):
            raise ValueError(f'{where} must be an object such as {{"per_hour": 100}}')
        unknown = sorted(set(spec) - LIMIT_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}")
        for name in ("per_hour", "per_day"):
            value = spec.get(name, 0)
            if type(value) is not int or value < 0:
                raise ValueError(f"{where}: {name} must be a whole number >= 0, not {value!r}")
        if not isinstance(spec.get("urgent_over", False), bool):
            raise ValueError(f"{where}: urgent_over must be true or false")
        out[pair.member] = dict(spec)
    return out


def limit_of(limits: Mapping[str, Mapping[str, Any]], pair: DeviceSim) -> Limit:
    """The limit of ``pair`` (checked keys are ``"dev:sim"``); none when unset."""
    spec = limits.get(pair.member)
    if spec is None:
        return NO_LIMIT
    return Limit(
        int(spec.get("per_hour", 0)), int(spec.get("per_day", 0)), bool(spec.get("urgent_over"))
    )


def pools_of(pools: Mapping[str, list[str]], pair: DeviceSim) -> list[str]:
    """The names of the pools ``pair`` is a member of, sorted."""
    return sorted(name for name, members in pools.items() if pair.member in members)


def members(pools: Mapping[str, list[str]], name: str) -> list[DeviceSim]:
    """The members of pool ``name``."""
    return [p for p in map(DeviceSim.parse, pools.get(name, ())) if p is not None]
