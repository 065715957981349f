"""Connections: ``redis+sentinel://`` settings, hidden passwords, and what a broken connection
does — a call whose reply was lost is not sent again, a server that is away is waited for,
and RQ's loop in a worker outlives an error of its own."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from relay.api.app import redis_for
from relay.connection import RedisUnavailable, connect, connect_async, safe_url
from relay.context import Context
from relay.errors import ConfigError
from relay.run.worker import make_worker
from relay.sentinel import parse_sentinel_url
from relay.settings import load_settings
from tests.fixtures.replication import Node, free_port, require_redis_server
from tests.fixtures.workers import MakeSettings

# --- redis+sentinel:// ----------------------------------------------------------------------


def test_a_sentinel_url_names_sentinels_master_db_and_the_data_nodes_password() -> None:
    url = parse_sentinel_url("redis+sentinel://app:s%40cret@h1:26380,h2,[::1]:26381/main/3")
    assert url.sentinels == (("h1", 26380), ("h2", 26379), ("::1", 26381))
    assert (url.master, url.db, url.username, url.password) == ("main", 3, "app", "s@cret")
    plain = parse_sentinel_url("redis+sentinel://h1:26379/main")
    assert (plain.db, plain.username, plain.password) == (0, None, None)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis+sentinel:///main/0", "no Sentinel host"),
        ("redis+sentinel://h1:26379", "no master"),
        ("redis+sentinel://h1:26379/", "no master"),
        ("redis+sentinel://h1:26379/main/x", "database"),
        ("redis+sentinel://h1:263x9/main/0", "no valid port"),
        ("redis+sentinel://h1:26379/main/0?ssl=1", "no query"),
        ("sentinel://h1:26379/main/0", "redis+sentinel://"),
    ],
)
def test_a_bad_redis_url_is_refused_naming_the_variable(url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url=url.replace("h1", ":hunter22@h1") if "h1" in url else url)
    message = str(caught.value)
    assert message.startswith("RELAY_REDIS_URL: ") and needle in message, message
    assert "hunter22" not in message


def test_safe_url_hides_every_password() -> None:
    assert safe_url("redis+sentinel://:pw1@h1:1,h2:2/m/0") == "redis+sentinel://:***@h1:1,h2:2/m/0"
    assert safe_url("redis://app:pw2@h:6379/0") == "redis://app:***@h:6379/0"
    assert safe_url("redis://h:6379/0?password=pw3&db=1") == "redis://h:6379/0?password=***&db=1"
    assert safe_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_the_sentinel_password_is_a_secret_setting() -> None:
    settings = load_settings(
        redis_url="redis+sentinel://h1:26379/main/0", redis_sentinel_password="topsecret1"
    )
    assert "topsecret1" not in repr(settings)


def test_no_sentinel_answering_is_one_clear_error() -> None:
    port = free_port()  # nothing listens there
    settings = load_settings(
        redis_url=f"redis+sentinel://:pw9999@127.0.0.1:{port}/main/0",
        redis_reconnect_timeout=30,
    )
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as caught:
        connect(settings)
    assert "main" in str(caught.value) and "pw9999" not in str(caught.value)
    assert time.monotonic() - started < 10  # the start-up check does not wait for a server


# --- a broken connection ---------------------------------------------------------------


class SwallowingServer:
    """Speaks just enough RESP for redis-py's handshake, then takes ``SET`` commands without
    ever answering them: it closes the connection instead, as a dying server would."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sets = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                command = _read_command(reader)
                if command is None:
                    return
                name = command[0].upper()
                if name == b"SET":
                    self.sets += 1
                    return  # the reply is lost
                if name == b"HELLO":  # as a RESP2-only server: redis-py falls back
                    conn.sendall(b"-ERR unknown command 'HELLO'\r\n")
                else:
                    conn.sendall(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")

    def close(self) -> None:
        self.listener.close()


def _read_command(reader: BinaryIO) -> list[bytes] | None:
    line = reader.readline()
    if not line.startswith(b"*"):
        return None
    parts = []
    for _ in range(int(line[1:])):
        size = int(reader.readline()[1:])
        parts.append(reader.read(size + 2)[:-2])
    return parts


@pytest.fixture
def swallowing() -> Iterator[SwallowingServer]:
    server = SwallowingServer()
    yield server
    server.close()


def test_a_call_whose_reply_was_lost_is_not_sent_again(swallowing: SwallowingServer) -> None:
    settings = load_settings(redis_url=f"redis://127.0.0.1:{swallowing.port}/0")
    conn = connect(settings, check=False)
    with pytest.raises(redis.ConnectionError):
        conn.set("k", "v")
    assert swallowing.sets == 1  # it may have run: sending it again could run it twice
    conn.close()


def test_a_server_that_is_away_is_waited_for(tmp_path: Path) -> None:
    require_redis_server()
    node = Node(tmp_path / "late", args=[])
    settings = load_settings(
        redis_url=f"redis://127.0.0.1:{node.port}/0", redis_reconnect_timeout=20
    )
    conn = connect(settings, check=False)
    starter = threading.Timer(1.0, node.start)
    starter.start()
    try:
        assert conn.set("k", "v")  # refused at first: waits, then goes through
        assert node.client().get("k") == b"v"
        node.kill()
        node.start()  # the same port, a new process: the pooled connection is dead
        assert conn.set("k", "w")
    finally:
        starter.join()
        conn.close()
        node.stop()


def test_without_patience_a_server_away_is_an_error_at_once() -> None:
    settings = load_settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_reconnect_timeout=0
    )
    conn = connect(settings, check=False)
    with pytest.raises(redis.ConnectionError):
        conn.ping()
    conn.close()


# --- RQ's loop ------------------------------------------------------------------------------


def test_the_worker_starts_rqs_loop_again_after_an_error_of_its_own(
    relay_settings: MakeSettings,
) -> None:
    """RQ quits its loop on any error outside a job (a Redis reply lost in a failover); the
    relay worker starts it again under the same name, and stops only when told to."""
    ctx = Context.from_settings(relay_settings())
    worker = make_worker(ctx, install_signals=False)
    stop = threading.Event()
    worker.stop_event = stop
    queue = Queue(ctx.keys.webhook_queue, connection=ctx.conn, serializer=JSONSerializer)
    failures = {"left": 1}
    original = worker.execute_job

    def flaky(job: Job, queue: Queue) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise redis.ConnectionError("Connection closed by server.")
        original(job, queue)
        stop.set()

    # the lost reply injected into this one worker: replacing its method is the point
    worker.execute_job = flaky  # type: ignore[method-assign]
    first = queue.enqueue("builtins.len", "ab")
    second = queue.enqueue("builtins.len", "abc")
    worker.work_until_stopped("WARNING")  # here: RQ runs jobs on the main thread only
    assert Job.fetch(second.id, connection=ctx.conn).get_status() == "finished"
    assert first.id != second.id
    ctx.close()


# --- a primary that was demoted -------------------------------------------------------------


class StaleSentinels:
    """Sentinels answering an old primary first — now a replica — then the new one: what a
    client can meet in the instant of a failover (real Sentinels cannot be made to do it
    on cue, so this one stands in for them; the servers behind it are real)."""

    def __init__(self, *ports: int) -> None:
        self.answers = [("127.0.0.1", port) for port in ports]
        self.asked = 0

    def discover_master(self, service_name: str) -> tuple[str, int]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer


def test_a_write_refused_by_a_demoted_primary_goes_to_the_new_one(tmp_path: Path) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from relay.connection import FollowingConnection, PatientSentinelPool, PrimaryMoved
    from tests.fixtures.replication import replica_set

    with replica_set(tmp_path / "pair", replicas=1) as rs:
        sentinels = StaleSentinels(rs.replicas[0].port, rs.primary.port)
        pool = PatientSentinelPool(
            "main",
            sentinels,
            connection_class=FollowingConnection,
            retry=Retry(NoBackoff(), 2, supported_errors=(PrimaryMoved,)),
        )
        conn = redis.Redis.from_pool(pool)
        assert conn.set("moved", "yes")  # READONLY from the replica, then the primary
        assert sentinels.asked == 2
        assert rs.primary.client().get("moved") == b"yes"
        conn.close()


# --- socket timeouts: a lost reply never hangs a thread ----------------------------------------


def test_every_relay_redis_connection_has_the_socket_timeout(relay_settings: MakeSettings) -> None:
    settings = relay_settings(redis_socket_timeout=21)
    conn = connect(settings)
    assert conn.connection_pool.connection_kwargs["socket_timeout"] == 21
    worker = make_worker(Context.from_settings(settings, conn=conn), install_signals=False)
    # RQ raises a pool's timeout to its BLPOP wait + 10 s: relay's stays, BLPOP fits inside
    assert worker.connection.connection_pool.connection_kwargs["socket_timeout"] == 21
    assert worker.dequeue_timeout + 5 <= 21
    api = redis_for(settings)
    assert api.connection_pool.connection_kwargs["socket_timeout"] == settings.api_redis_timeout
    streams = connect_async(settings)
    assert streams.connection_pool.connection_kwargs["socket_timeout"] == 21
    for client in (conn, api):
        client.close()


def test_sentinel_connections_have_the_socket_timeout() -> None:
    settings = load_settings(
        redis_url="redis+sentinel://127.0.0.1:1/main/0", redis_socket_timeout=22
    )
    conn = connect(settings, check=False)
    assert conn.connection_pool.connection_kwargs["socket_timeout"] == 22
    streams = connect_async(settings)
    assert streams.connection_pool.connection_kwargs["socket_timeout"] == 22
    conn.close()


def test_the_socket_timeout_must_exceed_the_replica_wait() -> None:
    with pytest.raises(ConfigError, match="RELAY_REDIS_SOCKET_TIMEOUT must exceed"):
        load_settings(redis_socket_timeout=20, redis_wait_timeout=20)
    with pytest.raises(ConfigError, match="RELAY_REDIS_SOCKET_TIMEOUT"):
        load_settings(redis_socket_timeout=5)  # RQ's dequeue must fit inside it
