"""Running the app: ``relay serve`` (uvicorn with uvloop and httptools).

The socket is bound here first, so a port in use is one clear line and exit 1, not a
traceback. ``--workers N`` > 1 runs N server processes on that one socket (uvicorn's
supervisor; the app is made in each from the ``RELAY_*`` environment, so every process
sees the same keys and settings: both live in Redis and the environment). SIGTERM (and
Ctrl-C) stops taking connections, lets requests in flight finish (at most
``RELAY_API_SHUTDOWN_TIMEOUT`` seconds), ends open event streams, and exits 0.
"""

from __future__ import annotations

import errno
import inspect
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any

from relay.errors import RelayError
from relay.log import get_logger
from relay.settings import Settings, settings_env

log = get_logger(__name__)

APP = "relay.api.app:app_from_env"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by ``relay serve --workers N`` (N > 1) to a directory of its own: request metrics
are then counted across the server processes (prometheus_client's multiprocess mode)."""


class PortUnavailable(RelayError):
    """The address relay serve should listen on is taken (or not allowed). Pick another
    ``--port`` / ``RELAY_API_PORT``, or stop what holds it."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = {
            errno.EADDRINUSE: "the address is already in use",
            errno.EACCES: "permission denied",
            errno.EADDRNOTAVAIL: "no such address on this machine",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise PortUnavailable(f"cannot listen on {host}:{port}: {why}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _exit_zero(_signum: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Serve the API until SIGTERM/SIGINT. Raises :class:`PortUnavailable` up front."""
    import uvicorn

    sock = bind(host, port)
    bound = sock.getsockname()[1]
    # the app is made in every server process from the environment: hand the settings on
    os.environ.update(settings_env(settings))
    config = uvicorn.Config(
        APP,
        factory=True,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        workers=workers,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.api_shutdown_timeout),
        backlog=2048,
    )
    log.info("serve.listening", url=f"http://{host}:{bound}", workers=workers)
    # uvicorn re-raises the stop signal after its graceful shutdown: end with exit 0 then
    signal.signal(signal.SIGTERM, _exit_zero)
    if workers > 1:
        _serve_processes(config, sock)
    else:
        uvicorn.Server(config).run(sockets=[sock])
    log.info("serve.stopped")


def _serve_processes(config: Any, sock: socket.socket) -> None:
    """uvicorn's supervisor over ``config.workers`` processes, request metrics shared
    through a directory of this run's own (prometheus_client's multiprocess mode)."""
    import shutil
    import tempfile

    from uvicorn.supervisors import Multiprocess

    metrics_dir = tempfile.mkdtemp(prefix="relay-serve-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before 0.36
            import uvicorn

            target = uvicorn.Server(config).run
            Multiprocess(config, target=target, sockets=[sock]).run()  # type: ignore[call-arg]
        else:
            Multiprocess(config, sockets=[sock]).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class ServerThread:
    """The app served by uvicorn from a thread of this process (the demo, tests): ``url``
    once started, :meth:`stop` to end it."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        import uvicorn

        from relay.api.app import create_app

        self.sock = bind(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings),
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="relay-api", daemon=True
        )

    def start(self, timeout: float = 20.0) -> ServerThread:
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
