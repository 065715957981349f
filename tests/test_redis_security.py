"""Redis with a password-protected ACL user and Redis over TLS (``rediss://``).

- On the real Redis server an ACL user of this test (``ACL SETUSER``, deleted afterwards)
  may touch only relay's keys (``<prefix>:*``) and RQ's (``rq:*``); relay sends and a real
  burst worker dispatches with ``redis://user:password@...``, and the password shows up in
  no output; a wrong password is one line with the password hidden.
- A TLS-only Redis server of this test (a self-signed CA and server certificate made
  with the openssl command) takes a send and a burst worker over ``rediss://``, the CA
  checked; a plain-text client is refused on that port. The binary is the one
  :func:`relay.embedded.server_binary` finds (PATH first); the embedded engine is built
  without TLS, so on a machine with only that the test is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from relay.core import Relay
from relay.embedded import server_binary
from relay.settings import Settings, load_settings, settings_env
from relay.simulator import SimDevice, Simulator
from relay.states import State
from tests.fixtures.simulator import MakeSimulator

DEV = 260
NO_TLS = ("not supported", "Unrecognized", "Failed finding TLS support")
"""What a server built without TLS says when given ``--tls-port`` (Redis, Valkey)."""


def run_relay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m relay args`` configured only by ``RELAY_*`` variables, as deployed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env |= settings_env(settings)
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], env=env, capture_output=True, text=True, timeout=120
    )


def send_and_dispatch(settings: Settings, sim: Simulator) -> subprocess.CompletedProcess[str]:
    """Three messages sent with the library, then a real burst worker; all must be stored."""
    with Relay(settings) as relay:
        ids = relay.send_many(
            [{"sendto": f"+4915752{i:06d}", "body": f"m{i}", "device_id": DEV} for i in range(3)]
        )
    worker = run_relay(settings, "worker", "--burst")
    assert worker.returncode == 0, worker.stderr
    with Relay(settings) as relay:
        assert [relay.status(i).state for i in ids] == [State.SUBMITTED] * 3
    assert sorted(e.body for e in sim.ledger()) == ["m0", "m1", "m2"]
    return worker


@pytest.fixture
def sim(make_simulator: MakeSimulator) -> Simulator:
    return make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)])


# --- an ACL user -----------------------------------------------------------------------------


@pytest.fixture
def acl_user(real_redis_url: str) -> Iterator[tuple[str, str, str]]:
    """(user, password, key prefix): a user allowed relay's and RQ's keys only."""
    run = uuid.uuid4().hex[:10]
    user, password, prefix = f"relay-test-{run}", f"acl{run}SECRET", f"acl{run}"
    admin = redis.Redis.from_url(real_redis_url)
    admin.acl_setuser(  # ACL SETUSER <user> reset on ><password> +@all -@dangerous ...
        user,
        reset=True,
        enabled=True,
        passwords=[f"+{password}"],
        categories=["+@all", "-@dangerous"],
        commands=["+info", "+client|setname", "+client|getname"],
        keys=[f"{prefix}:*", "rq:*"],
        channels=["*"],
    )
    try:
        yield user, password, prefix
    finally:
        admin.acl_deluser(user)
        stale = list(admin.scan_iter(match=f"{prefix}:*", count=1000))
        stale += list(admin.scan_iter(match=f"rq:*{prefix}*", count=1000))
        if stale:
            admin.delete(*stale)
        admin.close()


def test_an_acl_user_sends_and_a_worker_dispatches(
    real_redis_url: str, acl_user: tuple[str, str, str], sim: Simulator
) -> None:
    user, password, prefix = acl_user
    host = real_redis_url.split("://", 1)[1]
    settings = load_settings(
        redis_url=f"redis://{user}:{password}@{host}",
        key_prefix=prefix,
        gateway_url=sim.url,
        gateway_token=sim.token,
        log_json=True,
    )
    me = redis.Redis.from_url(settings.redis_url)
    assert me.acl_whoami() == user
    with pytest.raises(redis.exceptions.NoPermissionError):
        me.set("not-relays-key", "x")  # the user really is limited to relay's keys
    worker = send_and_dispatch(settings, sim)
    reconciler = run_relay(settings, "reconciler", "--once")
    stats = run_relay(settings, "stats", "--json")
    dead = run_relay(settings, "dead", "list", "--json")
    runs = (worker, reconciler, stats, dead)
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    assert json.loads(reconciler.stdout)["errors"] == 0
    for run in runs:
        assert "permission" not in run.stderr.lower(), run.stderr  # nothing outside its keys
        assert password not in run.stdout + run.stderr


def test_a_wrong_password_is_one_line_with_the_password_hidden(
    real_redis_url: str, acl_user: tuple[str, str, str]
) -> None:
    user, _, prefix = acl_user
    host = real_redis_url.split("://", 1)[1]
    wrong = f"wrong{uuid.uuid4().hex[:8]}"
    settings = load_settings(redis_url=f"redis://{user}:{wrong}@{host}", key_prefix=prefix)
    done = run_relay(settings, "stats")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert wrong not in done.stderr and user in lines[0] and "***" in lines[0], lines[0]


# --- TLS ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(workdir: Path) -> None:
    """A CA and a server certificate signed by it for 127.0.0.1/localhost, in ``workdir``."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=relay test CA",
        cwd=workdir,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=workdir,
    )
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        cwd=workdir,
    )


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A TLS-only Redis server (no plain port): (its rediss:// URL with the CA, its port)."""
    binary = server_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs a Redis server binary and the openssl command")
    make_certificates(tmp_path)
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.crt'}"
    try:
        _wait_ready(proc, url, binary)
        yield url, port
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, binary: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            said = [line for line in out.splitlines() if any(s in line for s in NO_TLS)]
            if said and "TLS" in said[-1]:
                pytest.skip(f"{binary} has no TLS support: {said[-1].strip()[-120:]}")
            raise RuntimeError(f"redis-server with TLS did not start: {out[-500:]}")
        try:
            if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server with TLS did not answer in 20 s")


def test_rediss_sends_and_dispatches_over_tls(tls_redis: tuple[str, int], sim: Simulator) -> None:
    url, port = tls_redis
    plain = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()  # the port speaks TLS only: the traffic below is encrypted
    settings = load_settings(
        redis_url=url,
        key_prefix=f"tls{uuid.uuid4().hex[:8]}",
        gateway_url=sim.url,
        gateway_token=sim.token,
        log_json=True,
    )
    send_and_dispatch(settings, sim)
    status = run_relay(settings, "stats", "--json")
    assert status.returncode == 0, status.stderr
