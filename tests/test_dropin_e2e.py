"""End to end through the drop-in: urgent and bulk messages sent the way the gateway's own
clients send them (GET ``addsms``, a comma list, ``addalotofsms``) are dispatched by a REAL
worker process to the simulator, followed by a REAL reconciler process, and read back through
``/getdata/getsmsstatus`` until each shows its final code, the code the gateway itself
holds for it. Every message is stored at the gateway exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.connection import text
from relay.context import Context
from relay.settings import Settings, settings_env
from relay.simulator import OutcomeRule, Simulator
from tests.fixtures.http import MakeApi
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.workers import MakeSettings, StartWorkers

#: recipient -> the final code the simulated gateway gives its messages
OUTCOMES = {
    "+4915700000007": 7,  # delivered
    "+4915700000008": 8,  # not delivered
    "+4915700000010": 10,  # not sent: no service
    "+4915700000006": 6,  # sent, no delivery report ever
}
FINAL_CODES = {7, 8, 9, 10, 11, 12, 100, 101}


@pytest.fixture
def reconciler(tmp_path: Path) -> Iterator[Any]:
    """Factory: a real ``relay reconciler`` process on ``settings`` (stopped at teardown)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(settings_env(settings))
        with (tmp_path / "reconciler.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "reconciler"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_messages_sent_through_the_dropin_reach_their_final_code(
    make_simulator: MakeSimulator,
    relay_settings: MakeSettings,
    make_api: MakeApi,
    start_workers: StartWorkers,
    reconciler: Any,
) -> None:
    sim: Simulator = make_simulator(outcome=OutcomeRule(by_recipient=OUTCOMES))
    settings = relay_settings(
        sim,
        reconcile_interval=0.2,
        reconcile_urgent_interval=0.1,
        delivery_report_wait=1.0,
        device_refresh=1.0,
    )
    server = make_api(settings)
    key = server.key("send")
    numbers = list(OUTCOMES)
    expected: dict[int, int] = {}
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        # urgent, one at a time, as the SDK's addSms (GET query, unencoded +)
        for phone in numbers[:2]:
            query = f"token={key}&sendto={phone}&body=code+4711&device_id=260&sim=0&urgent=1"
            answer = http.get(f"/getdata/addsms?{query}").json()
            expected[int(answer["sms_id"])] = OUTCOMES[phone]
        # a comma list: one message per recipient, the answer names the first
        form = {"token": key, "sendto": ",".join(numbers), "body": "sale", "device_id": "261"}
        first = int(http.post("/getdata/addsms", data=form).json()["sms_id"])
        expected |= {first + i: OUTCOMES[p] for i, p in enumerate(numbers)}
        # a bulk batch (no ids in the answer: they follow the ones above)
        smsdata = [{"sendto": p, "body": "bulk", "device_id": 260, "sim": 0} for p in numbers]
        datajson = json.dumps({"token": key, "smsdata": smsdata})
        assert http.post("/getdata/addalotofsms", data={"datajson": datajson}).json() == {
            "error": 0,
            "message": "Sms has been saved successfully",
        }
        last = max(expected)
        expected |= {last + 1 + i: OUTCOMES[p] for i, p in enumerate(numbers)}
        assert len(expected) == 10

        start_workers(1, settings)
        reconciler(settings)
        final = follow(http, key, expected, settings)

    assert final == expected
    ctx = Context.from_settings(settings)
    try:
        for number in expected:
            msg_id = ctx.conn.hget(ctx.keys.dropin_ids, str(number))
            assert msg_id is not None, f"no drop-in id {number}"
            msg = ctx.store.get(text(msg_id))
            assert msg is not None and msg.final and msg.sms_id is not None
            assert sim.status(msg.sms_id) == final[number]  # the gateway's own code
    finally:
        ctx.close()
    ledger = sim.ledger()
    assert len(ledger) == len(expected)  # each stored at the gateway exactly once


def follow(
    http: httpx.Client, key: str, expected: dict[int, int], settings: Settings
) -> dict[int, int]:
    """Poll getsmsstatus (as the SDK does: GET, int casts) until every message is final."""
    deadline = time.monotonic() + 90
    final: dict[int, int] = {}
    while len(final) < len(expected):
        assert time.monotonic() < deadline, f"not final in time: {set(expected) - set(final)}"
        for number in set(expected) - set(final):
            answer = http.get(f"/getdata/getsmsstatus?token={key}&sms_id={number}").json()
            assert answer["error"] == 0, answer
            status = int(answer["status"])
            assert type(answer["status"]) is int and type(answer["sms_id"]) is int
            if status in FINAL_CODES or (status == 6 and _ended_sent(settings, number)):
                final[number] = status
        time.sleep(0.2)
    return final


def _ended_sent(settings: Settings, number: int) -> bool:
    """A 6 is final once relay ended the message ``sent`` (no report within its wait)."""
    ctx = Context.from_settings(settings)
    try:
        msg_id = ctx.conn.hget(ctx.keys.dropin_ids, str(number))
        msg = ctx.store.get(text(msg_id)) if msg_id else None
        return msg is not None and msg.final
    finally:
        ctx.close()
