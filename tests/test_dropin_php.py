"""The drop-in from PHP: a tiny PHP client of our own (tests/data/dropin_client.php) makes the
calls the gateway's PHP SDK makes (curl, form fields, GET queries, ``(int)`` casts, typed
constructors under ``strict_types``) against a real ``relay serve`` process. Skipped when
``php`` (with its curl extension) is not installed: ``apt-get install php-cli php-curl``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from relay.connection import text
from relay.context import Context
from relay.devices import sync_devices
from relay.simulator import Simulator
from tests.fixtures.http import StartServe, make_key
from tests.fixtures.workers import MakeSettings

CLIENT = Path(__file__).parent / "data" / "dropin_client.php"


def _php_with_curl() -> str | None:
    php = shutil.which("php")
    if php is None:
        return None
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, check=False).stdout
    return php if "curl" in modules.split() else None


PHP = _php_with_curl()


@pytest.fixture(autouse=True)
def _php_present() -> None:
    """Skipped with the reason where php is missing; a failure where it must be there (CI
    installs it and sets RELAY_TEST_REQUIRE_PHP=1), so a skip is never taken for a pass."""
    if PHP is None:
        reason = "php with its curl extension is not installed (apt-get install php-cli php-curl)"
        if os.environ.get("RELAY_TEST_REQUIRE_PHP") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def test_the_sdks_calls_from_php_against_relay_serve(
    relay_settings: MakeSettings, simulator: Simulator, start_serve: StartServe
) -> None:
    settings = relay_settings(simulator)
    ctx = Context.from_settings(settings)
    sync_devices(ctx)
    served = start_serve(settings)
    key = make_key(settings, "php-app", "send")
    assert PHP is not None
    run = subprocess.run(
        [PHP, str(CLIENT), f"{served.url}/getdata/", key, "260"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    calls = {c["call"]: c for c in map(json.loads, run.stdout.splitlines())}
    added = calls["addSms"]
    assert added["raw_is_int"] is True and added["sms_id"] >= 1
    status = calls["getSmsStatus"]
    assert status == {
        "call": "getSmsStatus",
        "sms_id": added["sms_id"],
        "status": 1,
        "status_description": "New",
    }
    device = calls["getDeviceStatus"]
    assert device["device_id"] == 260 and device["title"] == "phone 260"
    assert device["lastseen"]["timezone_type"] == 3
    assert calls["saveTag"]["tag_id"] >= 1
    assert calls["wrongToken"] == {
        "call": "wrongToken",
        "http": 200,
        "error": 1,
        "message": "Wrong token",
    }
    msg_id = ctx.conn.hget(ctx.keys.dropin_ids, str(added["sms_id"]))
    assert msg_id is not None, added
    msg = ctx.store.get(text(msg_id))
    assert msg is not None and msg.customerid == 12 and msg.urgent
    assert key not in served.log() and "token=" not in served.log()
    ctx.close()
