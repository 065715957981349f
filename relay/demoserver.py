"""The Redis server ``relay demo`` runs on when none is configured: the embedded engine
(:mod:`relay.embedded`), or fakeredis's TCP server where the engine is not installed; and the
clean-up of the demo's keys on a real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from relay.connection import connect, delete_prefix
from relay.log import get_logger
from relay.settings import Settings

log = get_logger("relay.demo")


@contextmanager
def embedded_redis() -> Iterator[tuple[str, str]]:
    """The embedded Redis engine (:mod:`relay.embedded`), stopped on exit; yields its URL and
    its name (``embedded valkey 9.1.2``).

    Where the engine is not installed (no wheel for this system), fakeredis's TCP server in
    a thread instead, with a warning: the demo still runs, slower and on a Python imitation.
    """
    from relay.embedded import EmbeddedServer
    from relay.errors import EmbeddedServerError

    try:
        server = EmbeddedServer().start()
    except EmbeddedServerError as exc:
        log.warning("demo_embedded_redis_unavailable", error=str(exc), instead="fakeredis")
        with fakeredis_server() as url:
            yield url, "embedded fakeredis"
        return
    try:
        yield server.url, f"embedded {server.engine}"
    finally:
        server.stop()


@contextmanager
def fakeredis_server() -> Iterator[str]:
    """fakeredis's TCP server on a free local port, in a daemon thread; yields its URL."""
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-redis", daemon=True)
    thread.start()
    host, port = str(server.server_address[0]), int(server.server_address[1])
    try:
        yield f"redis://{host}:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


def delete_keys(settings: Settings) -> None:
    """Remove the demo's keys from a real server (its own prefix, and its RQ queues)."""
    conn = connect(settings, check=False)
    try:
        delete_prefix(conn, settings.key_prefix)
    finally:
        conn.close()
