"""Offline detection: the device sync marks a phone switched off in the simulator (over
HTTP) offline once its lastseen is older than the window (never under three of its polls),
says so once on the events stream, and on its return re-arms its held lanes; the same with a
real ``relay worker`` process running the sync on its duties thread."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from rq import Queue

from relay.cli.render import lanes_table
from relay.clock import FakeClock
from relay.connection import maybe_text
from relay.context import Context
from relay.devices import list_devices, sync_devices
from relay.dispatch.tickets import TIMER
from relay.lanes import KINDS, DeviceSim
from relay.presence import offline_after, offline_devices
from relay.produce.producer import Producer
from relay.results.events import DEVICE_OFFLINE, DEVICE_ONLINE, Event
from relay.results.stats import collect
from relay.settings import load_settings
from relay.simulator import SimDevice, Simulator
from tests.fixtures.context import MakeCtx
from tests.fixtures.replies import entries
from tests.fixtures.simulator import MakeSimulator, switch_online
from tests.fixtures.waiting import eventually
from tests.fixtures.workers import MakeSettings, StartWorkers

WINDOW = 30.0


def device_events(ctx: Context) -> list[Event]:
    raw: list[Any] = entries(ctx.conn, ctx.keys.events)
    events = [Event.from_entry(i, f) for i, f in raw]
    return [e for e in events if e.event != "message"]


@pytest.fixture
def sim(make_simulator: MakeSimulator, clock: FakeClock) -> Simulator:
    """260 polls every second, 261 every 20 s (so three of its polls outlast the window)."""
    return make_simulator(
        [
            SimDevice(id=260, delaybetweenrequest=1.0, delaybetweeneachsms=0.1),
            SimDevice(id=261, delaybetweenrequest=20.0, delaybetweeneachsms=0.1),
        ],
        clock=clock,
    )


@pytest.fixture
def fctx(make_ctx: MakeCtx, sim: Simulator, clock: FakeClock) -> Context:
    clock.advance(1)
    return make_ctx(sim, clock, device_offline_after=WINDOW)


def test_the_threshold_is_the_window_or_three_polls() -> None:
    settings = load_settings(device_offline_after=WINDOW)
    assert offline_after(settings, 1.0) == WINDOW
    assert offline_after(settings, 20.0) == 60.0
    assert offline_after(settings, None) == WINDOW


def test_a_phone_switched_off_goes_offline_after_the_window_once(
    fctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    sync_devices(fctx)
    assert offline_devices(fctx) == set() and device_events(fctx) == []
    switch_online(sim, 260, False)  # last poll at T0 + 1
    clock.advance(WINDOW - 1)
    sync_devices(fctx)
    assert offline_devices(fctx) == set()  # silent for exactly the window: still online
    clock.advance(2)
    sync_devices(fctx)
    sync_devices(fctx)
    assert fctx.conn.smembers(fctx.keys.offline) == {b"260"}
    (event,) = device_events(fctx)
    assert (event.event, event.device_id, event.state) == (DEVICE_OFFLINE, 260, "offline")
    assert event.lastseen_ms == int((clock.now() - WINDOW - 1) * 1000)
    assert event.at_ms == int(clock.now() * 1000) and event.id == "" and not event.is_final
    payload = event.to_dict()
    assert payload["event"] == "device.offline" and payload["lastseen"].startswith("2027-01-15")
    views = {v.id: v for v in list_devices(fctx, sync=False)}
    assert views[260].offline and views[260].online is False and not views[261].offline
    assert views[260].to_dict()["offline"] is True

    switch_online(sim, 260, True)
    clock.advance(1)
    sync_devices(fctx)
    assert offline_devices(fctx) == set()
    back = device_events(fctx)[-1]
    assert (back.event, back.device_id, back.state) == (DEVICE_ONLINE, 260, "online")
    assert len(device_events(fctx)) == 2


def test_a_slow_poller_is_offline_only_after_three_of_its_polls(
    fctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    switch_online(sim, 261, False)
    clock.advance(WINDOW + 5)
    sync_devices(fctx)
    assert offline_devices(fctx) == set()
    clock.advance(60)
    sync_devices(fctx)
    assert offline_devices(fctx) == {261}


def test_stats_and_metrics_show_offline_with_last_seen(
    fctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    Producer(fctx).send(sendto="+4915752982212", body="hi", device_id=260)
    switch_online(sim, 260, False)
    clock.advance(WINDOW + 2)
    sync_devices(fctx)
    stats = collect(fctx)
    assert stats.devices_online == {260: False, 261: True}
    assert stats.devices_lastseen[260] == pytest.approx(clock.now() - WINDOW - 2)
    assert [lane.online for lane in stats.lanes] == [False]
    shown = stats.to_dict()["devices"]["260"]
    assert shown["online"] is False and shown["lastseen"] == stats.devices_lastseen[260]
    console = Console(width=200, file=io.StringIO())
    console.print(lanes_table(stats))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    (row,) = [cells for line in out.splitlines() if (cells := line.split("│"))[1:2] == ["    260 "]]
    assert [c.strip() for c in row[-3:-1]] == ["no", "32.0s ago"]  # online; last seen


def ticket_jobs(ctx: Context, pair: DeviceSim) -> tuple[str | None, str | None]:
    urgent, bulk = (maybe_text(ctx.conn.get(ctx.keys.ticket(pair.lane(k)))) for k in KINDS)
    return urgent, bulk


def test_a_device_back_online_gets_its_held_lanes_rearmed(
    fctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    producer = Producer(fctx)
    producer.send(sendto="+4915752982212", body="otp", device_id=260, urgent=True)
    producer.send(sendto="+4915752982212", body="news", device_id=260)
    pair = DeviceSim(260, 0)
    # held while offline: the urgent lane lost its ticket, the bulk one waits on a timer
    fctx.conn.delete(fctx.keys.ticket(pair.urgent))
    fctx.conn.set(fctx.keys.ticket(pair.bulk), TIMER)
    fctx.conn.zadd(fctx.keys.timers, {pair.bulk.member: 10**13})
    switch_online(sim, 260, False)
    clock.advance(WINDOW + 2)
    sync_devices(fctx)
    assert offline_devices(fctx) == {260}
    assert ticket_jobs(fctx, pair) == (None, TIMER)

    switch_online(sim, 260, True)
    sync_devices(fctx)
    urgent, bulk = ticket_jobs(fctx, pair)
    assert urgent and bulk and TIMER not in (urgent, bulk)
    assert fctx.conn.zscore(fctx.keys.timers, pair.bulk.member) is None
    for kind, job in zip(KINDS, (urgent, bulk), strict=True):
        queue = Queue(fctx.keys.queue_for(kind), connection=fctx.conn)
        assert job in queue.job_ids


def test_a_lane_whose_job_is_queued_is_left_to_it(
    fctx: Context, sim: Simulator, clock: FakeClock
) -> None:
    Producer(fctx).send(sendto="+4915752982212", body="otp", device_id=260, urgent=True)
    pair = DeviceSim(260, 0)
    before = ticket_jobs(fctx, pair)
    switch_online(sim, 260, False)
    clock.advance(WINDOW + 2)
    sync_devices(fctx)
    switch_online(sim, 260, True)
    sync_devices(fctx)
    assert ticket_jobs(fctx, pair) == before


def test_a_worker_process_detects_offline_and_back(
    relay_settings: MakeSettings, make_simulator: MakeSimulator, start_workers: StartWorkers
) -> None:
    sim = make_simulator()  # 260 polls every 0.05 s; the gateway tells lastseen in whole seconds
    settings = relay_settings(sim, device_refresh=0.2, device_offline_after=2.0)
    start_workers(1, settings)
    ctx = Context.from_settings(settings)
    try:
        eventually(lambda: ctx.conn.get(ctx.keys.devices_synced), what="a first device sync")
        assert offline_devices(ctx) == set()
        switch_online(sim, 260, False)
        eventually(lambda: offline_devices(ctx) == {260}, what="260 offline")
        switch_online(sim, 260, True)
        eventually(lambda: offline_devices(ctx) == set(), what="260 back online")
        kinds = [(e.event, e.device_id) for e in device_events(ctx)]
        assert kinds == [(DEVICE_OFFLINE, 260), (DEVICE_ONLINE, 260)]
        stored = json.loads(ctx.conn.hget(ctx.keys.devices, "260") or "{}")
        assert stored["online"] is True
    finally:
        ctx.close()
