"""Throughput of the simulator: ``python -m relay.simulator.bench [--seconds S]``.

Starts ``python -m relay.simulator`` as its own process (so the client does not share its
GIL) and measures requests per second on one keep-alive connection, two ways: a raw
socket client (the server's own capacity) and an httpx client (what relay will see).
Reports ``addalotofsms`` with 500 messages as messages per second too. Numbers depend on
the machine and its load; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

FORM = "application/x-www-form-urlencoded"


class RawClient:
    """A minimal HTTP/1.1 keep-alive client: one write per request, no parsing beyond framing."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def post(self, endpoint: str, form: dict[str, Any]) -> bytes:
        body = urlencode(form).encode()
        head = (
            f"POST {self.path}{endpoint} HTTP/1.1\r\nHost: sim\r\nContent-Type: {FORM}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return self.reader.read(length)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``call`` repeated for about ``seconds``."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        call()
        count += 1
    return count / elapsed


def workloads(token: str) -> dict[str, tuple[str, dict[str, Any], int]]:
    """name → (endpoint, form, messages per request)."""
    one = {"sendto": "+4915752982212", "body": "hello", "device_id": 260, "sim": 0}
    items = [{**one, "sendto": f"+49157{n:07d}", "urgent": n % 2} for n in range(500)]
    return {
        "getsmsstatus": ("getsmsstatus", {"token": token, "sms_id": 1}, 0),
        "addsms": ("addsms", {"token": token, **one}, 1),
        "addalotofsms(500)": (
            "addalotofsms",
            {"datajson": json.dumps({"token": token, "smsdata": items})},
            500,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print one line per workload and client."""
    parser = argparse.ArgumentParser(description="Measure the simulator's throughput.")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "relay.simulator", "--json", "--device", "260:1:0.001"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        raw, client = RawClient(info["url"]), httpx.Client(base_url=info["url"], timeout=60)
        for name, (endpoint, form, per) in workloads(info["token"]).items():
            for label, call in (
                ("raw socket", lambda e=endpoint, f=form: raw.post(e, f)),
                ("httpx", lambda e=endpoint, f=form: client.post(e, data=f)),
            ):
                req_s = rate(call, args.seconds)
                msgs = f"  {req_s * per:8.0f} msgs/s" if per > 1 else ""
                print(f"{name:18} {label:10} {req_s:8.0f} req/s{msgs}", flush=True)
        raw.close()
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
