"""The ``relay`` command: sends, files, reads, and every user error as one line and an exit code.

Each Redis test runs on a real server and on fakeredis's TCP server (``redis_url``); the
settings reach the command as ``RELAY_*`` environment variables, as they would in a shell.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
import structlog
from click.testing import CliRunner, Result

from relay.cli.files import FIELDS as FILE_FIELDS
from relay.cli.main import cli
from relay.clock import SystemClock
from relay.connection import text
from relay.keys import Keys
from relay.settings import ENV_PREFIX, Settings, load_settings
from relay.simulator import Simulator

DEAD_REDIS = "redis://127.0.0.1:1/0"


def invoke(args: Sequence[str], env: dict[str, str] | None = None) -> Result:
    """Run ``relay args`` in-process; any exception other than the exit itself fails the test."""
    result = CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"relay {' '.join(args)} raised") from result.exception
    return result


def one_line_error(result: Result, code: int, *needles: str) -> str:
    """Assert ``result`` failed with ``code`` and one stderr line holding every needle."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The commands configure structlog and the root logger for the process: undo it after."""
    config = structlog.get_config()
    processors = list(config["processors"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    config["processors"][:] = processors  # same list object: bound loggers keep it
    structlog.configure(**{**config, "processors": config["processors"]})
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def env(redis_url: str, key_prefix: str) -> dict[str, str]:
    return {"RELAY_REDIS_URL": redis_url, "RELAY_KEY_PREFIX": key_prefix}


def stored_keys(redis_url: str, prefix: str) -> list[bytes]:
    conn = redis.Redis.from_url(redis_url)
    try:
        return list(conn.scan_iter(match=f"{prefix}:*"))
    finally:
        conn.close()


def record(redis_url: str, prefix: str, msg_id: str) -> dict[str, str]:
    conn = redis.Redis.from_url(redis_url)
    try:
        return {text(k): text(v) for k, v in conn.hgetall(Keys(prefix).msg(msg_id)).items()}
    finally:
        conn.close()


SEND = ["send", "--to", "+4915752982212", "--body", "hello", "--device", "260"]


# --- sending --------------------------------------------------------------------------


def test_send_prints_the_id_and_status_reads_it_back(env: dict[str, str]) -> None:
    result = invoke([*SEND, "--urgent", "--customer-id", "42"], env)
    assert result.exit_code == 0, result.stderr
    msg_id = result.stdout.strip()
    assert msg_id and "\n" not in msg_id

    status = invoke(["status", msg_id, "--json"], env)
    assert status.exit_code == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["id"] == msg_id
    assert data["state"] == "queued"
    assert (data["sendto"], data["device_id"], data["sim"]) == ("+4915752982212", 260, 0)
    assert data["urgent"] is True and data["customerid"] == 42

    table = invoke(["status", msg_id], env)
    assert table.exit_code == 0 and msg_id in table.stdout and "queued" in table.stdout


def test_send_several_recipients_and_json(env: dict[str, str], redis_url: str) -> None:
    to = ["+4915700000001", "+4915700000002", "+4915700000003"]
    args = ["send", "--body", "hi", "--device", "261", "--sim", "1", "--json"]
    for number in to:
        args += ["--to", number]
    result = invoke(args, env)
    assert result.exit_code == 0, result.stderr
    ids = json.loads(result.stdout)
    assert len(ids) == 3 and len(set(ids)) == 3
    sendtos = [record(redis_url, env["RELAY_KEY_PREFIX"], i)["sendto"] for i in ids]
    assert sendtos == to


def test_send_with_ttl_stores_its_deadline(env: dict[str, str]) -> None:
    result = invoke([*SEND, "--ttl", "300"], env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(invoke(["status", result.stdout.strip(), "--json"], env).stdout)
    created = datetime.fromisoformat(data["times"]["queued"])
    assert datetime.fromisoformat(data["expires"]) - created == timedelta(seconds=300)


def test_send_with_key_returns_the_first_id(env: dict[str, str]) -> None:
    first = invoke([*SEND, "--key", "order-7"], env)
    again = invoke([*SEND, "--key", "order-7"], env)
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--to", "+49 157 abc", "--body", "x", "--device", "260"], ["sendto", "letters"]),
        (["--to", "+4915700000001", "--body", "x", "--device", "260", "--sim", "9"], ["sim"]),
        (
            ["--to", "+4915700000001,+4915700000002", "--body", "x", "--device", "260"],
            ["sendto", "--to"],
        ),
        (["--to", "+4915700000001", "--body", "   ", "--device", "260"], ["body"]),
        (["--to", "+4915700000001", "--body", "x", "--device", "0"], ["device_id"]),
        (
            ["--to", "+4915700000001", "--body", "x", "--device", "260", "--at", "soon"],
            ["timetosend"],
        ),
        (["--to", "+4915700000001", "--device", "260"], ["--body"]),
        (["--to", "+4915700000001", "--body", "x"], ["--device"]),
        (["--body", "x", "--device", "260"], ["--to"]),
        (["--to", "+4915700000001", "--body", "x", "--device", "abc"], ["device_id"]),
        # digits of other scripts: refused as the library refuses them, naming the field
        (
            ["--to", "+4915700000001", "--body", "x", "--device", "\u0662\u0666\u0660"],
            ["device_id"],
        ),
        (["--to", "+4915700000001", "--body", "x", "--device", "260", "--sim", "\u0661"], ["sim"]),
        (
            ["--to", "+4915700000001", "--body", "x", "--device", "260", "--customer-id", "\uff17"],
            ["customerid"],
        ),
        (
            [
                "--to",
                "+4915700000001",
                "--to",
                "+4915700000002",
                "--body",
                "x",
                "--device",
                "260",
                "--key",
                "k",
            ],
            ["--key"],
        ),
        (["--to", "+4915700000001", "--body", "x", "--device", "260", "--ttl", "0"], ["ttl"]),
        (["--to", "+4915700000001", "--body", "x", "--device", "260", "--ttl", "soon"], ["ttl"]),
        (["--bogus"], ["--bogus"]),
    ],
)
def test_bad_send_input_is_one_line_exit_2_and_stores_nothing(
    env: dict[str, str], redis_url: str, args: list[str], needles: list[str]
) -> None:
    result = invoke(["send", *args], env)
    one_line_error(result, 2, *needles)
    assert result.stdout == ""
    assert stored_keys(redis_url, env["RELAY_KEY_PREFIX"]) == []


# --- files ----------------------------------------------------------------------------

ROWS = [
    {"sendto": "+4915700000011", "body": "one", "device_id": 260},
    {"sendto": "+4915700000012", "body": "two", "device_id": 260, "sim": 1, "urgent": True},
    {
        "sendto": "+4915700000013",
        "body": "three, with a comma",
        "device_id": 261,
        "customerid": 9,
        "key": "k-3",
    },
    {
        "sendto": "+4915700000014",
        "body": "four",
        "device_id": 261,
        "timetosend": "2099-01-01",
        "ttl": 600,
    },
]


def write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    fields = list(FILE_FIELDS)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("true" if v is True else v) for k, v in row.items()})
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_send_file_prints_ids_in_input_order(
    env: dict[str, str], redis_url: str, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"messages.{fmt}"
    (write_jsonl if fmt == "jsonl" else write_csv)(path, ROWS)
    result = invoke(["send", "--file", str(path), "--json"], env)
    assert result.exit_code == 0, result.stderr
    ids = json.loads(result.stdout)
    assert len(ids) == len(ROWS) and all(isinstance(i, str) for i in ids)
    records = [record(redis_url, env["RELAY_KEY_PREFIX"], i) for i in ids]
    assert [r["sendto"] for r in records] == [row["sendto"] for row in ROWS]
    assert [r["body"] for r in records] == [row["body"] for row in ROWS]
    assert [r["state"] for r in records] == ["queued", "queued", "queued", "scheduled"]
    assert records[1]["urgent"] == "1" and records[1]["sim"] == "1"
    assert records[2]["customerid"] == "9"
    assert "exp" not in records[2] and int(records[3]["exp"]) > 0

    plain = invoke(["send", "--file", str(path)], env)  # same keys: k-3 gives the same id
    assert plain.exit_code == 0
    assert plain.stdout.splitlines()[2] == ids[2]


def test_send_file_reports_every_bad_line_and_stores_nothing(
    env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            ROWS[0],
            {"sendto": "call me", "body": "x", "device_id": 260},  # line 2
            "\n",  # line 3: blank, skipped
            "{not json\n",  # line 4
            {"sendto": "+4915700000001", "body": "x", "device_id": 260, "sim": 7},  # line 5
            ROWS[1],
            {"sendto": "+4915700000001", "device_id": 260},  # line 7
            {"sendto": "+4915700000001", "body": "x", "device_id": 260, "colour": "red"},  # 8
        ],
    )
    result = invoke(["send", "--file", str(path)], env)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    expected = [
        ("line 2:", "sendto"),
        ("line 4:", "JSON"),
        ("line 5:", "sim"),
        ("line 7:", "body"),
        ("line 8:", "colour"),
    ]
    assert len(lines) == len(expected) + 1
    for line, (where, field) in zip(lines, expected, strict=False):
        assert line.startswith(where) and field in line, line
    assert "5 invalid" in lines[-1] and "nothing was sent" in lines[-1]
    assert result.stdout == ""
    assert stored_keys(redis_url, env["RELAY_KEY_PREFIX"]) == []


def test_send_file_skip_invalid_sends_the_rest(
    env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    rows = [
        dict(ROWS[0]),
        {"sendto": "+4915700000001", "body": "", "device_id": 260},
        dict(ROWS[1]),
    ]
    path = write_csv(tmp_path / "m.csv", rows)
    result = invoke(["send", "--file", str(path), "--skip-invalid", "--json"], env)
    assert result.exit_code == 0, result.stderr
    ids = json.loads(result.stdout)
    assert ids[1] is None and isinstance(ids[0], str) and isinstance(ids[2], str)
    assert "skipped line 3: body" in result.stderr  # the CSV header is line 1
    prefix = env["RELAY_KEY_PREFIX"]
    assert record(redis_url, prefix, ids[2])["sendto"] == rows[2]["sendto"]
    conn = redis.Redis.from_url(redis_url)
    try:
        assert len(list(conn.scan_iter(match=f"{prefix}:m:*"))) == 2
    finally:
        conn.close()


def test_send_file_format_option_and_unknown_extension(env: dict[str, str], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "messages.txt", ROWS[:1])
    one_line_error(invoke(["send", "--file", str(path)], env), 2, "--format")
    result = invoke(["send", "--file", str(path), "--format", "jsonl"], env)
    assert result.exit_code == 0 and len(result.stdout.split()) == 1
    one_line_error(invoke(["send", "--file", str(tmp_path / "missing.csv")], env), 2, "missing.csv")


# --- status, cancel, stats ------------------------------------------------------------


def test_unknown_id_is_one_line_exit_1(env: dict[str, str]) -> None:
    one_line_error(invoke(["status", "nosuchid"], env), 1, "nosuchid")
    one_line_error(invoke(["cancel", "nosuchid", "--json"], env), 1, "nosuchid")


def test_cancel_then_cancel_again(env: dict[str, str]) -> None:
    msg_id = invoke(SEND, env).stdout.strip()
    result = invoke(["cancel", msg_id, "--json"], env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "cancelled"
    one_line_error(invoke(["cancel", msg_id], env), 1, "cancelled")


def test_stats_json_and_table(env: dict[str, str]) -> None:
    for _ in range(3):
        invoke(SEND, env)
    invoke([*SEND, "--urgent"], env)
    result = invoke(["stats", "--json"], env)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["states"]["queued"] == 4 and data["idle"] is False
    [lane] = data["lanes"]
    assert (lane["device_id"], lane["sim"], lane["urgent"], lane["bulk"]) == (260, 0, 1, 3)
    table = invoke(["stats"], env)
    assert table.exit_code == 0 and "Lanes" in table.stdout and "queued" in table.stdout


def test_stats_watch_refreshes_until_ctrl_c(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks: list[float] = []

    def sleep(_clock: SystemClock, seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(SystemClock, "sleep", sleep)
    invoke(SEND, env)
    result = invoke(["stats", "--watch"], env)
    assert result.exit_code == 0, result.stderr
    assert ticks == [1.0, 1.0, 1.0]
    assert "Lanes" in result.stdout and "queued 1" in result.stdout
    one_line_error(invoke(["stats", "--watch", "--json"], env), 2, "--watch")


def test_devices_syncs_from_the_gateway(env: dict[str, str], simulator: Simulator) -> None:
    env = {
        **env,
        "RELAY_GATEWAY_URL": simulator.url,
        "RELAY_GATEWAY_TOKEN": simulator.token,
        "RELAY_DEVICE_OVERRIDES": '{"261": 0.5}',
    }
    result = invoke(["devices", "--json"], env)
    assert result.exit_code == 0, result.stderr
    devices = {d["id"]: d for d in json.loads(result.stdout)}
    assert set(devices) == {260, 261}
    assert devices[260]["sims"]["0"]["interval_s"] == pytest.approx(0.01)
    assert devices[261]["sims"]["0"]["overridden"] is True
    table = invoke(["devices"], env)
    assert table.exit_code == 0 and "260" in table.stdout and "override" in table.stdout

    bad = {**env, "RELAY_GATEWAY_TOKEN": "wrong-token"}
    line = one_line_error(invoke(["devices"], bad), 1)
    assert "wrong-token" not in line


# --- settings and Redis ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("RELAY_BATCH_MAX", "many"),
        ("RELAY_REDIS_URL", "localhost:6379"),
        ("RELAY_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable(var: str, value: str) -> None:
    one_line_error(invoke(["stats"], {var: value}), 2, var)
    one_line_error(invoke(SEND, {var: value}), 2, var)


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "relay.env"
    env_file.write_text("RELAY_BATCH_MAX=zero\n")
    one_line_error(invoke(["--env-file", str(env_file), "stats"]), 2, "RELAY_BATCH_MAX")


def test_redis_unreachable_is_one_line_exit_1() -> None:
    line = one_line_error(invoke(["stats"], {"RELAY_REDIS_URL": DEAD_REDIS}), 1, "Redis")
    assert "127.0.0.1:1" in line
    one_line_error(invoke(SEND, {"RELAY_REDIS_URL": DEAD_REDIS}), 1, "Redis")


def test_redis_password_is_not_shown() -> None:
    url = "redis://user:s3cret-pass@127.0.0.1:1/0"
    line = one_line_error(invoke(["status", "x"], {"RELAY_REDIS_URL": url}), 1, "Redis")
    assert "s3cret-pass" not in line


def test_every_command_has_help() -> None:
    for command in [
        "send",
        "status",
        "cancel",
        "stats",
        "devices",
        "worker",
        "reconciler",
        "run",
        "simulator",
        "demo",
    ]:
        result = invoke([command, "--help"])
        assert result.exit_code == 0, (command, result.stderr)
        assert "Usage:" in result.stdout


# --- a real process -------------------------------------------------------------------


def relay_process(args: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_real_process_send_and_status(env: dict[str, str]) -> None:
    sent = relay_process([*SEND, "--json"], env)
    assert sent.returncode == 0, sent.stderr
    [msg_id] = json.loads(sent.stdout)
    status = relay_process(["status", msg_id, "--json"], env)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == msg_id


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (["stats"], {"RELAY_REDIS_URL": DEAD_REDIS}, 1),
        (["send", "--to", "+49x", "--body", "b", "--device", "1"], {"RELAY_BATCH_MAX": "-1"}, 2),
    ],
)
def test_real_process_errors_are_one_line(args: list[str], env: dict[str, str], code: int) -> None:
    proc = relay_process(args, env)
    assert proc.returncode == code, (args, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


# --- deployment files -----------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_with_its_default() -> None:

    text = (ROOT / ".env.example").read_text()
    defaults = Settings.model_construct()
    for name, field in Settings.model_fields.items():
        var = f"{ENV_PREFIX}{name.upper()}"
        assert f"# {field.description}\n" in text, var
        value = getattr(defaults, name)
        if value is None:
            assert f"# {var}=\n" in text, var
        else:
            shown = json.dumps(value) if isinstance(value, dict) else str(value)
            assert f"\n{var}={shown}\n" in text, var
    loaded = load_settings(_env_file=ROOT / ".env.example")
    assert loaded.model_dump() == defaults.model_dump()


def test_process_files_run_real_commands() -> None:
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert procfile == {
        "web": "relay serve",
        "worker": "relay worker",
        "reconciler": "relay reconciler",
    }
    for unit, command in [
        ("relay-worker@.service", "worker"),
        ("relay-reconciler.service", "reconciler"),
        ("relay-serve.service", "serve"),
    ]:
        text = (ROOT / "deploy" / unit).read_text()
        for directive in (
            "EnvironmentFile=",
            "Restart=always",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=",
            f"bin/relay {command}\n",
        ):
            assert directive in text, (unit, directive)
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert "image: redis:7" in compose and '"--appendonly", "yes"' in compose
    assert "replicas: 2" in compose and "env_file:" in compose
    assert '["serve", "--host", "0.0.0.0"' in compose
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "\nUSER relay\n" in dockerfile
    assert "pip install /src" in dockerfile


# --- relay run ------------------------------------------------------------------------


def gateway_env(env: dict[str, str], sim: Simulator) -> dict[str, str]:
    return {
        **env,
        "RELAY_GATEWAY_URL": sim.url,
        "RELAY_GATEWAY_TOKEN": sim.token,
        "RELAY_RECONCILE_INTERVAL": "0.3",
        "RELAY_RECONCILE_URGENT_INTERVAL": "0.2",
        "RELAY_LOG_LEVEL": "WARNING",
    }


def test_run_until_idle_finishes_every_message(
    env: dict[str, str], redis_url: str, simulator: Simulator
) -> None:
    env = gateway_env(env, simulator)
    sent = [invoke([*SEND[:-1], dev, "--json"], env) for dev in ("260", "261", "260")]
    ids = [json.loads(r.stdout)[0] for r in sent]
    result = invoke(["run", "--workers", "2", "--until-idle", "--timeout", "60"], env)
    assert result.exit_code == 0, result.stderr
    for msg_id in ids:
        data = record(redis_url, env["RELAY_KEY_PREFIX"], msg_id)
        assert data["state"] == "delivered" and data["final"] == "1", data
    assert sorted(e.body for e in simulator.ledger()) == ["hello"] * 3


def test_run_until_idle_times_out_with_one_line(env: dict[str, str], simulator: Simulator) -> None:
    env = gateway_env(env, simulator)
    assert invoke([*SEND, "--at", "2099-01-01"], env).exit_code == 0  # never final before 2099
    result = invoke(["run", "--until-idle", "--timeout", "2"], env)
    one_line_error(result, 1, "not idle after 2 s", "1 scheduled")
    assert simulator.ledger() == []


def test_run_timeout_needs_until_idle(env: dict[str, str]) -> None:
    one_line_error(invoke(["run", "--timeout", "3"], env), 2, "--until-idle")


# --- worker and reconciler ------------------------------------------------------------


def test_worker_burst_then_reconciler_once(
    env: dict[str, str], redis_url: str, simulator: Simulator
) -> None:
    env = gateway_env(env, simulator)
    msg_id = invoke([*SEND, "--urgent"], env).stdout.strip()
    proc = relay_process(["worker", "--burst"], env)
    assert proc.returncode == 0, proc.stderr
    assert record(redis_url, env["RELAY_KEY_PREFIX"], msg_id)["state"] == "submitted"
    assert len(simulator.ledger()) == 1

    for _ in range(100):  # the phone sends within a few polls; each pass reads what it did
        result = invoke(["reconciler", "--once"], env)
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        if record(redis_url, env["RELAY_KEY_PREFIX"], msg_id)["state"] == "delivered":
            break
        time.sleep(0.1)
    assert record(redis_url, env["RELAY_KEY_PREFIX"], msg_id)["final"] == "1"
    assert report["devices"] >= 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reconciler_serves_metrics_and_stops_on_sigterm(env: dict[str, str]) -> None:
    invoke(SEND, env)
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "reconciler", "--metrics-port", str(port)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = ""
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                time.sleep(0.05)
        assert "relay_stats_up 1.0" in text
        assert 'relay_lane_depth{device="260",lane="bulk",sim="0"} 1.0' in text
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- simulator ------------------------------------------------------------------------


def test_simulator_command_serves_the_gateway() -> None:
    from relay.gateway import GatewayClient

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay",
            "simulator",
            "--port",
            "0",
            "--json",
            "--devices",
            "601:0.2:0.05;602:0.5:-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = json.loads(proc.stdout.readline())
        settings = load_settings(gateway_url=banner["url"], gateway_token=banner["token"])
        with GatewayClient.from_settings(settings) as client:
            devices = {d.id: d for d in client.get_all_devices()}
        assert set(devices) == {601, 602}
        assert devices[601].delaybetweeneachsms == pytest.approx(0.05)
        assert devices[602].delaybetweeneachsms is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulator_bad_devices_spec_is_a_usage_error() -> None:
    one_line_error(invoke(["simulator", "--devices", "phone:1"]), 2, "--devices", "phone:1")


def test_children_get_the_parents_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.run.supervisor import child_env

    settings = load_settings(
        redis_url="redis://u:pw@127.0.0.1:1/3",
        key_prefix="kids",
        gateway_token="tok-123",
        device_overrides={"260": 2.5, "260:1": 4},
        log_json=True,
        metrics_port=9100,
        default_region="de",
    )
    monkeypatch.setenv("RELAY_BATCH_MAX", "7")  # the parent's own environment must not leak
    env = child_env(settings, {"EXTRA": "1"})
    assert env["EXTRA"] == "1" and "RELAY_METRICS_PORT" not in env
    monkeypatch.delenv("RELAY_BATCH_MAX")
    for name, value in env.items():
        if name.startswith("RELAY_"):
            monkeypatch.setenv(name, value)
    again = load_settings()
    assert again.model_dump() == settings.model_dump() | {"metrics_port": None}
    assert again.gateway_token is not None and again.gateway_token.get_secret_value() == "tok-123"


def test_error_lines_hide_secret_settings_but_keep_relays_words() -> None:
    from relay.cli.common import CliState, describe
    from relay.errors import ConfigError, GatewayRejected

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELAY_GATEWAY_TOKEN", "tok-5ecret-value")
        CliState().settings()  # as every command does: its secrets are remembered
    line = describe(GatewayRejected("token tok-5ecret-value is not valid", endpoint="addsms"))
    assert "tok-5ecret-value" not in line and "***" in line
    words = "RELAY_GATEWAY_PASSWORD: the gateway needs a token"
    assert describe(ConfigError(words)) == f"Error: {words}"
    assert "hunter22" not in describe(redis.ConnectionError("AUTH password=hunter22 failed"))
