"""The pool part of ``relay demo``: the demo's phones form a pool, one phone goes offline
midway, and the rest of the pooled campaign goes out on the others.

:func:`pool_campaign` is the pooled load; :class:`Outage` switches the phone offline once a
tenth of it is stored at the gateway (the simulator stops its polling; relay's device sync
finds it offline once its ``lastseen`` is old, :mod:`relay.presence`; the outage counts
from then, once the batches it had claimed are through), and back
online when the pool has drained or ``outage_for`` seconds passed (so what was addressed
straight to it, held meanwhile, goes out too). :func:`pool_summary` counts, per phone, the
pooled messages it carried, and those stored at the gateway while the phone was off.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.clock import Clock
from relay.log import get_logger
from relay.simulator import LedgerEntry, SimDevice, Simulator

if TYPE_CHECKING:
    from relay.context import Context

log = get_logger(__name__)

POOL = "demo"
POOL_BODY = "Pool: your parcel"
"""Every pooled demo message's body starts so (the ledger tells them apart by it)."""
WATCH_EVERY_S = 0.2


def demo_pools(phones: Iterable[SimDevice]) -> dict[str, list[str]]:
    """``RELAY_POOLS`` of the demo: every phone's SIM 0 in pool ``demo``."""
    return {POOL: [f"{p.id}:0" for p in phones]}


def pool_campaign(n: int) -> list[dict[str, Any]]:
    """``n`` messages to the pool (recipients of their own, after the bulk campaign's)."""
    return [
        {"sendto": f"+49158{i:07d}", "body": f"{POOL_BODY} {i + 1} is on its way", "pool": POOL}
        for i in range(n)
    ]


def _pooled(ledger: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    return [e for e in ledger if e.body.startswith(POOL_BODY)]


class Outage(threading.Thread):
    """Switches ``phone`` offline midway through the pooled campaign, and back later."""

    def __init__(
        self, ctx: Context, sim: Simulator, phone: int, pooled: int, outage_for: float, clock: Clock
    ) -> None:
        super().__init__(name="demo-outage", daemon=True)
        self.ctx, self.sim, self.phone, self.pooled = ctx, sim, phone, pooled
        self.outage_for, self.clock = outage_for, clock
        self.off_at: float | None = None
        self.on_at: float | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._wait(lambda: len(_pooled(self.sim.ledger())) >= self.pooled // 10)
            self._switch(online=False)
            until = self.clock.now() + self.outage_for
            self._wait(lambda: self._drained() or self.clock.now() >= until)
            self._switch(online=True)
        except BaseException as exc:  # reported by the demo, never lost in the thread
            self.error = exc

    def _wait(self, done: Any) -> None:
        while not done() and not self.stop.is_set():
            self.clock.sleep(WATCH_EVERY_S)

    def _detected(self) -> bool:
        return bool(self.ctx.conn.sismember(self.ctx.keys.offline, str(self.phone)))

    def _settled(self) -> bool:
        """No batch of the phone is in flight."""
        k, conn = self.ctx.keys, self.ctx.conn
        batches = [k.batch(b.decode()) for b in conn.zrange(k.inflight, 0, -1)]  # type: ignore[union-attr]
        with conn.pipeline(transaction=False) as pipe:
            for key in batches:
                pipe.hget(key, "dev")
            devs = pipe.execute()
        return str(self.phone).encode() not in devs

    def _drained(self) -> bool:
        return len(_pooled(self.sim.ledger())) >= self.pooled

    def _switch(self, *, online: bool) -> None:
        self.sim.set_online(self.phone, online)
        if online:
            self.on_at = self.clock.now()
        else:
            # relay's device sync notices the silence; from then on the phone takes nothing
            # new, what it claimed just before is let through, and the outage counts from
            # when that is done
            self._wait(self._detected)
            self._wait(self._settled)
            self.off_at = self.clock.now()
        log.info("demo.phone_switched", phone=self.phone, online=online)


@dataclass
class PoolSummary:
    """How the pool carried the pooled campaign: stored per phone, in all and while
    ``offline_phone`` was off (seconds: ``offline_s``)."""

    pool: str
    messages: int
    per_phone: dict[int, int] = field(default_factory=dict)
    during_outage: dict[int, int] = field(default_factory=dict)
    offline_phone: int | None = None
    offline_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "messages": self.messages,
            "per_phone": {str(k): v for k, v in sorted(self.per_phone.items())},
            "during_outage": {str(k): v for k, v in sorted(self.during_outage.items())},
            "offline_phone": self.offline_phone,
            "offline_s": self.offline_s,
        }


def pool_summary(ledger: Iterable[LedgerEntry], n: int, outage: Outage | None) -> PoolSummary:
    """Per phone: the pooled messages it stored at the gateway, in all and during the outage."""
    entries = _pooled(ledger)
    summary = PoolSummary(POOL, n)
    for entry in entries:
        summary.per_phone[entry.device_id] = summary.per_phone.get(entry.device_id, 0) + 1
    if outage is None or outage.off_at is None:
        return summary
    end = outage.on_at if outage.on_at is not None else float("inf")
    summary.offline_phone = outage.phone
    summary.offline_s = round((outage.on_at or outage.clock.now()) - outage.off_at, 1)
    summary.during_outage = {dev: 0 for dev in {*summary.per_phone, outage.phone}}
    for entry in entries:
        if outage.off_at <= entry.stored_at < end:
            summary.during_outage[entry.device_id] += 1
    return summary
