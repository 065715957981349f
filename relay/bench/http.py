"""``relay bench --only http``: ``relay serve`` (one server process) under load from this
machine, beside its own ``GET /healthz`` (the framework's ceiling here) in the same run.

Rates, each measured closed-loop for ``http_seconds`` with ``http_connections`` keep-alive
connections (:mod:`relay.bench.loadgen`): ``GET /healthz``, single ``POST /v1/messages``,
``POST /v1/messages/batch`` of ``http_batch`` messages (messages per second), and
``GET /getdata/addsms`` where the drop-in front has that route. Then single POSTs
open-loop at half their peak rate: p50 and p99 from the moment each request was due.

The server logs as in production (INFO access lines, JSON) to a file in the log directory.
The load generator runs in this process on the same cores as the server, so every rate is
a lower bound of what the server alone would do.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from relay.apikeys import ApiKeys
from relay.bench.config import BenchConfig
from relay.bench.env import Scope, child_env, process_cpu, stop_process
from relay.bench.loadgen import LoadResult, closed_loop, open_loop, request_bytes
from relay.bench.report import Measurement, Row, fmt
from relay.context import Context

HOST = "127.0.0.1"
DEVICES = 10
TARGET_SINGLE_PER_S = 2_000
TARGET_SINGLE_SHARE = 0.5
TARGET_BATCH_PER_S = 20_000
TARGET_P99_MS = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(scope: Scope, log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``relay serve`` on a free port with the scope's settings (INFO logs to a file)."""
    port = _free_port()
    settings = scope.settings(log_level="INFO")
    env = child_env(settings)
    log_path = log_dir / "http-serve.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--host", HOST, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relay serve exited {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"relay serve did not get ready; see {log_path}")


def _message(i: int) -> dict[str, object]:
    return {
        "sendto": f"+4915{i % 10_000_000:08d}",
        "body": f"Your code is {i % 1_000_000:06d}",
        "device_id": 7001 + i % DEVICES,
    }


def _has_route(port: int, path: str) -> bool:
    """Whether this build serves ``path`` (the drop-in answers even a bare call, in its shape)."""
    return httpx.get(f"http://{HOST}:{port}{path}", timeout=10).status_code != 404


async def _phases(cfg: BenchConfig, port: int, key: str) -> dict[str, LoadResult | None]:
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    healthz_request = request_bytes("GET", "/healthz")

    def healthz(_i: int) -> bytes:
        return healthz_request

    conns, secs = cfg.http_connections, cfg.http_seconds

    def single(i: int) -> bytes:
        return request_bytes(
            "POST", "/v1/messages", body=json.dumps(_message(i)).encode(), headers=auth
        )

    def batch(i: int) -> bytes:
        items = [_message(i * cfg.http_batch + j) for j in range(cfg.http_batch)]
        body = json.dumps({"messages": items}).encode()
        return request_bytes("POST", "/v1/messages/batch", body=body, headers=auth)

    def addsms(i: int) -> bytes:
        m = _message(i)
        query = f"token={key}&sendto={m['sendto']}&body=code+{i}&device_id={m['device_id']}"
        return request_bytes("GET", f"/getdata/addsms?{query}")

    out: dict[str, LoadResult | None] = {}
    await closed_loop(HOST, port, single, connections=conns, seconds=min(0.5, secs))  # warm-up
    out["healthz"] = await closed_loop(HOST, port, healthz, connections=conns, seconds=secs)
    out["single"] = await closed_loop(HOST, port, single, connections=conns, seconds=secs)
    out["batch"] = await closed_loop(
        HOST, port, batch, connections=cfg.http_batch_connections, seconds=secs
    )
    out["addsms"] = None
    if _has_route(port, "/getdata/addsms"):
        out["addsms"] = await closed_loop(
            HOST, port, addsms, connections=conns, seconds=secs, expect=b'"error":0'
        )
    peak = out["single"].rate if out["single"] else 0.0
    out["half"] = await open_loop(
        HOST, port, single, rate=max(1.0, peak / 2), seconds=secs, connections=conns * 2
    )
    return out


def measure(cfg: BenchConfig) -> Measurement:
    m = Measurement("http")
    scope = Scope(cfg.redis_url, "http")
    proc, port = start_server(scope, cfg.log_dir)
    ctx = Context.from_settings(scope.settings())
    try:
        _, key = ApiKeys(ctx).create("bench", "admin")
        cpu_before = process_cpu(proc.pid)
        runs = asyncio.run(_phases(cfg, port, key))
        server_cpu = process_cpu(proc.pid) - cpu_before
    finally:
        ctx.close()
        stop_process(proc)
        scope.cleanup()
    _report(m, cfg, runs, server_cpu)
    return m


def _report(
    m: Measurement, cfg: BenchConfig, runs: dict[str, LoadResult | None], server_cpu: float
) -> None:
    health, single, batch, half = runs["healthz"], runs["single"], runs["batch"], runs["half"]
    assert health and single and batch and half
    addsms = runs["addsms"]
    batch_msgs = batch.rate * cfg.http_batch
    share = single.rate / health.rate if health.rate else 0.0
    p50, p99 = half.percentile(0.5) * 1000, half.percentile(0.99) * 1000

    def row(r: LoadResult) -> dict[str, object]:
        return {
            "per_s": r.rate,
            "answers": dict(sorted(r.statuses.items())),
            "errors": r.errors,
            "p50_ms": r.percentile(0.5) * 1000,
            "p99_ms": r.percentile(0.99) * 1000,
        }

    m.values = {
        "connections": cfg.http_connections,
        "seconds": cfg.http_seconds,
        "healthz": row(health),
        "single": row(single),
        "batch": {**row(batch), "messages_per_s": batch_msgs, "size": cfg.http_batch},
        "addsms": row(addsms) if addsms else None,
        "half_peak": {**row(half), "rate": len(half.latencies) / half.seconds},
        "server_cpu_s": server_cpu,
        "cpus": os.cpu_count(),
    }
    t_share = m.target(
        "single POST vs healthz", share * 100, TARGET_SINGLE_SHARE * 100, at_least=True, unit="%"
    )
    t_single = m.target("single POST", single.rate, TARGET_SINGLE_PER_S, at_least=True, unit="/s")
    t_batch = m.target("batch msgs", batch_msgs, TARGET_BATCH_PER_S, at_least=True, unit="/s")
    t_p99 = m.target("single p99 at half peak", p99, TARGET_P99_MS, at_least=False, unit=" ms")
    m.rows = [
        Row("GET /healthz (req/s)", fmt(health.rate), f"{cfg.http_connections} connections"),
        Row(
            "POST /v1/messages (msgs/s)",
            fmt(single.rate),
            f"{fmt(share * 100)}% of healthz",
            t_single,
        ),
        Row("  share of healthz", fmt(share * 100, "%"), "", t_share),
        Row(
            f"POST /v1/messages/batch x{cfg.http_batch} (msgs/s)",
            fmt(batch_msgs),
            f"{fmt(batch.rate)} req/s",
            t_batch,
        ),
        Row(
            "GET /getdata/addsms (msgs/s)",
            fmt(addsms.rate) if addsms else "not available",
            f'{fmt(addsms.rate / health.rate * 100)}% of healthz; answers checked for "error":0'
            if addsms and health.rate
            else "no drop-in route in this build",
        ),
        Row(
            f"single POST at {fmt(len(half.latencies) / half.seconds)}/s: p50 / p99 (ms)",
            f"{fmt(p50)} / {fmt(p99)}",
            "",
            t_p99,
        ),
    ]
    bad = {k: r.statuses for k, r in runs.items() if r and any(s >= 299 for s in r.statuses)}
    if bad:
        m.notes.append(f"non-2xx answers: {bad}")
    m.notes.append("load generator and server share this machine's cores")
