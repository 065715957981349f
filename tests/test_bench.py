"""``relay bench``: the tiniest configuration end to end, on a real Redis and the simulator.

Numbers depend on the machine: nothing here asserts a speed. The smoke run checks that
every measurement ran, wrote its numbers to the JSON, found them sane (positive, finite,
nothing lost or sent twice, pacing held) and left no key behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from relay.bench.config import MEASURES
from relay.bench.env import BenchError, check_real_redis
from relay.cli.main import cli
from tests.fixtures.redis import FakeRedisServer


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _bench_keys(url: str) -> list[bytes]:
    conn = redis.Redis.from_url(url)
    try:
        return [
            k
            for pattern in ("bench-*", "rb*", "rq:*bench-*")
            for k in conn.scan_iter(match=pattern, count=5000)
        ]
    finally:
        conn.close()


def _tiny_bench(url: str, out: Path, logs: Path, *options: str) -> Any:
    """``relay bench --tiny`` with ``options`` on ``url``, JSON to ``out``, logs in ``logs``."""
    args = ["bench", "--tiny", *options, "--redis-url", url]
    return CliRunner().invoke(cli, [*args, "--json-out", str(out), "--log-dir", str(logs)])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_bench_writes_every_measurement(real_redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    before = set(_bench_keys(real_redis_url))
    result = _tiny_bench(real_redis_url, out, tmp_path / "logs")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    m = data["measurements"]
    assert set(m) == set(MEASURES)
    # the replicas measure starts redis-server processes of its own: without one it fails
    # with that reason and the others still run
    needs_server = set() if shutil.which("redis-server") else {"replicas"}
    failed = {k: v["error"] for k, v in m.items() if v["error"] is not None}
    assert set(failed) == needs_server, failed
    assert all("redis-server" in failed[k] for k in needs_server), failed

    enqueue = m["enqueue"]["values"]
    for side in ("single", "many"):
        assert _positive(enqueue[side]["relay_per_s"]) and _positive(enqueue[side]["rq_per_s"])
    assert _positive(m["memory"]["values"]["bytes_per_message"])

    e2e = m["endtoend"]["values"]
    assert e2e["relay"]["stored"] == data["config"]["e2e_messages"]
    assert e2e["relay"]["duplicates"] == 0 and e2e["rq"]["duplicates"] == 0
    assert _positive(e2e["relay"]["msgs_per_s"]) and _positive(e2e["rq"]["msgs_per_s"])

    for scenario in ("with_backlog", "empty"):
        lat = m["latency"]["values"][scenario]
        assert lat["samples"] == data["config"]["latency_samples"]
        assert _positive(lat["p50_ms"]) and lat["p99_ms"] >= lat["p50_ms"]

    calls = m["calls"]["values"]
    assert calls["calls"]["addalotofsms"] >= 1 and _positive(calls["per_message"])

    for run in m["scaleout"]["values"]["runs"]:
        assert run["stored"] == data["config"]["scale_messages"] and run["duplicates"] == 0
        assert run["pacing"]["held"], run["pacing"]

    rec = m["reconcile"]["values"]
    assert rec["final"] == rec["messages"] and _positive(rec["seconds"])
    assert rec["calls"].get("getallsms", 0) >= 1

    if not needs_server:
        rep = m["replicas"]["values"]
        for n in (0, 1):
            side = rep[f"min_replicas_{n}"]
            assert side["send_p99_ms"] >= side["send_p50_ms"] > 0
            for rate in ("sends_per_s", "send_many_per_s", "worker_msgs_per_s"):
                assert _positive(side[rate]), (n, rate, side)

    assert {t["measure"] for t in data["targets"]} >= {"enqueue", "endtoend", "latency"}
    assert set(_bench_keys(real_redis_url)) <= before  # cleaned up after itself
    server = redis.Redis.from_url(real_redis_url).info("server")
    assert data["redis"]["process_id"] == server["process_id"]
    assert data["redis"]["engine"].split()[0] == server.get("server_name", "redis")
    assert data["redis"]["mem_allocator"]


def test_without_a_url_the_bench_runs_on_the_embedded_engine(tmp_path: Path) -> None:
    from relay.embedded import embedded_binary
    from relay.errors import EmbeddedServerError

    try:
        embedded_binary()
    except EmbeddedServerError as exc:
        pytest.skip(f"the embedded engine cannot run here: {exc}")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli,
        ["bench", "--tiny", "--only", "enqueue", "--json-out", str(out)],
        env={"RELAY_REDIS_URL": None},
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["redis"]["engine"].startswith("valkey ")
    assert data["measurements"]["enqueue"]["error"] is None
    assert "embedded valkey" in result.output
    pid = int(data["redis"]["process_id"])
    with pytest.raises(ProcessLookupError):  # stopped with the run
        os.kill(pid, 0)


def test_fakeredis_is_refused(fake_redis_server: FakeRedisServer, tmp_path: Path) -> None:
    url = fake_redis_server.url
    with pytest.raises(BenchError, match="fakeredis"):
        check_real_redis(url)
    result = CliRunner().invoke(
        cli, ["bench", "--tiny", "--redis-url", url, "--json-out", str(tmp_path / "b.json")]
    )
    assert result.exit_code != 0
    assert "fakeredis" in result.output
    assert not (tmp_path / "b.json").exists()


# --- the soak ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_tiny_soak_runs_the_latency_scenario_under_load(
    real_redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    before = set(_bench_keys(real_redis_url))
    result = _tiny_bench(
        real_redis_url, out, tmp_path / "logs", "--soak", "0.1", "--soak-load", "1"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["load_processes"] == 1 and data["runs"]
    for run in data["runs"]:
        assert run["sent"] == 2 * 5 == run["arrived"]  # tiny: 5 samples per setup
        assert run["p99_ms"] >= run["p50_ms"] > 0 and run["dump"] is None
    assert data["missing"] == 0 and data["sent"] == 10 * len(data["runs"])
    assert "run 1: 10/10 urgent arrived" in result.output
    assert set(_bench_keys(real_redis_url)) <= before  # cleaned up after itself


def test_the_soak_dump_shows_what_the_sweep_judges(make_ctx: Any) -> None:
    from relay.bench.statedump import dump_state
    from relay.dispatch.tickets import Arm, enqueue_tickets
    from relay.lanes import LaneId
    from relay.processes import beat
    from relay.produce.producer import Producer

    ctx = make_ctx()
    lane = LaneId("u", 270, 0)
    item = {"sendto": "+4915712345678", "body": "otp", "device_id": 270, "urgent": True}
    [msg] = Producer(ctx).send_many([item])
    arm = Arm.new(ctx.keys, lane)
    enqueue_tickets(ctx, [arm])
    ctx.conn.hset(f"rq:job:{arm.job_id}", mapping={"status": "started", "worker_name": "w1"})
    ctx.conn.set(ctx.keys.ticket(lane), arm.job_id)
    beat(ctx, "w1", "worker")
    state = json.loads(json.dumps(dump_state(ctx.conn, ctx.keys.prefix, [msg])))
    [urgent] = [entry for entry in state["lanes"] if entry["lane"] == lane.member]
    assert (urgent["length"], urgent["head"], urgent["ticket"]) == (1, [msg], arm.job_id)
    assert urgent["progress"] is None and urgent["progress_ttl_ms"] == -2
    job = state["rq"]["ticket_jobs"][arm.job_id]
    assert (job["status"], job["worker_name"]) == ("started", "w1")
    assert state["heartbeats"]["w1"]["kind"] == "worker"
    assert state["missing"][msg]["state"] == "queued"
    assert state["timers"] == {} and state["inflight"] == {}
