"""One door, one truth (DESIGN invariant 9): the same message sent through each way in — the
library, ``relay send`` (a real process), ``POST /v1/messages`` and ``/getdata/addsms`` (over
real HTTP) — is stored as the same record, dispatched to the simulator, followed to the
same final state, and leaves the same sequence of events. Only what is per message (its id,
recipient, times, the gateway's sms_id, the drop-in's integer id) may differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx

from relay.connection import text
from relay.context import Context
from relay.core import Relay
from relay.reconcile.reconciler import Reconciler
from relay.results.events import Event
from relay.run.burst import run_until_idle
from relay.settings import settings_env
from relay.simulator import Simulator
from tests.fixtures.http import MakeApi
from tests.fixtures.replies import entries
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.workers import MakeSettings

BODY = "Your code is 4711"
DEVICE = 260
#: recipient of each door's message
DOORS = {
    "library": "+4915700000101",
    "cli": "+4915700000102",
    "v1": "+4915700000103",
    "dropin": "+4915700000104",
}
#: record fields that are the message's own (not the door's): ids, recipient, its batch (times:
#: every ``t_*`` field)
PER_MESSAGE = {"sendto", "sms_id", "dropin_id", "batch"}


def _send_everywhere(relay: Relay, api_url: str, key: str, reader: str) -> dict[str, str]:
    """One urgent message through each door (``key`` may send, ``reader`` read); its relay id
    by door."""
    ids = {"library": relay.send(DOORS["library"], BODY, device_id=DEVICE, urgent=True)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(settings_env(relay.settings))
    cmd = [sys.executable, "-m", "relay", "send", "--to", DOORS["cli"], "--body", BODY]
    cmd += ["--device", str(DEVICE), "--urgent", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [ids["cli"]] = json.loads(done.stdout)
    with httpx.Client(base_url=api_url, timeout=30) as c:
        answer = c.post(
            "/v1/messages",
            json={"sendto": DOORS["v1"], "body": BODY, "device_id": DEVICE, "urgent": True},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 202, answer.text
        ids["v1"] = answer.json()["id"]
        params = {
            "token": key,
            "sendto": DOORS["dropin"],
            "body": BODY,
            "device_id": str(DEVICE),
            "urgent": "1",
        }
        answer = c.get("/getdata/addsms", params=params)
        assert answer.json()["error"] == 0, answer.text
        found = c.get(
            "/v1/lookup",
            params={"q": str(answer.json()["sms_id"])},
            headers={"Authorization": f"Bearer {reader}"},
        )
        assert found.status_code == 200, found.text
        [match] = found.json()["messages"]
        ids["dropin"] = match["id"]
    return ids


def _record(ctx: Context, msg_id: str) -> dict[str, str]:
    raw = ctx.conn.hgetall(ctx.keys.msg(msg_id))
    return {text(k): text(v) for k, v in raw.items()}


def _shared(record: dict[str, str]) -> dict[str, str]:
    """The fields of ``record`` every door must store alike."""
    return {k: v for k, v in record.items() if k not in PER_MESSAGE and not k.startswith("t_")}


def _settle(ctx: Context, ids: list[str], timeout: float = 30.0) -> None:
    """Reconciler passes until every message of ``ids`` is delivered."""
    deadline = time.monotonic() + timeout
    states: set[str] = set()
    while time.monotonic() < deadline:
        Reconciler(ctx).run_once()
        states = {m.state.value for m in ctx.store.get_many(ids) if m is not None}
        if states == {"delivered"}:
            return
        time.sleep(0.1)
    raise AssertionError(f"not all delivered: {states}")


def test_every_door_stores_the_same_record_and_events(
    make_simulator: MakeSimulator, relay_settings: MakeSettings, make_api: MakeApi
) -> None:
    sim: Simulator = make_simulator()
    settings = relay_settings(sim, delivery_report_wait=0.2)
    api = make_api(settings)
    relay = Relay(settings)
    try:
        ids = _send_everywhere(relay, api.url, api.key("send"), api.key("read"))
        assert len(set(ids.values())) == len(DOORS), ids
        queued = {door: relay.ctx.store.get(i) for door, i in ids.items()}
        assert all(m is not None and m.state.value == "queued" for m in queued.values()), queued

        assert run_until_idle(relay.ctx, 30)
        _settle(relay.ctx, list(ids.values()))

        records = {door: _record(relay.ctx, i) for door, i in ids.items()}
        shared = {door: _shared(r) for door, r in records.items()}
        assert all(s == shared["library"] for s in shared.values()), shared
        assert {"body", "device_id", "urgent", "state", "status"} <= set(shared["library"])

        events = entries(relay.ctx.conn, relay.ctx.keys.events)
        stream = [Event.from_entry(e, {k: v for k, v in f.items()}) for e, f in events]
        trail = {
            door: [(e.prev, e.state, e.final) for e in stream if e.id == i]
            for door, i in ids.items()
        }
        assert trail["library"][-1][1] == "delivered", trail
        assert all(t == trail["library"] for t in trail.values()), trail

        stored = [m for m in sim.ledger() if m.sendto in DOORS.values()]
        assert sorted(m.sendto for m in stored) == sorted(DOORS.values())  # each stored once
        assert {(m.body, m.device_id, m.sim, m.urgent) for m in stored} == {(BODY, DEVICE, 0, 1)}
    finally:
        relay.close()
