"""The numbers behind ``relay stats`` and the Prometheus metrics, read in three pipelines.

Per device/SIM (every ``dev:sim`` in ``Keys.lanes``): urgent and bulk lane depth
(``LLEN``), scheduled messages (``ZCARD`` of both schedules), messages in flight (in the
``inflight`` batches of that lane) and being verified (``verify`` batches), messages
awaiting a final status (``pending:<dev>``, split by SIM when the device has several),
the age of the oldest queued message (``t_queued`` of the lanes' heads), when its ticket
may run again (``timers``) and where its pacing stands (``pace`` ``tat``). Per device:
online (``offline`` set, else the ``devices`` hash the gateway sync writes) and last seen.
Totals: messages per state (``counts``).

The reads are three pipelines, whatever the number of lanes: the indexes, then every
per-lane number, then the records the second step pointed at. They are not one
snapshot (workers move messages in between), so numbers may disagree by a message or two
while work flows; they agree once it stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from relay.connection import maybe_text, text
from relay.devices import StoredDevice
from relay.keys import Keys
from relay.lanes import DeviceSim
from relay.states import FINAL_STATES, State
from relay.store import waiting_since_ms

if TYPE_CHECKING:
    from relay.context import Context
    from relay.settings import Settings

SPLIT_LIMIT = 10_000
"""Most awaiting ids of one device read one by one to split them by SIM (above: per device)."""
_WAITING_FIELDS = ["state", "timetosend", "t_queued", "t_requeued", "t_scheduled"]
OPEN_STATES = tuple(s for s in State if s not in FINAL_STATES and s != State.SENT)
"""States that always mean work is left (``sent`` may be final: its record says)."""


@dataclass(frozen=True)
class LaneStats:
    """The numbers of one device/SIM. Times are epoch seconds; None when not known or not due."""

    device_id: int
    sim: int
    urgent: int = 0
    bulk: int = 0
    scheduled: int = 0
    inflight: int = 0
    verifying: int = 0
    awaiting: int | None = 0
    oldest_queued_s: float | None = None
    next_send_at: float | None = None
    pace_tat: float | None = None
    online: bool | None = None

    @property
    def queued(self) -> int:
        return self.urgent + self.bulk


@dataclass(frozen=True)
class Stats:
    """Everything ``collect`` read, at time ``at`` (epoch seconds)."""

    at: float
    lanes: list[LaneStats] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    awaiting_by_device: dict[int, int] = field(default_factory=dict)
    devices_online: dict[int, bool | None] = field(default_factory=dict)
    devices_lastseen: dict[int, float] = field(default_factory=dict)
    inflight_batches: int = 0
    verify_batches: int = 0

    @property
    def queued(self) -> int:
        return sum(lane.queued for lane in self.lanes)

    @property
    def scheduled(self) -> int:
        return sum(lane.scheduled for lane in self.lanes)

    @property
    def inflight(self) -> int:
        return sum(lane.inflight for lane in self.lanes)

    @property
    def awaiting(self) -> int:
        return sum(self.awaiting_by_device.values())

    @property
    def open_messages(self) -> int:
        """Messages in a state that is never final (scheduled ... submitted)."""
        return sum(self.states.get(s.value, 0) for s in OPEN_STATES)

    @property
    def idle(self) -> bool:
        """Nothing left to do: lanes, schedules, in-flight and verify batches and pending sets
        all empty, and no message short of a final state."""
        return (
            self.queued == 0
            and self.scheduled == 0
            and self.inflight_batches == 0
            and self.verify_batches == 0
            and self.awaiting == 0
            and self.open_messages == 0
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``relay stats --json`` document)."""
        return {
            "at": self.at,
            "idle": self.idle,
            "totals": {
                "queued": self.queued,
                "scheduled": self.scheduled,
                "inflight": self.inflight,
                "awaiting": self.awaiting,
                "inflight_batches": self.inflight_batches,
                "verify_batches": self.verify_batches,
            },
            "states": dict(self.states),
            "lanes": [asdict(lane) for lane in self.lanes],
            "devices": {
                str(dev): {
                    "online": online,
                    "lastseen": self.devices_lastseen.get(dev),
                    "awaiting": self.awaiting_by_device.get(dev, 0),
                }
                for dev, online in sorted(self.devices_online.items())
            },
        }


def collect(ctx: Context) -> Stats:
    """Read every number of :class:`Stats` from Redis (three pipelined round trips)."""
    reader = _Reader(ctx.conn, ctx.keys, ctx.clock.now(), ctx.settings)
    return reader.read()


@dataclass
class _Index:
    """What the first pipeline reads: the sets that say which keys to look at next."""

    lanes: list[DeviceSim]
    batches: list[str]
    verify: list[str]
    counts: dict[str, int]
    devices: dict[int, StoredDevice | None]
    timers: dict[str, float]
    pending_devices: set[int]
    offline: set[int] = field(default_factory=set)


class _Reader:
    """One ``collect`` call: three pipelines and the arithmetic between them."""

    def __init__(self, conn: redis.Redis, keys: Keys, now: float, settings: Settings) -> None:
        self.conn = conn
        self.keys = keys
        self.now = now
        self.settings = settings

    def read(self) -> Stats:
        index = self._read_index()
        per_lane, batch_fields, pending = self._read_lanes(index)
        heads, pending_sims = self._read_records(index, per_lane, pending)
        return self._assemble(index, per_lane, batch_fields, pending, heads, pending_sims)

    # --- round trip 1 -------------------------------------------------------------------

    def _read_index(self) -> _Index:
        k = self.keys
        pipe = self.conn.pipeline(transaction=False)
        pipe.smembers(k.lanes)
        pipe.zrange(k.inflight, 0, -1)
        pipe.zrange(k.verify, 0, -1)
        pipe.hgetall(k.counts)
        pipe.hgetall(k.devices)
        pipe.zrange(k.timers, 0, -1, withscores=True)
        pipe.smembers(k.pending_devices)
        pipe.smembers(k.offline)
        lanes, inflight, verify, counts, devices, timers, pending, offline = pipe.execute()
        parsed = sorted(p for p in map(DeviceSim.parse, lanes) if p is not None)
        return _Index(
            lanes=parsed,
            batches=[text(b) for b in inflight],
            verify=[text(b) for b in verify],
            counts={text(s): int(n) for s, n in counts.items()},
            devices={int(text(d)): StoredDevice.parse(int(text(d)), v) for d, v in devices.items()},
            timers={text(m): float(score) for m, score in timers},
            pending_devices={int(text(d)) for d in pending},
            offline={int(text(d)) for d in offline},
        )

    # --- round trip 2 -------------------------------------------------------------------

    def _read_lanes(
        self, index: _Index
    ) -> tuple[list[list[Any]], list[list[Any]], dict[int, tuple[int, list[str]]]]:
        k = self.keys
        pipe = self.conn.pipeline(transaction=False)
        for pair in index.lanes:
            pipe.llen(k.lane(pair.urgent))
            pipe.llen(k.lane(pair.bulk))
            pipe.zcard(k.sched(pair.urgent))
            pipe.zcard(k.sched(pair.bulk))
            pipe.lindex(k.lane(pair.urgent), 0)
            pipe.lindex(k.lane(pair.bulk), 0)
            pipe.hget(k.pace(pair), "tat")
        for bid in [*index.batches, *index.verify]:
            pipe.hmget(k.batch(bid), ["dev", "sim", "ids"])
        devices = sorted(index.pending_devices | {p.device for p in index.lanes})
        split = _multi_sim_devices(index.lanes)
        for dev in devices:
            pipe.zcard(k.pending(dev))
            if dev in split:
                pipe.zrange(k.pending(dev), 0, SPLIT_LIMIT)
        out = pipe.execute()
        n_lanes, n_batches = len(index.lanes) * 7, len(index.batches) + len(index.verify)
        per_lane = [out[i : i + 7] for i in range(0, n_lanes, 7)]
        batch_fields = out[n_lanes : n_lanes + n_batches]
        rest = iter(out[n_lanes + n_batches :])
        pending: dict[int, tuple[int, list[str]]] = {}
        for dev in devices:
            count = int(next(rest))
            ids = [text(i) for i in next(rest)] if dev in split else []
            pending[dev] = (count, ids)
        return per_lane, batch_fields, pending

    # --- round trip 3 -------------------------------------------------------------------

    def _read_records(
        self,
        index: _Index,
        per_lane: list[list[Any]],
        pending: Mapping[int, tuple[int, list[str]]],
    ) -> tuple[dict[str, float], dict[str, int]]:
        """When each lane head last joined its lane (s: ``t_requeued``, else ``t_queued``),
        and the SIM of each awaiting id to split."""
        heads = sorted({text(h) for row in per_lane for h in (row[4], row[5]) if h is not None})
        split_ids = [i for count, ids in pending.values() if count <= SPLIT_LIMIT for i in ids]
        if not heads and not split_ids:
            return {}, {}
        pipe = self.conn.pipeline(transaction=False)
        for msg_id in heads:
            pipe.hmget(self.keys.msg(msg_id), _WAITING_FIELDS)
        for msg_id in split_ids:
            pipe.hmget(self.keys.msg(msg_id), ["state", "sim"])
        out = pipe.execute()
        queued_at = {}
        for head, row in zip(heads, out, strict=False):
            found = {f: text(v) for f, v in zip(_WAITING_FIELDS, row, strict=True) if v}
            if found.get("state"):  # the record exists
                queued_at[head] = waiting_since_ms(head, found) / 1000
        sims = {  # a record without sim is on SIM 0
            i: int(sim or 0)
            for i, (state, sim) in zip(split_ids, out[len(heads) :], strict=True)
            if state
        }
        return queued_at, sims

    # --- arithmetic ---------------------------------------------------------------------

    def _assemble(
        self,
        index: _Index,
        per_lane: list[list[Any]],
        batch_fields: list[list[Any]],
        pending: Mapping[int, tuple[int, list[str]]],
        heads: Mapping[str, float],
        pending_sims: Mapping[str, int],
    ) -> Stats:
        n_inflight = len(index.batches)
        inflight = _batch_sizes(batch_fields[:n_inflight])
        verifying = _batch_sizes(batch_fields[n_inflight:])
        online: dict[int, bool | None] = {
            dev: False if dev in index.offline else self._online(stored)
            for dev, stored in index.devices.items()
        }
        lastseen = {
            dev: stored.lastseen.timestamp()
            for dev, stored in index.devices.items()
            if stored is not None and stored.lastseen is not None
        }
        awaiting = _awaiting_per_lane(index.lanes, pending, pending_sims)
        lanes = []
        for pair, row in zip(index.lanes, per_lane, strict=True):
            u, b, su, sb, head_u, head_b, tat = row
            lane = LaneStats(
                device_id=pair.device,
                sim=pair.sim,
                urgent=int(u),
                bulk=int(b),
                scheduled=int(su) + int(sb),
                inflight=inflight.get(pair, 0),
                verifying=verifying.get(pair, 0),
                awaiting=awaiting.get(pair),
                oldest_queued_s=self._oldest(heads, head_u, head_b),
                next_send_at=self._next_send(pair, int(u) + int(b), index.timers),
                pace_tat=float(tat) / 1000 if tat is not None else None,
                online=online.setdefault(pair.device, None),
            )
            lanes.append(lane)
        return Stats(
            at=self.now,
            lanes=lanes,
            states={s.value: index.counts.get(s.value, 0) for s in State},
            awaiting_by_device={dev: count for dev, (count, _) in pending.items()},
            devices_online=online,
            devices_lastseen=lastseen,
            inflight_batches=len(index.batches),
            verify_batches=len(index.verify),
        )

    def _online(self, stored: StoredDevice | None) -> bool | None:
        return stored.online(self.settings, self.now) if stored else None

    def _oldest(self, heads: Mapping[str, float], *ids: bytes | str | None) -> float | None:
        """Seconds since the earliest ``t_queued`` among the lane heads ``ids``."""
        times = [heads[i] for i in map(maybe_text, ids) if i is not None and i in heads]
        return max(0.0, self.now - min(times)) if times else None

    def _next_send(self, pair: DeviceSim, queued: int, timers: Mapping[str, float]) -> float | None:
        """When the lane's ticket may next run: its timer, or now while work waits, else None."""
        if queued == 0:
            return None
        members = (pair.urgent.member, pair.bulk.member)
        due = [timers[m] / 1000 for m in members if m in timers]
        return max(self.now, min(due)) if due else self.now


def _multi_sim_devices(lanes: Iterable[DeviceSim]) -> set[int]:
    seen: dict[int, int] = {}
    for pair in lanes:
        seen[pair.device] = seen.get(pair.device, 0) + 1
    return {dev for dev, n in seen.items() if n > 1}


def _batch_sizes(rows: Iterable[list[Any]]) -> dict[DeviceSim, int]:
    """Messages per device/SIM in ``[dev, sim, ids]`` batch rows (missing batches skipped)."""
    sizes: dict[DeviceSim, int] = {}
    for dev, sim, ids in rows:
        if dev is None or sim is None or not ids:
            continue
        pair = DeviceSim(int(dev), int(sim))
        sizes[pair] = sizes.get(pair, 0) + len([i for i in text(ids).split(",") if i])
    return sizes


def _awaiting_per_lane(
    lanes: Iterable[DeviceSim],
    pending: Mapping[int, tuple[int, list[str]]],
    sims: Mapping[str, int],
) -> dict[DeviceSim, int | None]:
    """Awaiting messages per lane: the device's whole count when it has one SIM in use, split by
    SIM when it has several (None when too many to split)."""
    lanes = list(lanes)
    multi = _multi_sim_devices(lanes)
    result: dict[DeviceSim, int | None] = {}
    for pair in lanes:
        count, ids = pending.get(pair.device, (0, []))
        if pair.device not in multi:
            result[pair] = count
        elif count > SPLIT_LIMIT:
            result[pair] = None
        else:
            result[pair] = sum(1 for i in ids if sims.get(i) == pair.sim)
    return result
