"""Dispatch: claim.lua's pacing and ticket rules (FakeClock), and run_ticket against the
simulator over HTTP: batching, urgent first, and every gateway outcome."""

from __future__ import annotations

from collections import Counter

import pytest
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.connection import maybe_text, text
from relay.context import Context
from relay.devices import Pace, sync_devices
from relay.dispatch.claim import Claim, claim
from relay.dispatch.ticket import RunEnd, run_ticket
from relay.dispatch.tickets import fire_timers
from relay.lanes import DeviceSim, LaneId
from relay.produce.producer import Producer
from relay.run.burst import run_until_idle
from relay.simulator import SimDevice, Simulator
from relay.simulator.faults import BUSY
from relay.states import State
from tests.fixtures.context import MakeCtx
from tests.fixtures.replies import members
from tests.fixtures.simulator import MakeSimulator

DEV, SIM = 260, 0
PAIR = DeviceSim(DEV, SIM)
SECOND = 1000


@pytest.fixture
def fake_ctx(make_ctx: MakeCtx, clock: FakeClock) -> Context:
    return make_ctx(clock=clock, batch_max=10)


def lane(kind: str, dev: int = DEV) -> LaneId:
    return DeviceSim(dev, SIM).lane("u" if kind == "u" else "b")


def push(ctx: Context, kind: str, n: int, tag: str = "") -> list[str]:
    ids = [f"{tag or kind}{i}" for i in range(n)]
    ctx.conn.rpush(ctx.keys.lane(lane(kind)), *ids)
    return ids


class Runner:
    """Claims for one lane's ticket held by ``job``, as a ticket run does."""

    def __init__(self, ctx: Context, kind: str, job: str) -> None:
        self.ctx, self.lane, self.job = ctx, lane(kind), job

    def claim(self, pace: Pace) -> Claim:
        return claim(self.ctx, self.lane, pace, job=self.job, worker="w1")


def run_for(ctx: Context, kind: str, job: str = "job-1") -> Runner:
    ctx.conn.set(ctx.keys.ticket(lane(kind)), job)
    return Runner(ctx, kind, job)


def tat(ctx: Context) -> int:
    return int(ctx.conn.hget(ctx.keys.pace(PAIR), "tat") or 0)


PACE = Pace(interval_s=1.0, burst=3, poll_s=3.0)


# --- claim.lua --------------------------------------------------------------------------


def test_bulk_takes_the_burst_then_one_per_interval(fake_ctx: Context) -> None:
    ctx, clock = fake_ctx, fake_ctx.clock
    assert isinstance(clock, FakeClock)
    push(ctx, "b", 8)
    run = run_for(ctx, "b")
    now = ctx.now_ms()
    first = run.claim(PACE)
    assert first.ids == ["b0", "b1", "b2"] and first.n_urgent == 0
    assert tat(ctx) == now + 3 * SECOND
    # blocked by pacing: the ticket waits on a timer until a full burst may go
    assert first.verdict == "timer" and first.next_free_ms == now + 3 * SECOND
    assert ctx.conn.get(ctx.keys.ticket(lane("b"))) == b"timer"
    assert ctx.conn.zscore(ctx.keys.timers, lane("b").member) == now + 3 * SECOND
    clock.advance(1.0)
    again = run.claim(PACE)  # a stale timer run: the key now says "timer", not this job
    assert again.ids == ["b3"] and again.verdict == "stale"
    assert tat(ctx) == now + 4 * SECOND


def test_claim_records_the_batch_in_flight(fake_ctx: Context) -> None:
    ctx = fake_ctx
    push(ctx, "b", 2)
    claim = run_for(ctx, "b").claim(PACE)
    batch = {text(k): text(v) for k, v in ctx.conn.hgetall(ctx.keys.batch(claim.bid)).items()}
    assert batch == {
        "dev": str(DEV),
        "sim": str(SIM),
        "kind": "b",
        "ids": "b0,b1",
        "claimed": str(ctx.now_ms()),
        "worker": "w1",
    }
    assert ctx.conn.zscore(ctx.keys.inflight, claim.bid) == ctx.now_ms()
    assert claim.verdict == "released"
    assert ctx.conn.get(ctx.keys.ticket(lane("b"))) is None


def test_urgent_goes_at_once_and_uses_up_the_allowance(fake_ctx: Context) -> None:
    ctx = fake_ctx
    push(ctx, "b", 5)
    push(ctx, "u", 4)
    now = ctx.now_ms()
    claim = run_for(ctx, "u").claim(PACE)
    # all 4 urgent although the burst is 3; no bulk fits; tat runs ahead of now
    assert claim.ids == ["u0", "u1", "u2", "u3"] and claim.n_urgent == 4
    assert tat(ctx) == now + 4 * SECOND
    assert claim.verdict == "released"
    assert ctx.conn.get(ctx.keys.ticket(lane("u"))) is None
    # the bulk ticket now yields: nothing until the urgent ones' pacing has passed
    bulk = run_for(ctx, "b", "job-b").claim(PACE)
    assert bulk.ids == [] and bulk.verdict == "timer"
    assert bulk.next_free_ms == now + 4 * SECOND


def test_urgent_ticket_fills_its_batch_with_bulk_within_the_allowance(fake_ctx: Context) -> None:
    ctx = fake_ctx
    push(ctx, "b", 5)
    push(ctx, "u", 1)
    claim = run_for(ctx, "u").claim(PACE)
    assert claim.ids == ["u0", "b0", "b1"] and claim.n_urgent == 1
    assert claim.verdict == "released"


def test_bulk_ticket_serves_urgent_first(fake_ctx: Context) -> None:
    ctx = fake_ctx
    push(ctx, "u", 2)
    push(ctx, "b", 2)
    claim = run_for(ctx, "b").claim(Pace(interval_s=0.0, burst=1))
    assert claim.ids == ["u0", "u1", "b0", "b1"] and claim.n_urgent == 2
    assert claim.verdict == "released"


def test_batch_max_caps_urgent_and_bulk(fake_ctx: Context) -> None:
    ctx = fake_ctx  # batch_max 10
    push(ctx, "u", 12)
    push(ctx, "b", 30)
    u = run_for(ctx, "u").claim(PACE)
    assert len(u.ids) == 10 and u.verdict == "more"
    assert ctx.conn.get(ctx.keys.ticket(lane("u"))) == b"job-1"
    b = run_for(ctx, "b", "job-b").claim(Pace(interval_s=0.0, burst=1))
    assert b.ids == ["u10", "u11", *(f"b{i}" for i in range(8))]
    assert b.verdict == "more" and b.next_free_ms == ctx.now_ms()
    assert tat(ctx) == ctx.now_ms() + 10 * SECOND  # unlimited bulk left tat alone


def test_a_bisect_cap_limits_the_batch(fake_ctx: Context) -> None:
    ctx = fake_ctx
    ctx.conn.hset(ctx.keys.pace(PAIR), "cap", 2)
    push(ctx, "b", 5)
    claim = run_for(ctx, "b").claim(Pace(interval_s=0.0, burst=1))
    assert claim.ids == ["b0", "b1"] and claim.cap == 2 and claim.verdict == "more"


def test_a_missing_ticket_is_adopted_and_another_jobs_ticket_left_alone(fake_ctx: Context) -> None:
    ctx = fake_ctx
    push(ctx, "u", 12)
    run = Runner(ctx, "u", "mine")
    assert run.claim(PACE).verdict == "more"
    assert ctx.conn.get(ctx.keys.ticket(lane("u"))) == b"mine"
    ctx.conn.set(ctx.keys.ticket(lane("u")), "other")
    stale = run.claim(PACE)
    assert stale.ids == ["u10", "u11"] and stale.verdict == "stale"
    assert ctx.conn.get(ctx.keys.ticket(lane("u"))) == b"other"


def test_timers_fire_once_into_fresh_jobs(fake_ctx: Context) -> None:
    ctx, clock = fake_ctx, fake_ctx.clock
    assert isinstance(clock, FakeClock)
    push(ctx, "b", 6)
    run_for(ctx, "b").claim(PACE)
    assert fire_timers(ctx) == (0, 3.0)
    clock.advance(3.0)
    assert fire_timers(ctx)[0] == 1
    assert fire_timers(ctx)[0] == 0  # popped once
    job = ctx.conn.get(ctx.keys.ticket(lane("b")))
    assert job is not None and text(job).startswith(f"{ctx.keys.job_tag}-ticket-b-260-0-")
    queued = ctx.conn.lrange(f"rq:queue:{ctx.keys.bulk_queue}", 0, -1)
    assert queued == [job]


# --- run_ticket against the simulator -----------------------------------------------------


@pytest.fixture
def sim(make_simulator: MakeSimulator) -> Simulator:
    return make_simulator(
        [
            SimDevice(id=260, delaybetweenrequest=0.05, delaybetweeneachsms=0.01),
            SimDevice(id=261, delaybetweenrequest=0.2, delaybetweeneachsms=0.05),
        ]
    )


@pytest.fixture
def live(make_ctx: MakeCtx, sim: Simulator) -> Context:
    ctx = make_ctx(sim, batch_max=200, max_attempts=2)
    sync_devices(ctx)
    return ctx


def send(ctx: Context, n: int, dev: int = DEV, urgent: bool = False, tag: str = "m") -> list[str]:
    items = [
        {"sendto": f"+49157{dev}{i:05d}", "body": f"{tag}{i}", "device_id": dev, "urgent": urgent}
        for i in range(n)
    ]
    return Producer(ctx).send_many(items)


def states(ctx: Context, ids: list[str]) -> Counter[str]:
    return Counter(m.state.value for m in ctx.store.get_many(ids) if m is not None)


def bodies(sim: Simulator) -> list[str]:
    return [entry.body for entry in sim.ledger()]


def run(ctx: Context, kind: str, dev: int = DEV) -> RunEnd:
    """Run the lane's ticket here, as the RQ job its key names would."""
    from relay import context

    context.use(ctx)
    holder = ctx.conn.get(ctx.keys.ticket(lane(kind, dev)))
    job = maybe_text(holder)
    the = lane(kind, dev)
    return run_ticket(the.kind, dev, SIM, job_id=job)


def test_a_batch_is_submitted_in_one_request(live: Context, sim: Simulator) -> None:
    ids = send(live, 3) + send(live, 1, urgent=True, tag="otp")
    assert run(live, "u") == "released"
    ledger = sim.ledger()
    assert [e.body for e in ledger] == ["otp0", "m0", "m1", "m2"]
    assert [e.urgent for e in ledger] == [1, 0, 0, 0]
    assert len({e.request.request_id for e in ledger}) == 1
    assert states(live, ids) == {"submitted": 4}
    assert live.conn.zcard(live.keys.pending(DEV)) == 4
    assert live.conn.sismember(live.keys.pending_devices, str(DEV))
    assert live.conn.zscore(live.keys.urgent_waiting, ids[-1]) is not None
    assert live.conn.zcard(live.keys.inflight) == 0


def test_many_messages_go_in_few_requests(make_ctx: MakeCtx, sim: Simulator) -> None:
    ctx = make_ctx(sim, batch_max=200, device_overrides={"260": 0})
    ids = send(ctx, 1000)
    assert run_until_idle(ctx, 30)
    ledger = sim.ledger()
    assert sorted(e.body for e in ledger) == sorted(f"m{i}" for i in range(1000))
    requests = {e.request.request_id for e in ledger}
    assert len(requests) == 5
    assert states(ctx, ids) == {"submitted": 1000}


def test_not_sent_goes_back_to_the_head_and_is_sent_later(make_ctx: MakeCtx) -> None:
    devices = [SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)]
    first = Simulator(devices, token="tok-not-sent").start()
    port = first.port
    ctx = make_ctx(first, device_overrides={"260": 0})
    first.stop()  # connection refused: provably never sent
    ids = send(ctx, 4)
    assert run(ctx, "b") == "backoff"
    assert states(ctx, ids) == {"queued": 4}
    assert ctx.conn.lrange(ctx.keys.lane(lane("b")), 0, -1) == [i.encode() for i in ids]
    assert ctx.conn.get(ctx.keys.ticket(lane("b"))) == b"timer"
    assert ctx.conn.zscore(ctx.keys.timers, lane("b").member) is not None
    assert ctx.conn.hget(ctx.keys.pace(PAIR), "fails") == b"1"
    again = Simulator(devices, token="tok-not-sent").start(port=port)  # the gateway is back
    try:
        assert run_until_idle(ctx, 20)
        assert bodies(again) == ["m0", "m1", "m2", "m3"]  # each once, in order
        assert states(ctx, ids) == {"submitted": 4}
        assert ctx.conn.hget(ctx.keys.pace(PAIR), "fails") is None
    finally:
        again.stop()


def test_outcome_unknown_is_never_resent_blind(live: Context, sim: Simulator) -> None:
    ids = send(live, 3)
    sim.faults.add("addalotofsms", "drop_after", times=1)
    run(live, "b")
    assert states(live, ids) == {"unknown": 3}
    assert live.conn.zcard(live.keys.inflight) == 0
    (bid,) = members(live.conn, live.keys.verify)
    batch = live.conn.hgetall(live.keys.batch(bid))
    assert text(batch[b"ids"]).split(",") == ids
    assert bodies(sim) == ["m0", "m1", "m2"]
    run(live, "b")  # nothing left to claim: nothing resent
    assert len(sim.ledger()) == 3


@pytest.mark.parametrize("fault", ["drop_after", "drop_before"])
def test_a_batch_in_doubt_is_verified_by_the_sweep_and_ends_stored_once(
    make_ctx: MakeCtx, sim: Simulator, fault: str
) -> None:
    ctx = make_ctx(sim, verify_grace=0.2, verify_min_grace=0.5, device_overrides={"260": 0})
    ids = send(ctx, 3)
    sim.faults.add("addalotofsms", fault, times=1)
    assert run_until_idle(ctx, 60)  # the sweep runs the verification
    assert bodies(sim) == ["m0", "m1", "m2"]
    assert states(ctx, ids) == {"submitted": 3}


def test_a_refused_message_is_found_by_bisecting(live: Context, sim: Simulator) -> None:
    ids = send(live, 8)
    poison = ids[5]
    live.conn.hset(live.keys.msg(poison), "body", "")  # the gateway refuses an empty body
    assert run_until_idle(live, 30)
    assert sorted(bodies(sim)) == sorted(f"m{i}" for i in range(8) if i != 5)
    final = live.store.get(poison)
    assert final is not None and final.state == State.REJECTED
    # "Field 'body' is required" names the message's own fault: it ends at the first attempt
    assert final.error is not None and "body" in final.error and final.attempts == 1
    assert live.conn.zscore(live.keys.dead, poison) is not None
    assert states(live, ids) == {"submitted": 7, "rejected": 1}
    assert live.conn.hget(live.keys.pace(PAIR), "cap") is None
    refused = sim.stats()["refused"].get("addalotofsms", 0)
    assert 2 <= refused <= 4  # halving 8 -> 4 -> 2 -> 1: at most log2(8) + 1 refusals


def test_a_lone_refusal_that_may_change_is_tried_again_after_a_backoff(
    make_ctx: MakeCtx, sim: Simulator, clock: FakeClock
) -> None:
    ctx = make_ctx(sim, clock=clock, max_attempts=3, device_overrides={"260": 0})
    (msg_id,) = send(ctx, 1)
    sim.faults.add("addalotofsms", "busy", times=5)
    assert run(ctx, "b") == "backoff"  # refused: not again at once
    record = ctx.store.get(msg_id)
    assert record is not None and record.state == State.QUEUED and record.attempts == 1
    assert record.error == BUSY
    due = ctx.conn.zscore(ctx.keys.timers, lane("b").member)
    assert due is not None and due >= ctx.now_ms() + 500  # the first backoff: 0.5 s
    assert ctx.conn.lrange(ctx.keys.lane(lane("b")), 0, -1) == [msg_id.encode()]
    clock.advance(0.5)
    assert fire_timers(ctx)[0] == 1
    assert run(ctx, "b") == "backoff"
    due = ctx.conn.zscore(ctx.keys.timers, lane("b").member)
    assert due is not None and due >= ctx.now_ms() + 1000  # then 1 s
    clock.advance(1.0)
    fire_timers(ctx)
    run(ctx, "b")  # the third refusal is the last attempt
    record = ctx.store.get(msg_id)
    assert record is not None and record.state == State.REJECTED and record.attempts == 3
    assert sim.stats()["refused"].get("addalotofsms", 0) == 0  # busy is a fault, not a refusal
    assert sim.ledger() == []


def test_a_bad_token_puts_messages_back_and_backs_off(make_ctx: MakeCtx, sim: Simulator) -> None:
    ctx = make_ctx(gateway_url=sim.url, gateway_token="wrong-token-123")
    ids = send(ctx, 3)
    assert run(ctx, "b") == "backoff"
    assert states(ctx, ids) == {"queued": 3}
    assert ctx.conn.lrange(ctx.keys.lane(lane("b")), 0, -1) == [i.encode() for i in ids]
    due = ctx.conn.zscore(ctx.keys.timers, lane("b").member)
    assert due is not None and due >= ctx.now_ms() + 5000
    assert sim.ledger() == []
    ctx.close()


def test_missing_credentials_put_messages_back(make_ctx: MakeCtx, sim: Simulator) -> None:
    ctx = make_ctx(gateway_url=sim.url, device_overrides={"260": 0})
    ids = send(ctx, 2)
    with capture_logs() as logs:
        assert run(ctx, "b") == "backoff"
    assert states(ctx, ids) == {"queued": 2}
    assert any("RELAY_GATEWAY_TOKEN" in str(e.get("error")) for e in logs)
    assert sim.ledger() == []


def test_an_unexpected_error_in_the_request_is_treated_as_maybe_sent(
    live: Context, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relay.gateway.models import OutgoingSms

    def broken(self: OutgoingSms) -> dict[str, object]:
        raise KeyError("a bug")

    ids = send(live, 2)
    monkeypatch.setattr(OutgoingSms, "to_datajson_item", broken)
    with capture_logs() as logs:
        run(live, "b")  # the worker survives it
    assert states(live, ids) == {"unknown": 2}  # the request may have left: verify, never resend
    assert live.conn.zcard(live.keys.verify) == 1 and live.conn.zcard(live.keys.inflight) == 0
    failed = [e for e in logs if e["event"] == "dispatch.failed"]
    assert failed and failed[0]["sent"] is True and failed[0]["exc_info"]


def test_urgent_is_stored_ahead_of_a_bulk_backlog(live: Context, sim: Simulator) -> None:
    send(live, 2000, dev=261, tag="bulk")
    assert run(live, "b", 261) == "timer"  # the first bulk burst goes; the rest waits for pacing
    urgent = send(live, 5, dev=261, urgent=True, tag="otp")
    assert run(live, "u", 261) == "released"
    ledger = sim.ledger()
    otp = [e for e in ledger if e.body.startswith("otp")]
    assert sorted(e.body for e in otp) == [f"otp{i}" for i in range(5)]
    assert sum(1 for e in ledger if e.body.startswith("bulk")) <= 8  # one poll's burst
    assert states(live, urgent) == {"submitted": 5}
    assert live.conn.llen(live.keys.lane(lane("b", 261))) >= 1990


@pytest.mark.parametrize("kind", ["u", "b"])
def test_a_ticket_hands_over_after_its_batches(
    live: Context, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import relay.dispatch.ticket as dispatch

    live = Context.from_settings(live.settings.model_copy(update={"device_overrides": {"260": 0}}))
    send(live, 30, urgent=kind == "u")
    live.conn.hset(live.keys.pace(PAIR), "cap", 2)  # small batches: the run must hand over
    monkeypatch.setattr(dispatch, "LOOP_BATCHES", 2)
    first = live.conn.get(live.keys.ticket(lane(kind)))
    assert run(live, kind) == "handed"
    holder = live.conn.get(live.keys.ticket(lane(kind)))
    assert holder is not None and holder not in (first, b"timer")
    queue = live.keys.urgent_queue if kind == "u" else live.keys.bulk_queue
    assert holder in live.conn.lrange(f"rq:queue:{queue}", 0, -1)
    assert live.conn.llen(live.keys.lane(lane(kind))) == 30 - 2 - 4
    live.close()
