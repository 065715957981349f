"""The drop-in on a real ``relay serve`` process: Redis going away in the middle of requests
(answered HTTP 200 ``error`` 1 as the gateway's clients expect, nothing half-stored, the
front working again once Redis is back), and neither the key, a ``token=`` query nor relay's
gateway token in any log line or answer."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import redis

from relay.settings import load_settings
from relay.simulator import Simulator
from tests.chaos.redis_process import RedisProcess
from tests.fixtures.http import StartServe, make_key
from tests.fixtures.workers import MakeSettings

PHONE = "+4915752982212"


def half_sent(port: int, path: str, body: bytes) -> socket.socket:
    """A socket that has sent the headers of a form POST and half its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def rest(sock: socket.socket, body: bytes) -> tuple[int, dict[str, object]]:
    sock.sendall(body[len(body) // 2 :])
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


def test_redis_gone_mid_request_answers_error_1_and_stores_nothing_half(
    tmp_path: Path, start_serve: StartServe
) -> None:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        settings = load_settings(
            redis_url=server.url, key_prefix="gone", log_json=True, api_redis_timeout=1.0
        )
        key = make_key(settings, "shop", "send")
        served = start_serve(settings)
        form = {"token": key, "sendto": PHONE, "body": "kept", "device_id": "260"}
        with httpx.Client(base_url=served.url, timeout=30) as c:
            kept = c.post("/getdata/addsms", data=form).json()
            assert kept["sms_id"] == 1
            single = str(httpx.QueryParams({**form, "body": "mid"})).encode()
            smsdata = [{"sendto": PHONE, "body": "b", "device_id": 260}] * 200
            datajson = json.dumps({"token": key, "smsdata": smsdata})
            bulk = str(httpx.QueryParams({"datajson": datajson})).encode()
            in_flight = [
                (half_sent(served.port, "/getdata/addsms", single), single),
                (half_sent(served.port, "/getdata/addalotofsms", bulk), bulk),
            ]
            time.sleep(0.2)
            server.kill()  # Redis dies while both requests are being received
            for sock, body in in_flight:
                status, answer = rest(sock, body)
                assert status == 200 and answer["error"] == 1, answer
                assert "try again later" in str(answer["message"])
            later = c.get(f"/getdata/getsmsstatus?token={key}&sms_id=1")
            assert later.status_code == 200 and later.json()["error"] == 1
            server.restart()  # AOF: what was acknowledged is back, nothing else
            conn = redis.Redis.from_url(server.url)
            assert len(list(conn.scan_iter(match="gone:m:*"))) == 1
            assert conn.hget("gone:counts", "queued") == b"1"
            assert conn.get("gone:dropin:seq") == b"1"
            conn.close()
            deadline = time.monotonic() + 15
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert c.post("/getdata/addsms", data=form).json()["sms_id"] == 2
        assert served.stop() == 0
        assert "Traceback" not in served.log()
    finally:
        server.stop()


def test_no_key_token_or_gateway_token_in_logs_or_answers(
    relay_settings: MakeSettings, simulator: Simulator, start_serve: StartServe
) -> None:
    settings = relay_settings(simulator, log_level="DEBUG")
    served = start_serve(settings)
    key = make_key(settings, "shop", "send")
    answers = []
    with httpx.Client(base_url=served.url, timeout=30) as c:
        query = f"token={key}&sendto={PHONE}&body=x&device_id=260"
        answers.append(c.get(f"/getdata/addsms?{query}").text)
        answers.append(c.get(f"/getdata/getsmsstatus?token={key}&sms_id=1").text)
        answers.append(c.get(f"/getdata/getalldevices?token={key}").text)
        answers.append(c.post("/getdata/savetag", data={"token": key, "title": "t"}).text)
        answers.append(c.get("/getdata/addsms?token=rk_wrong-key-value").text)
    served.stop()
    log = served.log()
    assert "getdata" in log  # the requests were logged, by route template
    for secret in (key, simulator.token, "rk_wrong-key-value", "token="):
        assert secret not in log, secret
    for answer in answers:
        assert simulator.token not in answer and key not in answer
