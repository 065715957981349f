"""Devices and pacing: the pace rules, the getalldevices sync from the simulator over HTTP,
the refresh lease, the in-process cache, and the ``relay devices`` listing."""

from __future__ import annotations

import json
import threading
import time

import pytest
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.context import Context
from relay.devices import (
    REFRESH_LEASE,
    SYNC_FAILED,
    Pace,
    await_first_sync,
    compute_pace,
    list_devices,
    pace_for,
    refresh_if_stale,
    sync_devices,
)
from relay.settings import load_settings
from relay.simulator import SimDevice, Simulator
from tests.fixtures.context import MakeCtx
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.workers import MakeSettings

# --- the rules (no Redis) -------------------------------------------------------------------

DEFAULTS = load_settings(default_send_interval=5.0, default_poll_interval=10.0)


@pytest.mark.parametrize(
    ("each", "poll", "expected"),
    [
        (2.0, 10.0, Pace(2.0, 5, 10.0)),  # burst covers one poll
        (3.0, 10.0, Pace(3.0, 4, 10.0)),  # rounded up
        (20.0, 10.0, Pace(20.0, 1, 10.0)),  # at least one
        (None, 10.0, Pace(5.0, 2, 10.0)),  # null delay: the default interval
        (2.0, None, Pace(2.0, 5, 10.0)),  # unknown poll: the default poll
        (0.0, 10.0, Pace(0.0, 1, 10.0)),  # 0: unlimited
    ],
)
def test_pace_from_the_gateway_delays(
    each: float | None, poll: float | None, expected: Pace
) -> None:
    assert compute_pace(DEFAULTS, 260, 0, each, poll) == expected


def test_overrides_win_per_sim_then_per_device() -> None:
    settings = load_settings(device_overrides={"260:1": 4.0, "260": 2.5})
    assert compute_pace(settings, 260, 1, 1.0, 10.0) == Pace(4.0, 3, 10.0, overridden=True)
    assert compute_pace(settings, 260, 0, 1.0, 10.0) == Pace(2.5, 4, 10.0, overridden=True)
    assert compute_pace(settings, 261, 0, 1.0, 10.0) == Pace(1.0, 10, 10.0)


def test_unlimited_and_interval_ms() -> None:
    assert Pace(0.0, 1).unlimited and Pace(0.0, 1).interval_ms == 0
    assert not Pace(0.0004, 1).unlimited and Pace(0.0004, 1).interval_ms == 1
    assert Pace(0.25, 1).interval_ms == 250


# --- sync from the simulator ---------------------------------------------------------------


@pytest.fixture
def ctx(make_ctx: MakeCtx, simulator: Simulator) -> Context:
    return make_ctx(simulator, device_refresh=60.0)


def test_sync_stores_every_device_and_the_time(ctx: Context) -> None:
    devices = sync_devices(ctx)
    assert sorted(d.id for d in devices) == [260, 261]
    stored = {int(k): json.loads(v) for k, v in ctx.conn.hgetall(ctx.keys.devices).items()}
    assert stored[260]["delaybetweeneachsms"] == 0.01
    assert stored[260]["delaybetweenrequest"] == 0.05
    assert stored[261]["delaybetweeneachsms"] is None
    assert stored[260]["online"] is True
    assert abs(int(ctx.conn.get(ctx.keys.devices_synced) or 0) - ctx.now_ms()) < 5000


def test_pace_for_uses_the_synced_delays(ctx: Context) -> None:
    assert pace_for(ctx, 260, 0) == Pace(5.0, 2, 10.0)  # not synced yet: the defaults
    sync_devices(ctx)
    assert pace_for(ctx, 260, 0) == Pace(0.01, 5, 0.05)
    # 261's delaybetweeneachsms is null: the default interval, its own poll
    assert pace_for(ctx, 261, 1) == Pace(5.0, 1, 0.1)


def test_delays_are_cached_for_about_a_second(relay_settings: MakeSettings) -> None:
    clock = FakeClock(time.time())
    ctx = Context.from_settings(relay_settings(), clock=clock)
    device = {"id": 7, "delaybetweeneachsms": 1.0, "delaybetweenrequest": 4.0}
    ctx.conn.hset(ctx.keys.devices, "7", json.dumps(device))
    assert pace_for(ctx, 7, 0).interval_s == 1.0
    ctx.conn.hset(ctx.keys.devices, "7", json.dumps({**device, "delaybetweeneachsms": 2.0}))
    assert pace_for(ctx, 7, 0).interval_s == 1.0
    clock.advance(1.5)
    assert pace_for(ctx, 7, 0) == Pace(2.0, 2, 4.0)
    ctx.close()


def test_refresh_only_when_stale(relay_settings: MakeSettings, simulator: Simulator) -> None:
    clock = FakeClock(time.time())
    ctx = Context.from_settings(relay_settings(simulator, device_refresh=60.0), clock=clock)
    assert refresh_if_stale(ctx) is True
    assert refresh_if_stale(ctx) is False
    clock.advance(30)
    assert refresh_if_stale(ctx) is False
    clock.advance(31)
    assert refresh_if_stale(ctx) is True
    assert simulator.stats()["answered"]["getalldevices"] == 2
    assert ctx.conn.get(ctx.keys.lease(REFRESH_LEASE)) is None
    ctx.close()


def test_one_process_refreshes_at_a_time(
    relay_settings: MakeSettings, simulator: Simulator
) -> None:
    simulator.faults.add("getalldevices", "slow", delay=0.3)
    settings = relay_settings(simulator)
    contexts = [Context.from_settings(settings) for _ in range(4)]
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(refresh_if_stale(c))) for c in contexts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert simulator.stats()["requests"]["getalldevices"] == 1
    for c in contexts:
        c.close()


def test_a_failed_sync_is_logged_and_retried_later(
    relay_settings: MakeSettings, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator()
    sim.faults.add("getalldevices", "http_500", times=5)
    ctx = Context.from_settings(relay_settings(sim, gateway_retries=0))
    with capture_logs() as logs:
        assert refresh_if_stale(ctx, owner="me") is False
    assert [e for e in logs if e["event"] == "devices.sync_failed"]
    assert ctx.conn.get(ctx.keys.devices_synced) is None
    lease = ctx.keys.lease(REFRESH_LEASE)
    assert ctx.conn.get(lease) == SYNC_FAILED.encode()  # held for nobody: nobody asks now
    assert 0 < int(ctx.conn.pttl(lease)) <= 30_000  # the next try waits for the lease
    assert refresh_if_stale(ctx, owner="me") is False
    assert sim.stats()["requests"]["getalldevices"] == 1
    ctx.close()


def test_start_up_waits_for_another_process_sync(
    relay_settings: MakeSettings, simulator: Simulator
) -> None:
    settings = relay_settings(simulator)
    syncer, waiter = Context.from_settings(settings), Context.from_settings(settings)
    waiter.conn.set(waiter.keys.lease(REFRESH_LEASE), "other", px=5000)  # someone is syncing
    timer = threading.Timer(0.3, lambda: sync_devices(syncer))
    timer.start()
    assert await_first_sync(waiter, wait=5.0) is True
    assert pace_for(waiter, 260, 0) == Pace(0.01, 5, 0.05)
    timer.join()
    syncer.close()
    waiter.close()


def test_list_devices_shows_delays_pace_and_overrides(
    relay_settings: MakeSettings, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(
        [
            SimDevice(id=260, title="front desk", delaybetweenrequest=10, delaybetweeneachsms=2),
            SimDevice(id=261, title="offline", delaybetweenrequest=5, online=False, created=0.0),
        ]
    )
    ctx = Context.from_settings(relay_settings(sim, device_overrides={"260:1": 4}))
    ctx.conn.sadd(ctx.keys.lanes, "999:0")  # relay has messages for a device the gateway lost
    views = {v.id: v for v in list_devices(ctx, sync=True)}
    assert sorted(views) == [260, 261, 999]
    desk = views[260]
    assert desk.title == "front desk" and desk.known and desk.online is True
    assert desk.delaybetweeneachsms == 2 and desk.delaybetweenrequest == 10
    assert desk.paces[0] == Pace(2.0, 5, 10.0)
    assert desk.paces[1] == Pace(4.0, 3, 10.0, overridden=True)
    assert views[261].online is False
    lost = views[999]
    assert not lost.known and lost.online is None and lost.paces[0] == Pace(5.0, 2, 10.0)
    data = json.loads(json.dumps([v.to_dict() for v in views.values()]))
    assert data[0]["sims"]["1"] == {
        "interval_s": 4.0,
        "burst": 3,
        "unlimited": False,
        "overridden": True,
    }
    ctx.close()
