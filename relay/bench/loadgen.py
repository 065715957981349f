"""A small HTTP/1.1 load generator on asyncio: keep-alive connections, one request at a time
each, answers read by ``Content-Length``. Lighter than a general client, so on a two-core
machine the server, not the generator, is what is measured (the generator still takes CPU
from the same cores: say so beside the numbers).

- :func:`closed_loop`: ``connections`` clients send back to back for ``seconds``: the peak rate.
- :func:`open_loop`: requests start at a fixed ``rate`` whatever the answers do; each latency
  counts from the moment its request was *due* (no coordinated omission), so a server that
  falls behind shows it in p99.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REFUSED = 299
"""Status recorded for a 2xx answer whose body says the request was refused (not counted ok)."""

MakeRequest = Callable[[int], bytes]
"""Request ``i`` as raw bytes (request line, headers, body)."""


def request_bytes(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    """Answers by status, latencies (s) and the wall time they took."""

    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < REFUSED)

    @property
    def rate(self) -> float:
        """Successful answers per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Connection:
    """One keep-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def call(self, request: bytes, expect: bytes | None = None) -> int:
        """Send ``request``, read its answer; the status code (``REFUSED`` for a 2xx whose
        body lacks ``expect``: the drop-in answers its errors with HTTP 200)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        body = await self.reader.readexactly(length) if length else b""
        if expect is not None and 200 <= status < 300 and expect not in body:
            return REFUSED
        return status

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    host: str,
    port: int,
    make: MakeRequest,
    *,
    connections: int,
    seconds: float,
    expect: bytes | None = None,
) -> LoadResult:
    """``connections`` clients sending back to back for ``seconds``."""
    conns = [await Connection.open(host, port) for _ in range(connections)]
    result = LoadResult(seconds)
    counter = iter(range(1 << 62))
    end = time.perf_counter() + seconds

    async def client(conn: Connection) -> None:
        while time.perf_counter() < end:
            start = time.perf_counter()
            try:
                status = await conn.call(make(next(counter)), expect)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                return
            result.latencies.append(time.perf_counter() - start)
            result.statuses[status] = result.statuses.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    result.seconds = time.perf_counter() - began
    for c in conns:
        c.close()
    return result


async def open_loop(
    host: str, port: int, make: MakeRequest, *, rate: float, seconds: float, connections: int
) -> LoadResult:
    """Requests due every ``1/rate`` s for ``seconds``, on a pool of ``connections``."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(host, port))
    result = LoadResult(seconds)
    total = max(1, int(rate * seconds))
    began = time.perf_counter()

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.call(make(i))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            return
        result.latencies.append(time.perf_counter() - due)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        pool.put_nowait(conn)

    tasks = []
    for i in range(total):
        due = began + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - began
    while not pool.empty():
        pool.get_nowait().close()
    return result
