"""``relay demo`` end to end, small: all messages final, the summary true to the simulator's ledger.

Runs twice: with the embedded engine (no ``RELAY_REDIS_URL``, as on a machine with no Redis:
the Valkey server of ``relay.embedded``, gone after the demo) and against the real Redis
server the other tests use. Worker and reconciler are
real processes; the gateway is the simulator over HTTP.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator

import httpx
import pytest
import redis

from relay.demo import PHONES, Demo, DemoConfig, DemoSummary, failing_numbers
from relay.simulator import LedgerEntry
from relay.states import State
from relay.store import Message

pytestmark = pytest.mark.slow  # two whole demo runs

CONFIG = DemoConfig(
    bulk=40, urgent=4, scheduled=3, failing=3, workers=2, timeout=90.0, urgent_every=0.3, pooled=300
)


class Finished:
    """A finished demo run: its summary, the relay records and the simulator's ledger."""

    def __init__(self, demo: Demo, summary: DemoSummary, kind: str) -> None:
        self.summary = summary
        self.kind = kind
        self.redis_pid = int(demo.relay.ctx.conn.info("server")["process_id"])
        self.ids = list(demo.ids)
        self.urgent_ids = list(demo.urgent_ids)
        found = demo.relay.ctx.store.get_many(self.ids)
        assert all(m is not None for m in found), "a message record is missing"
        self.records: dict[str, Message] = {m.id: m for m in found if m is not None}
        self.ledger: dict[int, LedgerEntry] = {e.sms_id: e for e in demo.sim.ledger()}
        self.prefix = demo.settings.key_prefix
        self.api_url = summary.api_url
        self.api_status = 0

    def entry(self, msg: Message) -> LedgerEntry:
        """The ledger's entry of ``msg``: what the gateway stored under its ``sms_id``."""
        assert msg.sms_id is not None, f"{msg.id} has no sms_id"
        return self.ledger[msg.sms_id]


@pytest.fixture(scope="module", params=["embedded", "real"])
def finished(request: pytest.FixtureRequest) -> Iterator[Finished]:
    """One demo run per Redis, shared by the tests of this module (they only read it)."""
    url = None if request.param == "embedded" else str(request.getfixturevalue("real_redis_url"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RELAY_REDIS_URL", raising=False)
        with Demo(CONFIG, redis_url=url) as demo:
            auth = {"Authorization": f"Bearer {demo.api_key}"}
            api_stats = httpx.get(f"{demo.api_url}/v1/stats", headers=auth, timeout=10)
            run = Finished(demo, demo.run(), request.param)
            run.api_status = api_stats.status_code
    yield run
    if url is not None:  # the demo cleans up after itself on a real server
        conn = redis.Redis.from_url(url)
        assert list(conn.scan_iter(match=f"{run.prefix}:*")) == []
        conn.close()


def test_every_message_ends_final(finished: Finished) -> None:
    s = finished.summary
    assert s.complete
    total = CONFIG.bulk + CONFIG.urgent + CONFIG.scheduled + CONFIG.pooled
    assert s.total == total == len(finished.records)
    for msg in finished.records.values():
        assert msg.final, (msg.id, msg.state)
    assert sum(s.states.values()) == s.total
    assert s.states == _count(m.state.value for m in finished.records.values())


def test_each_message_stored_once_at_the_gateway(finished: Finished) -> None:
    records, ledger = finished.records, finished.ledger
    sms_ids = [m.sms_id for m in records.values()]
    assert None not in sms_ids and len(set(sms_ids)) == len(sms_ids)
    assert set(sms_ids) == set(ledger)  # nothing lost, nothing extra, nothing twice
    for msg in records.values():
        entry = finished.entry(msg)
        assert (entry.sendto, entry.body, entry.device_id) == (msg.sendto, msg.body, msg.device_id)
        assert bool(entry.urgent) == msg.urgent


def test_final_states_follow_the_gateway_codes(finished: Finished) -> None:
    failing = failing_numbers(CONFIG)
    for msg in finished.records.values():
        code = finished.entry(msg).status
        expected = {7: State.DELIVERED, 6: State.SENT}.get(code, State.FAILED)
        assert msg.state == expected, (msg.id, code, msg.state)
        if msg.sendto in failing:
            assert code == failing[msg.sendto] and msg.state == State.FAILED
    assert finished.summary.states.get("failed") == CONFIG.failing


def test_summary_numbers_match_the_ledger(finished: Finished) -> None:
    s, ledger = finished.summary, finished.ledger
    calls = {e.request.request_id for e in ledger.values() if e.request.endpoint == "addalotofsms"}
    assert s.gateway_calls == len(calls) > 0
    assert s.stored == len(ledger) == s.total
    assert s.per_call == pytest.approx(len(ledger) / len(calls))
    assert s.per_device == _count(e.device_id for e in ledger.values())

    latencies = sorted(
        finished.entry(finished.records[i]).stored_at
        - finished.records[i].times["queued"].timestamp()
        for i in finished.urgent_ids
    )
    assert len(latencies) == CONFIG.urgent
    assert s.urgent_latency_p50 == pytest.approx(latencies[(len(latencies) + 1) // 2 - 1], abs=1e-3)
    assert s.urgent_latency_p99 == pytest.approx(latencies[-1], abs=1e-3)
    assert 0 < s.elapsed < CONFIG.timeout


def test_scheduled_messages_wait_for_their_time(finished: Finished) -> None:
    scheduled = [m for m in finished.records.values() if m.timetosend is not None]
    assert len(scheduled) == CONFIG.scheduled
    for msg in scheduled:
        assert msg.timetosend is not None  # as selected above
        stored_at = finished.entry(msg).stored_at
        assert stored_at >= msg.timetosend.timestamp() - 0.01


def test_the_embedded_demo_runs_on_a_real_server_it_stops(finished: Finished) -> None:
    if finished.kind != "embedded":
        assert finished.summary.redis.startswith("redis://")
        return
    assert finished.summary.redis.startswith("embedded valkey ")
    with pytest.raises(ProcessLookupError):  # the demo stopped it on exit
        os.kill(finished.redis_pid, 0)


def _count(values: Iterable[object]) -> dict[object, int]:
    return dict(Counter(values))


def test_the_demo_serves_the_http_api_with_its_key(finished: Finished) -> None:
    assert finished.api_url.startswith("http://127.0.0.1:")
    assert finished.api_status == 200


def test_the_pool_carries_on_while_a_phone_is_offline(finished: Finished) -> None:
    pool = finished.summary.pool
    assert pool is not None and pool.offline_phone == PHONES[1].id
    pooled = [m for m in finished.records.values() if m.pool == pool.pool]
    assert len(pooled) == pool.messages == CONFIG.pooled
    assert pool.per_phone == _count(m.device_id for m in pooled)  # every one stored once
    # nothing went to the offline phone once what it had claimed was through; the rest did
    assert pool.during_outage[PHONES[1].id] == 0
    assert sum(pool.during_outage.values()) > 0
