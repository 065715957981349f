"""What every measurement stands on: a real Redis, a key prefix of its own, a simulator
process, relay settings pointing at both, and real worker processes.

- :func:`check_real_redis` refuses anything that is not a Redis server (fakeredis's TCP
  server answers no ``INFO``; numbers measured on it would mean nothing).
- :class:`Scope` is one measurement's key prefix; :meth:`Scope.cleanup` deletes every key
  under it (and the RQ keys of its queues) when the measurement ends, whatever happened.
- :class:`SimProcess` runs ``python -m relay.simulator`` as its own process, so the
  simulator's HTTP parsing does not share a GIL with the bench or a worker; its ledger
  and counters are read over the ``/_sim/`` admin endpoints.
- :func:`start_workers` starts ``relay worker`` processes configured only through
  ``RELAY_*`` environment variables, like a deployment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from relay.closing import Closing
from relay.connection import delete_matching, delete_prefix
from relay.errors import ConfigError
from relay.log import get_logger
from relay.settings import Settings, load_settings, settings_env

log = get_logger(__name__)

STOP_WAIT_S = 20.0
SIM_START_S = 30.0


class BenchError(ConfigError):
    """The bench cannot run here (no real Redis, a process that does not start, ...)."""


def check_real_redis(url: str) -> dict[str, Any]:
    """``INFO server`` of the Redis at ``url``; :class:`BenchError` unless it is a real server."""
    conn = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        info: dict[str, Any] = conn.info("server")
    except redis.ResponseError:
        raise BenchError(
            f"{url} answers no INFO: it looks like fakeredis. relay bench measures a real "
            "Redis server only (start one: redis-server; then --redis-url redis://HOST:PORT/DB)"
        ) from None
    except redis.RedisError as exc:
        raise BenchError(f"cannot reach Redis at {url}: {exc}") from None
    finally:
        conn.close()
    if "redis_version" not in info or "process_id" not in info:
        raise BenchError(f"{url} is not a Redis server (INFO lacks redis_version/process_id)")
    return info


@dataclass
class Scope:
    """One measurement's own key prefix on the bench's Redis."""

    redis_url: str
    name: str
    prefix: str = ""
    extra_queues: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = f"bench-{self.name}-{uuid.uuid4().hex[:8]}"

    def conn(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def settings(self, sim: SimProcess | None = None, **overrides: Any) -> Settings:
        """relay settings on this prefix, the gateway being ``sim`` when given."""
        values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "key_prefix": self.prefix,
            "log_level": "WARNING",
            "log_json": True,
            "gateway_timeout": 30.0,
        }
        if sim is not None:
            values["gateway_url"] = sim.url
            values["gateway_token"] = sim.token
        values.update(overrides)
        return load_settings(**values)

    def cleanup(self) -> int:
        """Delete every key of this prefix and of its RQ queues; returns how many."""
        conn = self.conn()
        try:
            deleted = delete_prefix(conn, self.prefix)
            for queue in self.extra_queues:
                deleted += delete_matching(conn, f"rq:*{queue}*")
            return deleted
        finally:
            conn.close()


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment without ``RELAY_*``, plus ``settings`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(settings_env(settings))
    env.update(extra)
    return env


# --- the simulator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Phone:
    """A simulated phone: id, seconds between polls, seconds between two SMS."""

    id: int
    poll: float
    each: float

    def spec(self) -> str:
        return f"{self.id}:{self.poll:g}:{self.each:g}:0"


def phones(count: int, poll: float, each: float, first: int = 7001) -> list[Phone]:
    """``count`` phones alike, ids from ``first``."""
    return [Phone(first + i, poll, each) for i in range(count)]


class SimProcess(Closing):
    """``python -m relay.simulator`` in its own process, on a free port."""

    def __init__(self, devices: Sequence[Phone], *, report_delay: float = 0.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "relay.simulator",
            "--json",
            "--report-delay",
            str(report_delay),
        ]
        for phone in devices:
            cmd += ["--device", phone.spec()]
        self.devices = list(devices)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, SIM_START_S)
        if not line:
            self.close()
            raise BenchError("the simulator process did not start")
        info = json.loads(line)
        self.url: str = info["url"]
        self.token: str = info["token"]
        self.admin = httpx.Client(base_url=self.url.replace("/getdata/", "/_sim/"), timeout=300)

    def stats(self) -> dict[str, Any]:
        """Counters: requests per endpoint, messages stored, messages by status."""
        data: dict[str, Any] = self.admin.get("stats").json()
        return data

    def requests(self) -> dict[str, int]:
        """Gateway requests received so far, per endpoint."""
        return {str(k): int(v) for k, v in self.stats()["requests"].items()}

    def stored(self) -> int:
        return int(self.stats()["messages"])

    def ledger(self) -> list[dict[str, Any]]:
        """Every stored message (``stored_at``, ``device_id``, ``customerid``, history, ...)."""
        entries: list[dict[str, Any]] = self.admin.get("ledger").json()["entries"]
        return entries

    def wait_stored(self, count: int, timeout: float, poll: float = 0.25) -> bool:
        """Wait until ``count`` messages are stored; False on timeout."""
        return wait_until(lambda: self.stored() >= count, timeout, poll)

    def close(self) -> None:
        if getattr(self, "admin", None) is not None:
            self.admin.close()
        stop_process(self.proc)


def _readline(stream: Any, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return ""
        return str(stream.readline())
    finally:
        sel.close()


# --- worker processes --------------------------------------------------------------------


@dataclass
class Workers:
    """Running ``relay worker`` processes; :meth:`stop` ends them (SIGTERM, then SIGKILL)."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def wait(self, timeout: float) -> bool:
        """Wait for every process to exit by itself (burst mode); False on timeout."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)

    def failed(self) -> list[str]:
        """The log tails of processes that exited non-zero."""
        return [
            path.read_text(errors="replace")[-2000:]
            for proc, path in zip(self.procs, self.logs, strict=True)
            if proc.poll() not in (None, 0, -signal.SIGTERM)
        ]


def start_workers(
    settings: Settings, count: int, log_dir: Path, *, burst: bool, profile: Path | None = None
) -> Workers:
    """Start ``count`` ``relay worker`` processes (``--burst``: they exit once relay is idle).

    With ``profile``, the first runs under pyinstrument and writes its report there.
    """
    env = child_env(settings)
    procs, logs = [], []
    for i in range(count):
        cmd = [sys.executable, "-m", "relay", "worker"] + (["--burst"] if burst else [])
        if profile is not None and i == 0:
            cmd = [
                sys.executable,
                "-m",
                "pyinstrument",
                "-o",
                str(profile),
                "-m",
                "relay",
                "worker",
            ] + (["--burst"] if burst else [])
        path = log_dir / f"{settings.key_prefix}-worker-{i}.log"
        with path.open("wb") as out:
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
        logs.append(path)
    return Workers(procs, logs)


def start_reconciler(settings: Settings, log_dir: Path) -> subprocess.Popen[bytes]:
    """Start one ``relay reconciler`` process (stop it with :func:`stop_process`)."""
    path = log_dir / f"{settings.key_prefix}-reconciler.log"
    with path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "relay", "reconciler"],
            env=child_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def final_count(conn: redis.Redis, settings: Settings) -> int:
    """Messages of ``settings``' prefix in a final state (from the ``counts`` hash)."""
    from relay.keys import Keys
    from relay.states import FINAL_STATES

    counts = conn.hgetall(Keys(settings.key_prefix).counts)
    return sum(int(counts.get(s.value.encode(), 0)) for s in FINAL_STATES)


def stop_process(proc: subprocess.Popen[Any], wait: float = STOP_WAIT_S) -> None:
    """SIGTERM ``proc`` (if running), wait, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds used by this process's children that have exited and been waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_cpu(conn: redis.Redis) -> float:
    """CPU seconds the Redis server used so far (``INFO cpu``; every client's work)."""
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def wait_until(check: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
    """Call ``check`` every ``poll`` seconds until it is true; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def workers_registered(conn: redis.Redis, settings: Settings, count: int) -> bool:
    """Whether ``count`` relay workers of ``settings``' prefix wrote a heartbeat."""
    from relay.keys import Keys

    beats = conn.hvals(Keys(settings.key_prefix).processes)
    return sum(1 for b in beats if b'"worker"' in b) >= count


def messages(
    count: int, devices: Iterable[int], *, body_len: int = 70, seed: int = 0, **fields: Any
) -> list[dict[str, Any]]:
    """``count`` send_many items spread round-robin over ``devices``; bodies of ``body_len``."""
    devs = list(devices)
    out = []
    for i in range(count):
        tag = f" #{seed}-{i}"
        body = "Your parcel is on its way, track it in the app" + "." * body_len
        out.append(
            {
                "sendto": f"+49157{(seed * 7919 + i) % 10**8:08d}",
                "body": body[: body_len - len(tag)] + tag,
                "device_id": devs[i % len(devs)],
                **fields,
            }
        )
    return out
