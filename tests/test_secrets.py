"""No secret leaks (docs/design.md, invariant 8), and jobs are JSON, never pickle.

- The whole pipeline (``relay send`` and the library → a real worker process → the gateway
  → a real reconciler process → events → webhooks to a local receiver → ``relay stats``
  and ``relay status``) runs with a known token (and, in a second run, a known email and
  password, the token then fetched with ``gettoken``) and a webhook secret; none of them is
  found in: the stderr of every process, any request path sent to the gateway, the RQ job
  payloads, any key or value under the prefix, the events stream, the webhook bodies and
  headers, the commands' output; on the real Redis server MONITOR shows none ever reached it.
- The log processor redacts tokens and passwords, in tracebacks too (structlog's and the
  stdlib's, which RQ uses).
- A pickled job planted in relay's queue (it would create a file if unpickled) is refused
  by a real burst worker: no file, the job failed, the worker goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import structlog
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from relay.connection import text
from relay.core import Relay
from relay.gateway import GatewayClient
from relay.keys import Keys
from relay.log import configure, get_logger, redact_secrets
from relay.settings import Settings, settings_env
from relay.simulator import SimDevice, Simulator
from relay.states import State
from tests.fixtures.redis import is_real
from tests.fixtures.replies import entries
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.workers import MakeSettings, StartWorkers
from tests.test_gateway_garbage import StubGateway

DEV = 260
RUN = uuid.uuid4().hex[:10]
TOKEN = f"tok{RUN}SECRETtoken"
EMAIL = f"ops-{RUN}@example.com"
PASSWORD = f"pw{RUN}SECRETpass"
HOOK_SECRET = f"whs{RUN}SECRETsign"
SECRETS = (TOKEN, PASSWORD, HOOK_SECRET)


def leaks(haystack: str | bytes, what: str) -> list[str]:
    """The secrets found in ``haystack`` (named by ``what`` in the failure)."""
    text = haystack.decode("utf-8", "replace") if isinstance(haystack, bytes) else haystack
    return [f"{what}: {secret[:6]}..." for secret in SECRETS if secret in text]


# --- helpers: a webhook receiver, MONITOR, Redis contents ------------------------------------


@dataclass
class Receiver:
    """A local webhook receiver: every POST's headers and body, answered 200."""

    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Monitor:
    """Everything a real Redis server is sent while it runs (MONITOR), as raw bytes."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self.sock.settimeout(0.2)
        self.sock.sendall(b"MONITOR\r\n")
        self.seen = bytearray()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop_event.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                return
            self.seen += chunk

    def stop(self) -> bytes:
        self.stop_event.set()
        self.thread.join(5)
        self.sock.close()
        return bytes(self.seen)


def redis_contents(conn: redis.Redis, keys: Keys) -> dict[str, bytes]:
    """Every key under the prefix and every RQ job of relay's queues → its whole value."""
    names = [text(n) for n in conn.keys(f"{keys.prefix}:*")]
    queues = [keys.urgent_queue, keys.bulk_queue, keys.webhook_queue]
    jobs: set[str] = set()
    for q in queues:
        queue = Queue(q, connection=conn)
        jobs.update(queue.get_job_ids())
        for registry in (
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.started_job_registry,
            queue.scheduled_job_registry,
            queue.deferred_job_registry,
        ):
            jobs.update(registry.get_job_ids())
    names += [f"rq:job:{job}" for job in jobs] + [f"rq:queue:{q}" for q in queues]
    return {name: _dump(conn, name) for name in names}


def every_rq_job(conn: redis.Redis) -> dict[str, bytes]:
    """Every ``rq:job:*`` hash on the server (other tests' too), payloads decompressed."""
    names = [n.decode() for n in conn.scan_iter(match="rq:job:*", count=10_000)]
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    jobs = {}
    for name, job in zip(names, pipe.execute(), strict=True):
        if isinstance(job, dict) and b"data" in job:
            with contextlib.suppress(zlib.error):  # not compressed: searched as it is
                job[b"data"] = zlib.decompress(job[b"data"])
        jobs[name] = repr(job).encode()
    return jobs


def _dump(conn: redis.Redis, name: str) -> bytes:
    kind = conn.type(name)
    value: Any
    if kind == b"string":
        value = conn.get(name)
    elif kind == b"hash":
        value = conn.hgetall(name)
        if b"data" in value:  # an RQ job: its payload is zlib-compressed; look inside
            value[b"data"] = zlib.decompress(value[b"data"])
    elif kind == b"list":
        value = conn.lrange(name, 0, -1)
    elif kind == b"set":
        value = conn.smembers(name)
    elif kind == b"zset":
        value = conn.zrange(name, 0, -1, withscores=True)
    elif kind == b"stream":
        value = conn.xrange(name)
    else:
        value = kind
    return repr(value).encode()


# --- the pipeline ------------------------------------------------------------------------------


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)

    def relay(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m relay args`` as a real process; keeps its stdout and stderr."""
        done = subprocess.run(
            [sys.executable, "-m", "relay", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.outputs[name] = done.stdout + done.stderr
        assert done.returncode == 0, (args, done.stderr)
        return done


def process_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return env | settings_env(settings)


@pytest.mark.slow
@pytest.mark.parametrize("auth", ["token", "login"])
def test_no_secret_leaks_anywhere_in_the_pipeline(
    auth: str,
    redis_url: str,
    relay_settings: MakeSettings,
    make_simulator: MakeSimulator,
    start_workers: StartWorkers,
    redis_conn: redis.Redis,
    tmp_path: Path,
) -> None:
    sim = make_simulator(
        [SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)],
        email=EMAIL,
        password=PASSWORD,
        token=TOKEN,
    )
    proxy = StubGateway(sim.url)  # forwards everything, keeping each request's path
    receiver = Receiver().start()
    credentials: dict[str, Any] = (
        {"gateway_token": TOKEN}
        if auth == "token"
        else {"gateway_email": EMAIL, "gateway_password": PASSWORD}
    )
    settings = relay_settings(
        gateway_url=proxy.url,
        **credentials,
        webhook_url=receiver.url,
        webhook_secret=HOOK_SECRET,
        log_level="DEBUG",
        reconcile_interval=0.2,
        reconcile_urgent_interval=0.1,
    )
    monitor = Monitor(redis_url) if is_real(redis_url) else None  # fakeredis has none
    pipe = Pipeline(settings, process_env(settings))
    try:
        ids = _run_pipeline(pipe, settings, sim, receiver, start_workers, redis_conn, tmp_path)
        contents = redis_contents(redis_conn, Keys(settings.key_prefix))
        contents |= every_rq_job(redis_conn)
    finally:
        seen_by_redis = monitor.stop() if monitor is not None else None
        proxy.stop()
        receiver.stop()
    found: list[str] = []
    for name, output in pipe.outputs.items():
        found += leaks(output, name)
    for path in proxy.paths:
        found += leaks(path, "request path")
    for name, value in contents.items():
        found += leaks(value, name)
    for headers, body in receiver.posts:
        found += leaks(json.dumps(headers), "webhook headers") + leaks(body, "webhook body")
    if seen_by_redis is not None:
        assert settings.key_prefix.encode() in seen_by_redis  # MONITOR did see relay's traffic
        found += leaks(seen_by_redis, "commands sent to Redis")
    assert found == []
    # the haystacks are the real ones: they hold what the pipeline did
    assert any(json.loads(body)["id"] == ids[0] for _, body in receiver.posts)
    assert "relay.dispatch.run_ticket" in pipe.outputs["queued jobs"]
    assert len(proxy.paths) >= 3 and ids[0] in pipe.outputs["status"]
    assert any(name.endswith(":events") for name in contents)
    assert "gateway.request" in pipe.outputs["worker"]  # DEBUG: every gateway call logged
    assert "gateway.request" in pipe.outputs["reconciler"]


def _run_pipeline(
    pipe: Pipeline,
    settings: Settings,
    sim: Simulator,
    receiver: Receiver,
    start_workers: StartWorkers,
    conn: redis.Redis,
    tmp_path: Path,
) -> list[str]:
    """send (CLI and library) → worker and reconciler processes → every message delivered
    and its events posted → stats and status; every process's output kept in ``pipe``."""
    keys = Keys(settings.key_prefix)
    sent = pipe.relay(
        "send",
        "send",
        "--to",
        "+4915752982212",
        "--body",
        "first",
        "--device",
        str(DEV),
        "--urgent",
        "--json",
    )
    ids: list[str] = json.loads(sent.stdout)
    with Relay(settings) as relay:
        ids += relay.send_many(
            [{"sendto": f"+49157{i:08d}", "body": f"m{i}", "device_id": DEV} for i in range(3)]
        )
    queued = redis_contents(conn, keys)  # the ticket jobs, not run yet: JSON payloads
    jobs = [name for name in queued if name.startswith("rq:job:")]
    assert jobs and all(_json_payload(conn, name) for name in jobs)  # never pickle
    pipe.outputs["queued jobs"] = repr(queued)
    (worker,) = start_workers(1, settings)
    reconciler_log = tmp_path / "reconciler.log"
    with reconciler_log.open("wb") as out:
        reconciler = subprocess.Popen(
            [sys.executable, "-m", "relay", "reconciler"],
            env=pipe.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_posted(conn, keys, ids, receiver)
    finally:
        for proc in (worker.proc, reconciler):
            proc.send_signal(signal.SIGTERM)
        for proc in (worker.proc, reconciler):
            proc.wait(30)
    pipe.outputs["worker"] = worker.log()
    pipe.outputs["reconciler"] = reconciler_log.read_text(errors="replace")
    pipe.relay("stats", "stats", "--json")
    pipe.relay("status", "status", ids[0], "--json")
    assert len(sim.ledger()) == 4
    return ids


def _json_payload(conn: redis.Redis, job_key: str) -> bool:
    """Whether the job's ``data`` is JSON (RQ stores it zlib-compressed)."""
    data = conn.hget(job_key, "data")
    assert not isinstance(data, str)  # the connection does not decode replies
    json.loads(zlib.decompress(data) if data else b"null")
    return True


def _wait_until_posted(conn: redis.Redis, keys: Keys, ids: list[str], receiver: Receiver) -> None:
    """Until every message is delivered and every event was posted (bounded, not timed)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = {conn.hget(keys.msg(i), "state") for i in ids}
        posted = {json.loads(body)["event_id"] for _, body in receiver.posts}
        events = {e for e, _ in entries(conn, keys.events)}
        if states == {State.DELIVERED.value.encode()} and events <= posted:
            return
        time.sleep(0.1)
    raise AssertionError(f"pipeline did not finish: {states}, {len(posted)}/{len(events)} posted")


# --- the log processor -------------------------------------------------------------------------


@pytest.fixture
def registered() -> Iterator[None]:
    """A gateway client made with the secrets registers them, as in a worker."""
    client = GatewayClient(
        "http://127.0.0.1:9/getdata/", token=TOKEN, email=EMAIL, password=PASSWORD
    )
    yield
    client.close()


def test_structlog_processor_redacts_token_and_password(registered: None) -> None:
    log = get_logger("relay.test")
    with structlog.testing.capture_logs(processors=[redact_secrets]) as logs:
        log.info(
            "gateway.call",
            token=TOKEN,
            password=PASSWORD,
            email=EMAIL,
            url=f"https://gw.example/getdata/getallsms?token={TOKEN}",
            form={"datajson": json.dumps({"token": TOKEN}), "pass": PASSWORD},
            note=f"the answer was {TOKEN}",
            items=[f"pass={PASSWORD}"],
        )
    text = json.dumps(logs)
    assert leaks(text, "captured log") == []
    assert logs[0]["token"] == "***" and logs[0]["email"] == EMAIL
    assert logs[0]["note"] == "the answer was ***"


def test_stderr_logs_redact_secrets_in_exceptions_too(
    registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("DEBUG", json=True)
    log = get_logger("relay.test")
    try:
        raise RuntimeError(f"gateway said: bad token {TOKEN} for password {PASSWORD}")
    except RuntimeError:
        log.exception("dispatch.failed", detail=f"token={TOKEN}")
        logging.getLogger("rq.worker").error("job failed: %s", TOKEN, exc_info=True)
    err = capsys.readouterr().err
    assert "RuntimeError: gateway said: bad token *** for password ***" in err
    assert err.count("Traceback") == 2
    assert leaks(err, "stderr") == []


# --- pickle ------------------------------------------------------------------------------------


class Planted:
    """Unpickling this creates the file ``path`` (``open(path, "w")``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_pickled_job_in_relays_queue_is_refused_not_executed(
    relay_settings: MakeSettings,
    make_simulator: MakeSimulator,
    redis_conn: redis.Redis,
    tmp_path: Path,
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Planted(str(control))))
    assert control.exists()  # the payload is live: unpickled, it does create its file
    marker = tmp_path / "pwned"
    sim = make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)])
    settings = relay_settings(sim)
    keys = Keys(settings.key_prefix)
    with Relay(settings) as relay:
        msg_id = relay.send("+4915752982212", "fine", DEV)
    pickled = Queue(keys.bulk_queue, connection=redis_conn)  # RQ's default serializer: pickle
    job = pickled.enqueue_call("builtins.print", args=(Planted(str(marker)),))
    assert not marker.exists()
    done = subprocess.run(
        [sys.executable, "-m", "relay", "worker", "--burst"],
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "the pickled payload was executed"
    assert redis_conn.hget(f"rq:job:{job.id}", "status") == b"failed"
    assert job.id in FailedJobRegistry(queue=pickled).get_job_ids()
    assert job.id not in FinishedJobRegistry(queue=pickled).get_job_ids()
    assert "DeserializationError" in done.stderr
    with Relay(settings) as relay:  # the worker went on with relay's own jobs
        assert relay.status(msg_id).state == State.SUBMITTED
