"""Lanes: where queued messages wait, two per device/SIM, urgent and bulk.

:class:`LaneId` names one lane (kind, device, SIM); :class:`DeviceSim` names the device/SIM
pair both its lanes belong to (one pacing state, one entry of ``Keys.lanes``). Their text
forms, ``"u:260:0"`` and ``"260:0"``, are members of Redis sets (``timers``, ``sched-due``,
``lanes``) and the tails of key names; they are made and parsed here and nowhere else.

:func:`put_back` is the one way messages return to the head of their lanes
(``lua/requeue.lua``): after a refusal, a failed request, a verification that found nothing,
or a retry of a dead letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import redis

from relay import scripts
from relay.connection import text

if TYPE_CHECKING:
    from relay.keys import Keys

LaneKind = Literal["u", "b"]
URGENT: LaneKind = "u"
BULK: LaneKind = "b"
KINDS: tuple[LaneKind, LaneKind] = (URGENT, BULK)


def kind_of(urgent: bool) -> LaneKind:
    return URGENT if urgent else BULK


@dataclass(frozen=True, order=True)
class DeviceSim:
    """A device and one of its SIM slots: the pair both lanes of a phone line belong to."""

    device: int
    sim: int

    @property
    def member(self) -> str:
        """``"dev:sim"``: the member of ``Keys.lanes`` and the tail of ``Keys.pace``."""
        return f"{self.device}:{self.sim}"

    @property
    def urgent(self) -> LaneId:
        return LaneId(URGENT, self.device, self.sim)

    @property
    def bulk(self) -> LaneId:
        return LaneId(BULK, self.device, self.sim)

    def lane(self, kind: LaneKind) -> LaneId:
        return LaneId(kind, self.device, self.sim)

    @classmethod
    def parse(cls, member: bytes | str) -> DeviceSim | None:
        """The pair of a ``"dev:sim"`` member; None when it is not one."""
        dev, sep, sim = text(member).partition(":")
        try:
            return cls(int(dev), int(sim)) if sep else None
        except ValueError:
            return None


@dataclass(frozen=True, order=True)
class LaneId:
    """One lane: ``kind`` (``u`` urgent, ``b`` bulk) of ``device``/``sim``."""

    kind: LaneKind
    device: int
    sim: int

    @property
    def member(self) -> str:
        """``"kind:dev:sim"``: the member of ``timers`` and ``sched-due``, the tail of the
        lane's, schedule's and ticket's key names."""
        return f"{self.kind}:{self.device}:{self.sim}"

    @property
    def pair(self) -> DeviceSim:
        return DeviceSim(self.device, self.sim)

    @property
    def urgent(self) -> bool:
        return self.kind == URGENT

    @property
    def label(self) -> str:
        """For people: ``urgent 260/0``."""
        return f"{'urgent' if self.urgent else 'bulk'} {self.device}/{self.sim}"

    @classmethod
    def parse(cls, member: bytes | str) -> LaneId | None:
        """The lane of a ``"kind:dev:sim"`` member; None when it is not one."""
        parts = text(member).split(":")
        if len(parts) != 3 or parts[0] not in KINDS:
            return None
        try:
            return cls(kind_of(parts[0] == URGENT), int(parts[1]), int(parts[2]))
        except ValueError:
            return None


POOL_KINDS: dict[LaneKind, str] = {URGENT: "pu", BULK: "pb"}


@dataclass(frozen=True, order=True)
class PoolLane:
    """One lane of a pool (``RELAY_POOLS``): ``kind`` (urgent or bulk) of pool ``name``.

    Its member, ``"pu:otp"`` / ``"pb:otp"``, is the tail of its key name; pooled messages
    wait there until a member's ticket takes them (``lua/claim.lua``)."""

    kind: LaneKind
    name: str

    @property
    def member(self) -> str:
        return f"{POOL_KINDS[self.kind]}:{self.name}"

    @property
    def urgent(self) -> bool:
        return self.kind == URGENT


def pool_lanes(name: str) -> tuple[PoolLane, PoolLane]:
    """The urgent and the bulk lane of pool ``name``."""
    return PoolLane(URGENT, name), PoolLane(BULK, name)


def device_sims(conn: redis.Redis, keys: Keys) -> list[DeviceSim]:
    """Every device/SIM that ever held a message (``Keys.lanes``), sorted."""
    members: Iterable[bytes] = conn.smembers(keys.lanes)  # type: ignore[assignment]
    return sorted(p for p in map(DeviceSim.parse, members) if p is not None)


@dataclass(frozen=True)
class PutBack:
    """What :func:`put_back` did: ids pushed back per lane kind, and the tickets it set
    (lane → the job id it was set to), whose RQ jobs the caller now enqueues."""

    urgent: int
    bulk: int
    armed: dict[LaneId, str]


def put_back(
    pipe: redis.client.Pipeline,
    keys: Keys,
    pair: DeviceSim,
    ids: Sequence[str],
    *,
    batch: str | None,
    jobs: Mapping[LaneKind, str],
    refund_ms: int = 0,
) -> scripts.Pending[PutBack]:
    """Queue ``lua/requeue.lua`` on ``pipe``: the ``queued`` ones of ``ids`` back to the head
    of ``pair``'s lanes in this order (only those whose ``batch`` field is ``batch``, when
    given), each lane's ticket set to ``jobs[kind]`` if free, ``refund_ms`` of pacing given
    back per id. The caller moves the ids to ``queued`` earlier in the same MULTI."""
    lane_keys = [keys.lane(pair.urgent), keys.lane(pair.bulk)]
    ticket_keys = [keys.ticket(pair.urgent), keys.ticket(pair.bulk)]
    script_keys = [*lane_keys, *ticket_keys, keys.pace(pair), *(keys.msg(i) for i in ids)]
    args: list[scripts.Arg] = [batch or "", jobs[URGENT], jobs[BULK], refund_ms, *ids]

    def decode(raw: list[int]) -> PutBack:
        n_urgent, n_bulk, set_u, set_b = (int(v) for v in raw)
        armed = {
            lane: jobs[lane.kind] for lane, s in ((pair.urgent, set_u), (pair.bulk, set_b)) if s
        }
        return PutBack(n_urgent, n_bulk, armed)

    return scripts.queue(pipe, "requeue", script_keys, args, decode)
