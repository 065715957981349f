"""The reconciler against the simulator over HTTP, on both Redis servers.

Messages are put in the ``submitted`` state the way dispatch does it: a record, the
transition to ``submitting``, one ``addalotofsms`` to the simulator, the transition to
``submitted`` joining ``pending:<dev>``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from redis.typing import EncodableT, FieldT

from relay.clock import FakeClock
from relay.connection import text
from relay.context import Context
from relay.gateway import OutgoingSms
from relay.processes import Lease
from relay.reconcile.reconciler import Reconciler
from relay.simulator import OutcomeRule, SimDevice, Simulator, normalise_phone
from relay.states import State
from tests.fixtures.context import MakeCtx
from tests.fixtures.replies import entries, members
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.waiting import eventually

PHONE = "+4915752982212"

_ids = itertools.count()


# --- helpers shared with test_recovery -------------------------------------------------


def put_records(
    ctx: Context, items: Sequence[Mapping[str, Any]], *, state: State = State.QUEUED
) -> list[str]:
    """Message records as the producer writes them (state ``queued``), with fresh ids."""
    ids = []
    now = ctx.now_ms()
    with ctx.conn.pipeline(transaction=True) as pipe:
        for item in items:
            msg_id = f"{next(_ids):08d}{uuid.uuid4().hex[:4]}"  # time-ordered, like relay's
            fields: dict[FieldT, EncodableT] = {
                "sendto": item["sendto"],
                "body": item["body"],
                "device_id": item.get("device_id", 260),
                "sim": item.get("sim", 0),
                "urgent": int(bool(item.get("urgent"))),
                "state": state.value,
                "final": 0,
                f"t_{state.value}": now,
                "attempts": 0,
            }
            if item.get("customerid") is not None:
                fields["customerid"] = item["customerid"]
            pipe.hset(ctx.keys.msg(msg_id), mapping=fields)
            pipe.hincrby(ctx.keys.counts, state.value, 1)
            ids.append(msg_id)
        pipe.execute()
    return ids


def outgoing(ctx: Context, ids: Sequence[str]) -> list[OutgoingSms]:
    return [
        OutgoingSms(m.sendto, m.body, m.device_id, m.sim, m.urgent, m.customerid)
        for m in ctx.store.get_many(ids)
        if m is not None
    ]


def claim(ctx: Context, ids: Sequence[str], *, dev: int = 260, sim: int = 0) -> str:
    """What claim.lua + dispatch's first transition leave: a batch in flight, ``submitting``."""
    bid = uuid.uuid4().hex[:10]
    now = ctx.now_ms()
    ctx.conn.hset(
        ctx.keys.batch(bid),
        mapping={
            "dev": dev,
            "sim": sim,
            "kind": "b",
            "ids": ",".join(ids),
            "claimed": now,
            "worker": "test",
        },
    )
    ctx.conn.zadd(ctx.keys.inflight, {bid: now})
    ctx.store.transition(ids, State.SUBMITTING, [State.QUEUED], fields={"batch": bid})
    return bid


def submit(ctx: Context, items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Messages of one device/SIM stored at the simulator and ``submitted`` in relay."""
    ids = put_records(ctx, items)
    dev = int(items[0].get("device_id", 260))
    bid = claim(ctx, ids, dev=dev, sim=int(items[0].get("sim", 0)))
    ctx.gateway.add_many(outgoing(ctx, ids))
    k = ctx.keys
    ctx.store.transition(ids, State.SUBMITTED, [State.SUBMITTING], add_index=k.pending(dev))
    ctx.conn.sadd(k.pending_devices, dev)
    urgent = [i for i, item in zip(ids, items, strict=True) if item.get("urgent")]
    if urgent:
        ctx.conn.zadd(k.urgent_waiting, dict.fromkeys(urgent, ctx.now_ms()))
    ctx.conn.zrem(k.inflight, bid)
    ctx.conn.delete(k.batch(bid))
    return ids


def events_by_message(ctx: Context) -> dict[str, list[tuple[str, str]]]:
    """Message id → [(state, final), ...] in stream order."""
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for _, f in entries(ctx.conn, ctx.keys.events):
        seen[f["id"]].append((f["state"], f["final"]))
    return seen


def sms_ids_by_body(sim: Simulator) -> dict[str, list[int]]:
    found: dict[str, list[int]] = defaultdict(list)
    for entry in sim.ledger():
        found[entry.body].append(entry.sms_id)
    return found


def state_of(ctx: Context, msg_id: str) -> tuple[State, bool, int | None]:
    m = ctx.store.get(msg_id)
    assert m is not None
    return m.state, m.final, m.sms_id


# --- matching and the final states ------------------------------------------------------


def test_matches_identical_messages_and_differently_written_numbers(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock)
    first = submit(
        ctx,
        [
            {"sendto": "+49 157 52982212", "body": "otp 1"},
            {"sendto": "+4915752982212", "body": "otp 1"},
        ],
    )
    clock.advance(1)
    second = submit(
        ctx,
        [
            {"sendto": "4915752982212", "body": "otp 1", "customerid": 0},
            {"sendto": PHONE, "body": "other", "customerid": 42},
        ],
    )
    clock.advance(2)

    report = Reconciler(ctx).run_once()

    assert report.matched == 4 and report.errors == 0
    ledger = sms_ids_by_body(sim)
    got = [state_of(ctx, i)[2] for i in first + second[:1]]
    assert got == ledger["otp 1"], "identical messages pair oldest to oldest"
    assert state_of(ctx, second[1])[2] == ledger["other"][0]
    assert all(state_of(ctx, i)[0] == State.DELIVERED for i in first + second)
    assert ctx.conn.zcard(ctx.keys.pending(260)) == 0
    assert not ctx.conn.sismember(ctx.keys.pending_devices, "260")
    index = {int(k): text(v) for k, v in ctx.conn.hgetall(ctx.keys.sms_index(260)).items()}
    assert sorted(index.values()) == sorted(first + second)


def test_capped_answers_are_narrowed_until_nothing_is_missed(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock, max_records=3)
    ctx = make_ctx(sim, clock)
    ids = []
    for i in range(20):
        ids += submit(ctx, [{"sendto": PHONE, "body": f"bulk {i}"}, {"sendto": PHONE, "body": "x"}])
        clock.advance(1.0)
    clock.advance(1.0)

    report = Reconciler(ctx).run_once()

    assert report.matched == 40 and report.errors == 0
    assert report.requests > 40 / 3, "capped answers must have been narrowed"
    ledger = {e.sms_id: e for e in sim.ledger()}
    for msg_id in ids:
        state, _, sms_id = state_of(ctx, msg_id)
        message = ctx.store.get(msg_id)
        assert state == State.DELIVERED and sms_id is not None and message is not None
        assert ledger[sms_id].body == message.body
    assert len({state_of(ctx, i)[2] for i in ids}) == 40


def test_a_second_holding_more_than_an_answer_is_looked_up_by_phone(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock, max_records=3)
    ctx = make_ctx(sim, clock)
    ids = submit(ctx, [{"sendto": f"+49157000001{i:02d}", "body": "campaign"} for i in range(8)])
    clock.advance(1)

    report = Reconciler(ctx).run_once()

    assert report.matched == 8
    sms_by_phone = {normalise_phone(e.sendto): e.sms_id for e in sim.ledger()}
    for msg_id in ids:
        message = ctx.store.get(msg_id)
        assert message is not None and message.state == State.DELIVERED
        assert message.sms_id == sms_by_phone[normalise_phone(message.sendto)]


def test_a_device_leased_by_another_reconciler_is_left_alone(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    sim = make_simulator(clock=clock)
    ctx = make_ctx(sim, clock)
    ids = submit(ctx, [{"sendto": PHONE, "body": "leased"}])
    clock.advance(1)
    other = Lease(ctx.conn, ctx.keys.lease("reconcile:260"), "someone-else", 300)
    assert other.hold()

    report = Reconciler(ctx).run_once()
    assert (report.busy, report.devices) == (1, 0)
    assert state_of(ctx, ids[0])[0] == State.SUBMITTED

    eventually(lambda: not ctx.conn.exists(ctx.keys.lease("reconcile:260")), timeout=5)
    assert Reconciler(ctx).run_once().devices == 1
    assert state_of(ctx, ids[0])[0] == State.DELIVERED
    assert not ctx.conn.exists(ctx.keys.lease("reconcile:260")), "given back after the pass"


def test_settled_or_vanished_ids_leave_the_urgent_set(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    sim = make_simulator()
    ctx = make_ctx(sim)
    waiting, done, gone = submit(
        ctx, [{"sendto": PHONE, "body": f"u{i}", "urgent": True} for i in range(3)]
    )
    ctx.store.transition([done], State.FAILED, [State.SUBMITTED])
    ctx.conn.delete(ctx.keys.msg(gone))

    assert Reconciler(ctx).urgent_devices() == {260}
    assert members(ctx.conn, ctx.keys.urgent_waiting) == [waiting]


FAIL_CODES = [8, 9, 10, 11, 12, 100, 101]


def test_every_final_state(make_simulator: MakeSimulator, make_ctx: MakeCtx) -> None:
    clock = FakeClock()
    rule = {f"+491570000{code:03d}": code for code in FAIL_CODES}
    rule["+4915700000006"] = 6  # sent, never a delivery report
    devices = [
        SimDevice(id=260, delaybetweenrequest=0.05, delaybetweeneachsms=0.01),
        SimDevice(id=262, delaybetweenrequest=0.05, online=False),
    ]
    sim = make_simulator(devices, clock=clock, outcome=OutcomeRule(by_recipient=rule))
    ctx = make_ctx(sim, clock, delivery_report_wait=30, status_ttl=100)
    failing = submit(ctx, [{"sendto": p, "body": f"c{c}"} for p, c in rule.items() if c != 6])
    delivered = submit(ctx, [{"sendto": PHONE, "body": "fine"}])
    sent = submit(ctx, [{"sendto": "+4915700000006", "body": "quiet"}])
    offline = submit(ctx, [{"sendto": PHONE, "body": "never", "device_id": 262}])
    clock.advance(1)
    reconciler = Reconciler(ctx)

    reconciler.run_once()
    for msg_id, code in zip(failing, FAIL_CODES, strict=True):
        message = ctx.store.get(msg_id)
        assert message is not None and message.state == State.FAILED and message.final
        assert message.status == code and message.error
    assert state_of(ctx, delivered[0])[:2] == (State.DELIVERED, True)
    assert state_of(ctx, sent[0])[:2] == (State.SENT, False)
    assert state_of(ctx, offline[0])[0] == State.SUBMITTED

    clock.advance(31)
    reconciler.run_once()
    assert state_of(ctx, sent[0])[:2] == (State.SENT, True)
    assert state_of(ctx, offline[0])[0] == State.SUBMITTED

    clock.advance(70)
    reconciler.run_once()
    offline_msg = ctx.store.get(offline[0])
    assert offline_msg is not None and offline_msg.state == State.EXPIRED
    assert offline_msg.sms_id is not None, "matched even though never sent"

    reconciler.run_once()  # nothing left: no second write of anything
    events = events_by_message(ctx)
    for msg_id in failing:
        assert events[msg_id][-1] == ("failed", "1")
        assert Counter(events[msg_id])[("failed", "1")] == 1
    assert events[sent[0]][-2:] == [("sent", "0"), ("sent", "1")]
    assert events[offline[0]][-1] == ("expired", "1")
    assert ctx.conn.zcard(ctx.keys.pending(260)) == ctx.conn.zcard(ctx.keys.pending(262)) == 0
    assert ctx.conn.scard(ctx.keys.pending_devices) == 0


def test_stragglers_are_checked_with_getsmsstatus(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    clock = FakeClock()
    devices = [SimDevice(id=260, delaybetweenrequest=0.05, online=False)]
    sim = make_simulator(devices, clock=clock)
    ctx = make_ctx(sim, clock)
    ids = submit(ctx, [{"sendto": PHONE, "body": f"late {i}"} for i in range(5)])
    clock.advance(1)
    reconciler = Reconciler(ctx, straggler_after=60, straggler_budget=2)
    assert reconciler.run_once().matched == 5

    sim.update_device(260, online=True)
    clock.advance(120)
    before = sim.stats()["requests"].get("getsmsstatus", 0)
    first = reconciler.run_once()
    second = reconciler.run_once()
    third = reconciler.run_once()

    assert (first.stragglers, second.stragglers, third.stragglers) == (2, 2, 1)
    assert sim.stats()["requests"]["getsmsstatus"] - before == 5
    assert all(state_of(ctx, i)[0] == State.DELIVERED for i in ids)


def test_gateway_errors_never_kill_a_pass(make_simulator: MakeSimulator, make_ctx: MakeCtx) -> None:
    sim = make_simulator()
    ctx = make_ctx(sim)
    ids = submit(ctx, [{"sendto": PHONE, "body": "survive"}])
    reconciler = Reconciler(ctx)
    for kind in ("http_500", "malformed", "malformed_html", "drop_before"):
        sim.faults.add("getallsms", kind, times=2)
        report = reconciler.run_once()
        assert report.errors == 1, kind
        assert state_of(ctx, ids[0])[0] == State.SUBMITTED
    eventually(lambda: reconciler.run_once() and state_of(ctx, ids[0])[0] == State.DELIVERED)


# --- several reconcilers, the loop, the process ------------------------------------------


def test_several_reconcilers_write_each_change_once(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    rule = OutcomeRule(by_recipient={"+4915700000008": 8}, report_delay=0.2)
    sim = make_simulator(outcome=rule)
    ctx = make_ctx(sim)
    ids = []
    for dev in (260, 261):
        for n in range(3):
            ids += submit(
                ctx,
                [
                    {
                        "sendto": PHONE if i % 3 else "+4915700000008",
                        "body": f"m{n}-{i}",
                        "device_id": dev,
                    }
                    for i in range(10)
                ],
            )
    stop = threading.Event()

    def loop() -> None:
        reconciler = Reconciler(make_ctx(sim))
        while not stop.is_set():
            reconciler.run_once()

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        eventually(lambda: all(state_of(ctx, i)[1] for i in ids), timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join()
    events = events_by_message(ctx)
    for msg_id in ids:
        counts = Counter(state for state, _ in events[msg_id])
        assert all(n == 1 for n in counts.values()), (msg_id, events[msg_id])
        assert events[msg_id][-1][0] in {"delivered", "failed"}


def test_urgent_messages_are_followed_between_full_passes(
    make_simulator: MakeSimulator, make_ctx: MakeCtx
) -> None:
    sim = make_simulator()
    ctx = make_ctx(sim, reconcile_interval=3600, reconcile_urgent_interval=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=Reconciler(ctx).run, args=(stop,))
    runner.start()
    try:
        time.sleep(0.2)  # the first (full) pass has run; the next is an hour away
        bulk = submit(ctx, [{"sendto": PHONE, "body": "bulk", "device_id": 261}])
        urgent = submit(ctx, [{"sendto": PHONE, "body": "otp", "urgent": True}])
        eventually(lambda: state_of(ctx, urgent[0])[0] == State.DELIVERED)
        eventually(lambda: ctx.conn.zcard(ctx.keys.urgent_waiting) == 0)
    finally:
        stop.set()
        runner.join()
    assert state_of(ctx, bulk[0])[0] == State.SUBMITTED, "only urgent devices between passes"


def test_reconciler_processes_share_devices_and_stop_on_sigterm(
    make_simulator: MakeSimulator, make_ctx: MakeCtx, redis_url: str, key_prefix: str
) -> None:
    sim = make_simulator()
    ctx = make_ctx(sim)
    ids = []
    for dev in (260, 261):
        ids += submit(ctx, [{"sendto": PHONE, "body": f"p{i}", "device_id": dev} for i in range(5)])
    env = {
        **os.environ,
        "RELAY_REDIS_URL": redis_url,
        "RELAY_KEY_PREFIX": key_prefix,
        "RELAY_GATEWAY_URL": sim.url,
        "RELAY_GATEWAY_TOKEN": sim.token,
        "RELAY_RECONCILE_INTERVAL": "0.1",
        "RELAY_LOG_JSON": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "relay", "reconciler"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        eventually(lambda: all(state_of(ctx, i)[0] == State.DELIVERED for i in ids))
        eventually(lambda: ctx.conn.hlen(ctx.keys.processes) == 2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
    assert codes == [0, 0]
    for p in procs:
        assert p.stderr is not None and b"Traceback" not in p.stderr.read()
    events = events_by_message(ctx)
    assert all(Counter(events[i])[("delivered", "1")] == 1 for i in ids)
    assert ctx.conn.hlen(ctx.keys.processes) == 0, "stopped reconcilers leave no heartbeat"
