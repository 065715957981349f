"""A real Redis server with AOF persistence on a port of its own, killed and restarted by tests.

The binary is ``redis-server`` (or ``valkey-server``) on PATH, else the embedded engine's
(:func:`relay.embedded.server_binary`), so this runs on a machine with no Redis installed.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

from relay.embedded import server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A Redis server with ``appendonly yes`` / ``appendfsync always`` in ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = server_binary()
        if binary is None:
            raise RuntimeError("no redis-server on PATH and the embedded engine is not installed")
        self.binary = str(binary)
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                if conn.ping():
                    # AOF loading answers LOADING errors until done; ping raises then.
                    conn.close()
                    return
            except redis.RedisError:
                time.sleep(0.05)
        log = self.workdir / "redis.log"
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; AOF (fsync always) keeps every acknowledged write."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
