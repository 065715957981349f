"""The real ``relay serve`` process: keys revoked for every server process at once, keys and
``token=`` values in no log line, graceful SIGTERM (the request in flight finishes), a port
in use, and Redis going away in the middle of a request (503, nothing half-stored, and the
server carries on once Redis is back)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from relay.apikeys import ApiKeys
from relay.context import Context
from relay.settings import Settings, load_settings
from tests.chaos.redis_process import RedisProcess
from tests.fixtures.http import StartServe, make_key, serve_command

MSG = {"sendto": "+4915752982212", "body": "hello", "device_id": 260}


@pytest.fixture
def real_settings(real_redis_url: str) -> Iterator[Settings]:
    """Settings on the real Redis, a prefix of this test's own (deleted afterwards)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield load_settings(redis_url=real_redis_url, key_prefix=prefix, log_json=True)
    conn = redis.Redis.from_url(real_redis_url)
    keys = list(conn.scan_iter(match=f"{prefix}:*")) + list(conn.scan_iter(match=f"rq:*{prefix}*"))
    if keys:
        conn.delete(*keys)
    conn.close()


def raw_post(port: int, body: bytes, key: str, path: str = "/v1/messages") -> socket.socket:
    """A socket that has sent the headers of a JSON POST and the first half of its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def finish(sock: socket.socket, body: bytes) -> tuple[int, bytes]:
    """Send the rest of the body; the status and the whole answer."""
    sock.sendall(body[len(body) // 2 :])
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.slow
def test_revoke_applies_to_every_process_and_no_key_is_logged(
    real_settings: Settings, start_serve: StartServe
) -> None:
    key = make_key(real_settings, "billing", "send")
    servers = [start_serve(real_settings, "--workers", "2"), start_serve(real_settings)]
    for served in servers:
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {key}"}) as c:
            for _ in range(6):
                assert c.post("/v1/messages", json=MSG).status_code == 202
            assert c.get("/v1/stats", params={"token": "tokSECRETquery77"}).status_code == 403
    ctx = Context.from_settings(real_settings)
    assert ApiKeys(ctx).revoke("billing")
    assert ApiKeys(ctx).list() == []
    ctx.close()
    for served in servers:
        for _ in range(8):  # new connections: spread over the worker processes
            with httpx.Client(base_url=served.url) as c:
                r = c.post("/v1/messages", json=MSG, headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 401 and key not in r.text
    for served in servers:
        assert served.stop() == 0
        log = served.log()
        assert '"key": "billing"' in log and '"route": "/v1/messages"' in log
        assert key not in log and key[3:20] not in log
        assert "tokSECRETquery77" not in log


def test_sigterm_lets_the_request_in_flight_finish(
    real_settings: Settings, start_serve: StartServe
) -> None:
    key = make_key(real_settings, "ops", "admin")
    served = start_serve(real_settings)
    body = b'{"sendto": "+4915752982212", "body": "in flight", "device_id": 260}'
    sock = raw_post(served.port, body, key)
    time.sleep(0.3)
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert served.proc.poll() is None  # waits for the request
    status, answer = finish(sock, body)
    assert status == 202, answer
    assert served.proc.wait(20) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.url + "/healthz", timeout=2)


def test_port_in_use_is_one_line_and_exit_1(real_settings: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cmd, env = serve_command(real_settings, port)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: the address is already in use"
    ]


def test_redis_gone_mid_request_is_503_and_nothing_half_stored(
    tmp_path: Path, start_serve: StartServe
) -> None:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        settings = load_settings(
            redis_url=server.url, key_prefix="gone", log_json=True, api_redis_timeout=1.0
        )
        key = make_key(settings, "ops", "admin")
        served = start_serve(settings)
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=served.url, headers=auth, timeout=30) as c:
            kept = c.post("/v1/messages", json=MSG).json()["id"]
            batch = (
                b'{"messages": ['
                + b",".join([b'{"sendto": "+4915752982212", "body": "b", "device_id": 260}'] * 200)
                + b"]}"
            )
            one = b'{"sendto": "+4915752982212", "body": "mid", "device_id": 260}'
            in_flight = [raw_post(served.port, batch, key, "/v1/messages/batch")]
            in_flight.append(raw_post(served.port, one, key))
            time.sleep(0.2)
            server.kill()  # Redis dies while both requests are being received
            for sock, body in zip(in_flight, (batch, one), strict=True):
                status, answer = finish(sock, body)
                assert status == 503, answer
                assert b"retry-after: 5" in answer.lower()
                assert b'"code":"unavailable"' in answer and b"Traceback" not in answer
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200
            assert c.get(f"/v1/messages/{kept}").status_code == 503
            server.restart()  # AOF: what was acknowledged is back, nothing else
            conn = redis.Redis.from_url(server.url)
            records = list(conn.scan_iter(match="gone:m:*"))
            assert records == [f"gone:m:{kept}".encode()]
            assert conn.hget("gone:counts", "queued") == b"1"
            conn.close()
            deadline = time.monotonic() + 15
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert c.post("/v1/messages", json=MSG).status_code == 202
        assert served.stop() == 0
        assert "Traceback" not in served.log()
    finally:
        server.stop()


@pytest.mark.slow
def test_relay_apikey_cli(real_settings: Settings) -> None:
    _cmd, env = serve_command(real_settings, 0)
    base = [sys.executable, "-m", "relay", "apikey"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=60)

    made = run("create", "crm", "--scope", "read", "--json")
    assert made.returncode == 0, made.stderr
    import json

    created = json.loads(made.stdout)
    assert created["name"] == "crm" and created["key"].startswith("rk_")
    assert run("create", "crm").returncode == 1
    assert run("create", "bad name!").returncode == 2
    listed = json.loads(run("list", "--json").stdout)
    assert [(k["name"], k["scopes"]) for k in listed] == [("crm", ["read"])]
    assert created["key"] not in run("list").stdout
    conn = redis.Redis.from_url(real_settings.redis_url)
    values = [
        v
        for k in conn.scan_iter(match=f"{real_settings.key_prefix}:*")
        for v in (list(conn.hgetall(k).values()) if conn.type(k) == b"hash" else [])
    ]
    conn.close()
    assert all(created["key"].encode() not in v for v in values)
    assert run("revoke", "crm").returncode == 0
    assert run("revoke", "crm").returncode == 1
    assert json.loads(run("list", "--json").stdout) == []


def test_a_stalled_redis_costs_one_timeout_then_503_at_once(
    tmp_path: Path, start_serve: StartServe
) -> None:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        settings = load_settings(
            redis_url=server.url,
            key_prefix="stall",
            log_json=True,
            api_redis_timeout=1.0,
            api_retry_after=3,
        )
        key = make_key(settings, "ops", "admin")
        served = start_serve(settings)
        with httpx.Client(
            base_url=served.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as c:
            assert c.post("/v1/messages", json=MSG).status_code == 202
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)  # Redis hangs: no answer, no refusal
            try:
                began = time.monotonic()
                first = c.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "k9"})
                assert first.status_code == 503 and first.headers["retry-after"] == "3"
                assert "Idempotency-Key" in first.json()["error"]["message"]
                assert 0.9 <= time.monotonic() - began < 5
                began = time.monotonic()
                for _ in range(5):  # the breaker is open: no Redis call, no wait
                    assert c.get("/v1/stats").status_code == 503
                    refused = c.post("/v1/messages", json=MSG)
                    assert refused.status_code == 503
                    assert "nothing was stored" in refused.json()["error"]["message"]
                assert c.get("/healthz").status_code == 200
                assert time.monotonic() - began < 0.9
            finally:
                server.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 15
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            # the timed-out request may have reached the stalled Redis: its key tells
            again = c.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "k9"})
            assert again.status_code in (200, 202)
        conn = redis.Redis.from_url(server.url)
        assert conn.hget("stall:counts", "queued") == b"2"
        conn.close()
        assert served.stop() == 0
    finally:
        server.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_ends_open_event_streams(
    real_settings: Settings, start_serve: StartServe, workers: str
) -> None:
    key = make_key(real_settings, "watcher", "read")
    served = start_serve(real_settings, "--workers", workers)
    auth = {"Authorization": f"Bearer {key}"}
    lines: list[str] = []
    with httpx.Client(base_url=served.url, headers=auth, timeout=30) as c:
        with c.stream("GET", "/v1/events") as stream:
            events = stream.iter_lines()
            lines.append(next(events))
            began = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            lines += list(events)  # ends when the server closes the stream
        ended = time.monotonic() - began
    assert lines[0] == ": connected"
    assert ended < 10, ended  # not the 30 s graceful time-out: the stream saw the signal
    assert served.proc.wait(20) == 0


def test_request_metrics_add_up_over_server_processes(
    real_settings: Settings, start_serve: StartServe
) -> None:
    key = make_key(real_settings, "counter", "send")
    served = start_serve(real_settings, "--workers", "2")
    for _ in range(12):  # new connections: the kernel spreads them over both processes
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.post("/v1/messages", json=MSG).status_code == 202
    line = 'relay_http_requests_total{method="POST",route="/v1/messages",status="202"} 12.0'
    for _ in range(4):  # whichever process answers the scrape counts all of them
        assert line in httpx.get(served.url + "/metrics").text
    assert served.stop() == 0
