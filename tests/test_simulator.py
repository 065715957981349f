"""The gateway simulator, over real HTTP with httpx: shapes, pace, statuses, filters, faults."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl as std_parse_qsl
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.clock import FakeClock
from relay.simulator import (
    FAILURE_CODES,
    OutcomeRule,
    SimDevice,
    Simulator,
    parse_device,
    run_forever,
)
from relay.simulator.wire import parse_qsl
from tests.fixtures.simulator import MakeSimulator, switch_online

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, FakeClock's default start


class Gateway:
    """A thin httpx client of one simulator: POST form calls, token filled in."""

    def __init__(self, sim: Simulator, timeout: float = 5.0) -> None:
        self.sim = sim
        # verify=False: plain HTTP to localhost; skips loading CA certificates (~0.1 s a client)
        self.http = httpx.Client(base_url=sim.url, timeout=timeout, verify=False)

    def call(self, endpoint: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("token", self.sim.token)
        answer = self.http.post(endpoint, data={k: v for k, v in fields.items() if v is not None})
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def send(self, sendto: str = "+4915752982212", device_id: int = 260, **fields: Any) -> int:
        fields.setdefault("body", "hello")
        fields.setdefault("sim", 0)
        answer = self.call("addsms", sendto=sendto, device_id=device_id, **fields)
        assert answer["error"] == 0, answer
        return int(answer["sms_id"])

    def batch(self, items: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
        datajson = json.dumps({"token": token or self.sim.token, "smsdata": items})
        return self.call("addalotofsms", datajson=datajson, token=None)

    def smss(self, **filters: Any) -> dict[str, Any]:
        answer = self.call("getallsms", **filters)
        assert answer["error"] == 0, answer
        return answer

    def close(self) -> None:
        self.http.close()


def item(n: int = 0, device_id: int = 260, **extra: Any) -> dict[str, Any]:
    return {
        "sendto": f"+49157{n:07d}",
        "body": f"message {n}",
        "sim": 0,
        "device_id": device_id,
        **extra,
    }


@pytest.fixture
def gw(simulator: Simulator) -> Iterator[Gateway]:
    client = Gateway(simulator)
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def fake(make_simulator: MakeSimulator, clock: FakeClock) -> Iterator[Gateway]:
    """A simulator on a FakeClock: phone 1 polls every 10 s and sends every 2 s."""
    sim = make_simulator(
        [
            SimDevice(id=1, delaybetweenrequest=10, delaybetweeneachsms=2),
            SimDevice(id=2, delaybetweenrequest=10, delaybetweeneachsms=1, online=False),
        ],
        clock=clock,
        outcome=OutcomeRule(report_delay=5),
    )
    client = Gateway(sim)
    yield client
    client.close()


def history(sim: Simulator, sms_id: int) -> list[tuple[int, float]]:
    return [(code, at - T0) for code, at in sim.entry(sms_id).history]


# --- shapes and validation ------------------------------------------------------------


def test_gettoken_gives_the_token_and_refuses_a_bad_login(gw: Gateway) -> None:
    sim = gw.sim
    assert gw.call("gettoken", email=sim.email, token=None, **{"pass": sim.password}) == {
        "error": 0,
        "message": "OK",
        "token": sim.token,
    }
    bad = gw.call("gettoken", email=sim.email, token=None, **{"pass": "nope"})
    assert bad == {"error": 1, "message": "Login or password incorrect"}


def test_addsms_answers_an_id_and_the_ledger_keeps_the_request(gw: Gateway) -> None:
    answer = gw.call(
        "addsms", sendto="+4915752982212", body="hi", device_id=260, sim=1, customerid=122, urgent=1
    )
    assert answer == {
        "error": 0,
        "sms_id": answer["sms_id"],
        "message": "Sms has been saved successfully",
    }
    (entry,) = gw.sim.ledger()
    assert entry.sms_id == answer["sms_id"]
    assert (entry.device_id, entry.sim, entry.body) == (260, 1, "hi")
    assert entry.sendto == "+4915752982212"
    assert (entry.customerid, entry.urgent, entry.timetosend) == (122, 1, None)
    assert entry.request.endpoint == "addsms"
    assert "token" not in entry.request.fields
    assert entry.request.fields["customerid"] == "122"
    assert entry.history[0][0] == 1


def test_get_query_and_smstosend_login_work_too(gw: Gateway) -> None:
    sim = gw.sim
    answer = gw.http.get(
        "addsms",
        params={"token": sim.token, "sendto": "+491", "body": "b", "device_id": 261, "sim": 0},
    ).json()
    assert answer["error"] == 0
    login = {"email": sim.email, "pass": sim.password}
    second = gw.call(
        "smstosend", token=None, sendto="+492", body="c", device_id=260, sim=0, **login
    )
    assert second["sms_id"] == answer["sms_id"] + 1
    assert "pass" not in sim.entry(second["sms_id"]).request.fields
    wrong = gw.call(
        "smstosend",
        token=None,
        sendto="1",
        body="c",
        device_id=260,
        sim=0,
        email=sim.email,
        **{"pass": "x"},
    )
    assert wrong == {"error": 1, "message": "Login or password incorrect"}


@pytest.mark.parametrize("missing", ["sendto", "body", "device_id", "sim"])
def test_a_missing_field_is_named_and_nothing_is_stored(gw: Gateway, missing: str) -> None:
    fields = {"sendto": "+491", "body": "b", "device_id": 260, "sim": 0, missing: None}
    answer = gw.call("addsms", **fields)
    assert answer == {"error": 1, "message": f"Field '{missing}' is required"}
    assert gw.sim.ledger() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"device_id": 999}, "Device 999 not found"),
        ({"sim": 4}, "Sim slot 4 is not available on device 260"),
        ({"sim": 9}, "Field 'sim' must be a slot from 0 to 5"),
        ({"customerid": "abc"}, "Field 'customerid' must be a whole number"),
        (
            {"timetosend": "tomorrow"},
            "Field 'timetosend' must be YYYY-MM-DD or YYYY-MM-DD HH:MM:SS",
        ),
    ],
)
def test_invalid_values_are_refused(gw: Gateway, fields: dict[str, Any], message: str) -> None:
    base = {"sendto": "+491", "body": "b", "device_id": 260, "sim": 0}
    answer = gw.call("addsms", **{**base, **fields})
    assert answer == {"error": 1, "message": message}


def test_tokens_missing_wrong_and_expired(gw: Gateway) -> None:
    assert gw.call("getallsms", token="")["message"] == "Token is required"
    assert gw.call("getallsms", token="deadbeef") == {"error": 1, "message": "Wrong token"}
    old = gw.sim.token
    new = gw.sim.expire_token()
    assert new != old and gw.sim.token == new
    expired = gw.call("getalldevices", token=old)
    assert expired["error"] == 1 and "token" in expired["message"].lower()
    assert expired["message"] == "Token expired, get a new token"
    login = {"email": gw.sim.email, "pass": gw.sim.password}
    assert gw.call("gettoken", token=None, **login)["token"] == new
    assert gw.call("getallsms", token=new)["error"] == 0


def test_multipart_file_replaces_the_body_with_an_image_url(gw: Gateway) -> None:
    fields = {
        "token": gw.sim.token,
        "sendto": "+491",
        "device_id": "260",
        "sim": "0",
        "body": "ignored",
    }
    files = {"file": ("cat.png", b"\x89PNG fake", "image/png")}
    answer = gw.http.post("addsms", data=fields, files=files).json()
    entry = gw.sim.entry(answer["sms_id"])
    assert entry.body.startswith("https://") and entry.body.endswith(".png")
    assert entry.request.fields["file"] == "cat.png"
    text = gw.http.post("addsms", data=fields, files={"file": ("a.txt", b"x", "text/plain")})
    assert text.json()["message"] == "Field 'file' must be an image (jpeg, png, webp, gif)"


def test_addalotofsms_stores_hundreds_under_consecutive_ids_and_answers_none(gw: Gateway) -> None:
    items = [item(n, urgent=n % 2, customerid=n) for n in range(300)]
    answer = gw.batch(items)
    assert answer == {"error": 0, "message": "Sms has been saved successfully"}
    ledger = gw.sim.ledger()
    ids = [e.sms_id for e in ledger]
    assert ids == list(range(ids[0], ids[0] + 300))
    assert [e.body for e in ledger] == [f"message {n}" for n in range(300)]
    assert {e.request.request_id for e in ledger} == {ledger[0].request.request_id}
    assert ledger[7].request.fields == items[7]
    assert ledger[7].urgent == 1 and ledger[8].urgent == 0 and ledger[8].customerid == 8


@pytest.mark.parametrize(
    ("datajson", "message"),
    [
        ("{not json", "Field 'datajson' is not valid JSON"),
        ("[1, 2]", "Field 'datajson' must be a JSON object with token and smsdata"),
        ('{"token": "TOKEN"}', "Field 'smsdata' must be a non-empty list of messages"),
        (
            '{"token": "TOKEN", "smsdata": []}',
            "Field 'smsdata' must be a non-empty list of messages",
        ),
        (
            '{"token": "TOKEN", "smsdata": [ITEM, {"sendto": "1", "sim": 0, "device_id": 260}]}',
            "smsdata[1]: Field 'body' is required",
        ),
        (
            '{"token": "TOKEN", "smsdata": [ITEM, ITEM, {"sendto": "1", "body": "b", "sim": 0, '
            '"device_id": 7}]}',
            "smsdata[2]: Device 7 not found",
        ),
        ('{"token": "bad", "smsdata": [ITEM]}', "Wrong token"),
    ],
)
def test_a_bad_datajson_stores_nothing(gw: Gateway, datajson: str, message: str) -> None:
    raw = datajson.replace("TOKEN", gw.sim.token).replace("ITEM", json.dumps(item()))
    assert gw.call("addalotofsms", token=None, datajson=raw) == {"error": 1, "message": message}
    assert gw.call("addalotofsms", token=None)["message"] == "Field 'datajson' is required"
    assert gw.sim.ledger() == []


def test_concurrent_batches_keep_their_ids_consecutive(gw: Gateway) -> None:
    def submit(worker: int) -> None:
        client = Gateway(gw.sim)
        for n in range(10):
            assert client.batch([item(worker * 1000 + n * 10 + k) for k in range(10)])["error"] == 0
        client.close()

    threads = [threading.Thread(target=submit, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    ledger = gw.sim.ledger()
    assert len(ledger) == 600 and len({e.sms_id for e in ledger}) == 600
    by_request: dict[int, list[int]] = {}
    for entry in ledger:
        by_request.setdefault(entry.request.request_id, []).append(entry.sms_id)
    for ids in by_request.values():
        assert ids == list(range(ids[0], ids[0] + 10))


def test_keep_alive_reuses_one_connection(gw: Gateway) -> None:
    for _ in range(30):
        gw.call("getsmsstatus", sms_id=1)
    assert gw.sim.open_connections == 1


# --- devices --------------------------------------------------------------------------


def test_getalldevices_reports_every_documented_field(gw: Gateway) -> None:
    answer = gw.call("getalldevices")
    assert "error" not in answer and answer["count"] == 2
    device = answer["device"]["261"]
    assert set(device) == {
        "id",
        "title",
        "number",
        "imei",
        "created",
        "createdhumanformat",
        "lastseen",
        "lastseenhumanformat",
        "serialnumber",
        "siminfo",
        "appversion",
        "isappversionactual",
        "delaybetweeneachsms",
        "delaybetweenrequest",
        "subscription",
    }
    assert device["delaybetweeneachsms"] is None and device["delaybetweenrequest"] == 0.1
    assert answer["device"]["260"]["delaybetweeneachsms"] == 0.01
    assert [s["Slot"] for s in device["siminfo"]] == ["0", "1"]
    assert set(device["siminfo"][0]) == {
        "Slot",
        "IccId",
        "Number",
        "Roaming",
        "CountryIso",
        "CarrierName",
    }
    assert device["created"]["timezone_type"] == 3 and device["created"]["timezone"] == "UTC"


def test_getdevicestatus_tells_online_lastseen_and_diffseconds(
    fake: Gateway, clock: FakeClock
) -> None:
    clock.advance(25)
    status = fake.call("getdevicestatus", device_id=1)
    assert status["online"] is True and status["error"] == 0 and status["device_id"] == 1
    assert status["lastseen"]["date"] == "2027-01-15 08:00:20.000000"
    assert status["diffseconds"] == 5
    offline = fake.call("getdevicestatus", device_id=2)
    assert offline["online"] is False and offline["diffseconds"] == 25
    unknown = fake.call("getdevicestatus", device_id=3)
    assert unknown == {"error": 1, "message": "Device 3 not found"}
    whole = fake.call("getalldevices")["device"]["1"]
    assert whole["delaybetweenrequest"] == 10 and isinstance(whole["delaybetweenrequest"], int)


# --- pace and status progression ------------------------------------------------------


def test_the_phone_polls_on_its_phase_and_spaces_its_sends(fake: Gateway, clock: FakeClock) -> None:
    clock.advance(3)
    ids = [fake.send(device_id=1, body=f"m{n}") for n in range(3)]
    clock.advance(7)  # the poll at T0+10
    assert [fake.sim.status(i) for i in ids] == [6, 2, 2]
    clock.advance(20)
    sends = [fake.sim.entry(i).time_of(6) for i in ids]
    assert [history(fake.sim, i)[1] for i in ids] == [(2, 10.0)] * 3
    assert [s - T0 for s in sends if s is not None] == [10.0, 12.0, 14.0]
    clock.advance(0.5)  # T0+30.5: just after a poll
    late = fake.send(device_id=1)
    clock.advance(15)
    assert history(fake.sim, late) == [(1, 30.5), (2, 40.0), (6, 40.0), (7, 45.0)]


def test_a_batch_goes_out_at_the_phone_pace_on_the_real_clock(
    make_simulator: MakeSimulator,
) -> None:
    sim = make_simulator([SimDevice(id=9, delaybetweenrequest=0.02, delaybetweeneachsms=0.01)])
    client = Gateway(sim)
    client.batch([item(n, device_id=9) for n in range(8)])
    deadline = time.monotonic() + 5
    while any(e.status != 7 for e in sim.ledger()) and time.monotonic() < deadline:
        time.sleep(0.02)
    sends = [e.time_of(6) or 0.0 for e in sim.ledger()]
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert gaps == pytest.approx([0.01] * 7, abs=1e-6)  # epoch floats: ~2e-7 resolution
    taken = {e.time_of(2) for e in sim.ledger()}
    assert len(taken) == 1  # one poll took them all
    client.close()


def test_urgent_messages_go_first_within_a_poll(fake: Gateway, clock: FakeClock) -> None:
    fake.batch([item(n, device_id=1, urgent=1 if n in (3, 4) else 0) for n in range(5)])
    clock.advance(60)
    ledger = fake.sim.ledger()
    order = sorted(ledger, key=lambda e: e.time_of(6) or 0.0)
    assert [e.body for e in order] == [
        "message 3",
        "message 4",
        "message 0",
        "message 1",
        "message 2",
    ]


def test_an_urgent_message_taken_later_overtakes_queued_bulk(
    fake: Gateway, clock: FakeClock
) -> None:
    fake.sim.update_device(1, delaybetweeneachsms=5)
    clock.advance(1)
    bulk = [fake.send(device_id=1, body=f"bulk {n}") for n in range(4)]
    clock.advance(11)  # T0+12: the poll at T0+10 took the bulk; sends at 10, 15, ...
    urgent = fake.send(device_id=1, urgent=1)
    clock.advance(60)
    sent = {i: fake.sim.entry(i).time_of(6) for i in [*bulk, urgent]}
    order = sorted(sent, key=lambda i: sent[i] or 0.0)
    assert order == [bulk[0], bulk[1], urgent, bulk[2], bulk[3]]


def test_status_progresses_new_taken_sent_delivered(fake: Gateway, clock: FakeClock) -> None:
    clock.advance(1)
    first, second = fake.send(device_id=1), fake.send(device_id=1, customerid=5)
    seen = []
    for at in (5, 10.5, 12, 17, 30):
        clock.advance(at - (clock.now() - T0))
        status = fake.call("getsmsstatus", sms_id=second)
        record = fake.smss(customerid=5)["smss"][str(second)]
        assert record["status"] == status["status"]
        seen.append((status["status"], status["status_description"], record["statustitle"]))
    assert seen == [
        (1, "New", "new"),
        (2, "Taken from server", "sending"),
        (6, "Sent", "sent"),
        (7, "Delivered", "delivered"),
        (7, "Delivered", "delivered"),
    ]
    assert history(fake.sim, second) == [(1, 1.0), (2, 10.0), (6, 12.0), (7, 17.0)]
    assert fake.smss()["smss"][str(first)]["senttime"]["date"] == "2027-01-15 08:00:10.000000"


def test_failures_follow_the_outcome_rule(make_simulator: MakeSimulator, clock: FakeClock) -> None:
    rule = OutcomeRule(
        by_recipient={"+49 111": 8, "49222": 9, "333": 6, "444": 101}, report_delay=2
    )
    sim = make_simulator(
        [SimDevice(id=1, delaybetweenrequest=1, delaybetweeneachsms=1)], clock=clock, outcome=rule
    )
    client = Gateway(sim)
    ids = {to: client.send(to, device_id=1) for to in ("+49111", "+49 222", "333", "444", "555")}
    clock.advance(100)
    codes = {to: [c for c, _ in sim.entry(i).history] for to, i in ids.items()}
    assert codes == {
        "+49111": [1, 2, 6, 8],
        "+49 222": [1, 2, 9],
        "333": [1, 2, 6],
        "444": [1, 2, 101],
        "555": [1, 2, 6, 7],
    }
    records = client.smss()["smss"]
    not_sent = records[str(ids["+49 222"])]
    assert (not_sent["statustitle"], not_sent["senttime"]) == ("not sent", None)
    assert records[str(ids["+49111"])]["statustitle"] == "not delivered"
    client.close()


def test_the_outcome_rule_is_deterministic_per_seed() -> None:
    def finals(seed: int) -> list[int]:
        rule = OutcomeRule(fail_rate=0.3, no_report_rate=0.2, seed=seed)
        return [rule.final_code(62_800_000 + n, "+491") for n in range(400)]

    assert finals(1) == finals(1) and finals(1) != finals(2)
    codes = finals(1)
    failed = [c for c in codes if c in FAILURE_CODES]
    assert 80 < len(failed) < 160 and 40 < codes.count(6) < 120
    assert set(codes) <= {6, 7, *FAILURE_CODES}
    with pytest.raises(ValueError, match="not a final status code"):
        OutcomeRule(by_recipient={"1": 2})


def test_an_offline_phone_never_takes_its_messages(fake: Gateway, clock: FakeClock) -> None:
    sms_id = fake.send(device_id=2)
    clock.advance(1000)
    assert fake.sim.status(sms_id) == 1
    fake.sim.update_device(2, online=True)
    clock.advance(10)
    assert [c for c, _ in fake.sim.entry(sms_id).history] == [1, 2, 6]


def test_a_phone_switched_offline_over_http_freezes_and_then_catches_up(
    fake: Gateway, clock: FakeClock
) -> None:
    first, second = fake.send(device_id=1), fake.send(device_id=1)
    clock.advance(11)  # polled at 10: first sent at 10, second waits for 12 in the phone
    assert switch_online(fake.sim, 1, False)["online"] is False
    late = fake.send(device_id=1)
    clock.advance(89)
    status = fake.call("getdevicestatus", device_id=1)
    assert status["online"] is False and status["diffseconds"] == 90
    seen = fake.call("getalldevices")["device"]["1"]["lastseen"]["date"]
    assert seen == "2027-01-15 08:00:10.000000"
    assert [c for c, _ in history(fake.sim, first)] == [1, 2, 6, 7]  # sent at 10
    assert history(fake.sim, second) == [(1, 0.0), (2, 10.0)]
    assert history(fake.sim, late) == [(1, 11.0)]
    assert switch_online(fake.sim, 1, True)["online"] is True
    clock.advance(20)
    assert history(fake.sim, second)[2] == (6, 100.0)
    assert history(fake.sim, late)[1:3] == [(2, 110.0), (6, 110.0)]
    assert fake.call("getdevicestatus", device_id=1)["diffseconds"] == 0


def test_the_offline_switch_refuses_an_unknown_device(gw: Gateway) -> None:
    answer = httpx.post(f"{gw.sim.admin_url}offline", json={"id": 999})
    assert answer.status_code == 400 and answer.json() == {"error": "unknown device 999"}
    assert httpx.post(f"{gw.sim.admin_url}online", json={}).json() == {"error": "id is required"}


def test_timetosend_holds_a_message_until_due(fake: Gateway, clock: FakeClock) -> None:
    sms_id = fake.send(device_id=1, timetosend="2027-01-15 08:00:25")
    clock.advance(20)
    assert fake.sim.status(sms_id) == 1
    clock.advance(20)
    assert history(fake.sim, sms_id)[1] == (2, 30.0)
    record = fake.smss()["smss"][str(sms_id)]
    assert record["timetosend"]["date"] == "2027-01-15 08:00:25.000000"


# --- getallsms filters ----------------------------------------------------------------


@pytest.fixture
def three(make_simulator: MakeSimulator, clock: FakeClock) -> Iterator[tuple[Gateway, list[int]]]:
    """m1 at 08:00 and m2 at 09:00 UTC on 260 (delivered), m3 at 10:00 on offline 261 (New)."""
    sim = make_simulator(
        [
            SimDevice(id=260, delaybetweenrequest=1, delaybetweeneachsms=1),
            SimDevice(id=261, online=False),
        ],
        clock=clock,
    )
    client = Gateway(sim)
    ids = [client.send("+49 157 52982212", customerid=7)]
    clock.advance(3600)
    ids.append(client.send("+4915752982212", sim=1, customerid=8))
    clock.advance(3600)
    ids.append(client.send("015752982212", device_id=261, urgent=1))
    clock.advance(5)
    yield client, ids
    client.close()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [0, 1, 2]),
        ({"device_id": 261}, [2]),
        ({"sim": 1}, [1]),
        ({"device_id": 260, "sim": 0}, [0]),
        ({"status": 7}, [0, 1]),
        ({"status": 1}, [2]),
        ({"customerid": 7}, [0]),
        ({"phone": "+4915752982212"}, [0, 1]),
        ({"phone": "+49 157 52982212"}, [0, 1]),
        ({"phone": "015752982212"}, [2]),
        ({"begindate": "2027-01-15 09:00:00"}, [1, 2]),
        ({"enddate": "2027-01-15 09:00:00"}, [0, 1]),
        ({"begindate": "2027-01-15 10:00:00", "timezone": "Europe/Paris"}, [1, 2]),
        ({"begindate": "2027-01-15", "enddate": "2027-01-15"}, [0, 1, 2]),
        ({"enddate": "2027-01-14"}, []),
        ({"orderbydesc": 1}, [2, 1, 0]),
    ],
)
def test_getallsms_filters(
    three: tuple[Gateway, list[int]], filters: dict[str, Any], expected: list[int]
) -> None:
    client, ids = three
    answer = client.smss(**filters)
    assert answer["count"] == len(expected)
    shown = list(answer["smss"]) if answer["smss"] else []
    assert shown == [str(ids[i]) for i in expected]


def test_getallsms_onlycount_timezone_and_empty_answers(three: tuple[Gateway, list[int]]) -> None:
    client, ids = three
    assert client.smss(onlycount=1) == {"error": 0, "smss": [], "count": 3, "message": "Ok"}
    record = client.smss(timezone="Europe/Paris")["smss"][str(ids[1])]
    assert record["created"] == {
        "date": "2027-01-15 10:00:00.000000",
        "timezone_type": 3,
        "timezone": "Europe/Paris",
    }
    assert record["customerid"] == 8 and record["urgent"] is None and record["sim"] == 1
    assert client.smss(device_id=261)["smss"][str(ids[2])]["urgent"] == 1
    assert client.call("getallsms", timezone="Mars/Base")["error"] == 1
    assert client.call("getallsms", begindate="15.01.2027")["message"] == (
        "Field 'begindate' must be YYYY-MM-DD or YYYY-MM-DD HH:MM:SS"
    )


def test_getallsms_caps_records_but_counts_them_all(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(max_records=5, timezone="Europe/Paris")
    client = Gateway(sim)
    client.batch([item(n) for n in range(12)])
    first = sim.ledger()[0].sms_id
    answer = client.smss()
    assert answer["count"] == 12 and list(answer["smss"]) == [str(first + n) for n in range(5)]
    latest = client.smss(orderbydesc=1)
    assert list(latest["smss"]) == [str(first + n) for n in range(11, 6, -1)]
    assert answer["smss"][str(first)]["created"]["timezone"] == "Europe/Paris"
    client.close()


# --- faults ---------------------------------------------------------------------------


def test_http_5xx_stores_nothing_unless_told(gw: Gateway) -> None:
    gw.sim.faults.add("addsms", "http_500")
    gw.sim.faults.add("addsms", "http_503", store=True)
    args = {"token": gw.sim.token, "sendto": "1", "body": "b", "device_id": 260, "sim": 0}
    first = gw.http.post("addsms", data=args)
    assert first.status_code == 500 and "<html>" in first.text
    assert gw.sim.ledger() == []
    second = gw.http.post("addsms", data=args)
    assert second.status_code == 503 and len(gw.sim.ledger()) == 1
    assert gw.http.post("addsms", data=args).json()["error"] == 0
    assert gw.sim.faults.counts() == {"addsms:http_500": 1, "addsms:http_503": 1}


def test_drop_before_stores_nothing_and_drop_after_stores_everything(gw: Gateway) -> None:
    gw.sim.faults.add("addalotofsms", "drop_before")
    with pytest.raises(httpx.TransportError):
        gw.batch([item(n) for n in range(3)])
    assert gw.sim.ledger() == []
    gw.sim.faults.add("addalotofsms", "drop_after")
    with pytest.raises(httpx.TransportError):
        gw.batch([item(n) for n in range(3)])
    ledger = gw.sim.ledger()
    assert [e.body for e in ledger] == ["message 0", "message 1", "message 2"]
    assert {e.request.fault for e in ledger} == {"drop_after"}
    assert gw.batch([item(9)])["error"] == 0  # the pool recovers
    assert gw.sim.faults.count(kind="drop_before") == gw.sim.faults.count(kind="drop_after") == 1


def test_slow_answers_late_and_stores_even_when_the_client_gave_up(gw: Gateway) -> None:
    gw.sim.faults.add("getalldevices", "slow", delay=0.2)
    started = time.monotonic()
    assert gw.call("getalldevices")["count"] == 2
    assert time.monotonic() - started >= 0.2
    gw.sim.faults.add("addsms", "slow", delay=0.4)
    impatient = Gateway(gw.sim, timeout=0.1)
    with pytest.raises(httpx.ReadTimeout):
        impatient.send()
    assert gw.sim.ledger() == []
    deadline = time.monotonic() + 3
    while not gw.sim.ledger() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(gw.sim.ledger()) == 1
    impatient.close()


def test_malformed_answers_are_not_json(gw: Gateway) -> None:
    gw.sim.faults.add("getallsms", "malformed")
    gw.sim.faults.add("getallsms", "malformed_html")
    broken = gw.http.post("getallsms", data={"token": gw.sim.token})
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    page = gw.http.post("getallsms", data={"token": gw.sim.token})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<html>")
    assert gw.smss()["count"] == 0


def test_token_expired_fault_forces_a_new_token(gw: Gateway) -> None:
    old = gw.sim.token
    gw.sim.faults.add("addsms", "token_expired")
    refused = gw.call("addsms", token=old, sendto="1", body="b", device_id=260, sim=0)
    assert refused["error"] == 1 and "token" in refused["message"].lower()
    assert gw.sim.ledger() == []
    login = {"email": gw.sim.email, "pass": gw.sim.password}
    new = gw.call("gettoken", token=None, **login)["token"]
    assert new != old and gw.send(token=new) > 0


def test_times_and_seeded_rates_are_deterministic(make_simulator: MakeSimulator) -> None:
    def pattern(seed: int) -> list[int]:
        sim = make_simulator(seed=seed)
        sim.faults.add("getsmsstatus", "http_500", rate=0.5)
        client = Gateway(sim)
        form = {"token": sim.token, "sms_id": 1}
        codes = [client.http.post("getsmsstatus", data=form).status_code for _ in range(30)]
        client.close()
        assert sim.faults.count("getsmsstatus") == codes.count(500)
        return codes

    assert pattern(1) == pattern(1) and {200, 500} == set(pattern(1))
    sim = make_simulator()
    sim.faults.add("*", "http_502", times=3)
    client = Gateway(sim)
    codes = [
        client.http.post(ep, data={"token": sim.token}).status_code
        for ep in ("getallsms", "getalldevices", "getallsms", "getallsms")
    ]
    assert codes == [502, 502, 502, 200] and sim.faults.rules() == []
    sim.faults.add("getallsms", "http_500", times=5)
    assert sim.faults.clear("getallsms") == 1
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.faults.add("getallsms", "explode")
    client.close()


# --- admin over HTTP, tags, process ---------------------------------------------------


def test_admin_endpoints_mirror_the_helpers(gw: Gateway) -> None:
    admin = httpx.Client(base_url=gw.sim.admin_url, timeout=5, verify=False)
    assert admin.get("info").json()["token"] == gw.sim.token
    added = admin.post("faults", json={"endpoint": "addsms", "kind": "http_500", "times": 1})
    assert added.json()["rules"][0]["kind"] == "http_500"
    assert gw.http.post("addsms", data={"token": gw.sim.token}).status_code == 500
    assert admin.get("faults").json()["counts"] == {"addsms:http_500": 1}
    admin.post("faults", json={"endpoint": "getallsms", "kind": "slow"})
    assert admin.post("faults", json={"action": "clear"}).json()["rules"] == []
    device = admin.post("devices", json={"id": 262, "delaybetweenrequest": 0.05, "sims": [0, 2]})
    assert device.json()["device"]["sims"] == [0, 2]
    changed = admin.post("devices", json={"id": 262, "online": False}).json()
    assert changed["device"]["online"] is False
    sms_id = gw.send(device_id=262, sim=2)
    assert admin.get("ledger").json()["entries"][0]["sms_id"] == sms_id
    assert admin.get("messages").json()["messages"][0]["history"][0][0] == 1
    new_token = admin.post("expire-token").json()["token"]
    assert new_token == gw.sim.token
    assert admin.post("outcome", json={"fail_rate": 1, "failure_codes": [9]}).json()["ok"]
    assert gw.sim.outcome.failure_codes == (9,)
    stats = admin.get("stats").json()
    assert stats["messages"] == 1 and stats["requests"]["addsms"] == 2
    assert stats["faults"] == {"addsms:http_500": 1} and stats["refused"] == {}
    assert admin.post("faults", json={"endpoint": "x", "kind": "boom"}).status_code == 400
    assert admin.get("nothing").status_code == 404
    admin.close()


def test_tags_contacts_and_newsletters(gw: Gateway) -> None:
    tag = gw.call("savetag", title="customers")
    assert tag["error"] == 0 and tag["message"] == "Ok"
    first = gw.call("savecontact", phone="+491", tag_id=tag["tag_id"], fullname="Ann")
    second = gw.call("savecontact", phone="+492", ctag_id=tag["tag_id"])
    assert first["error"] == second["error"] == 0
    assert second["contact_id"] == first["contact_id"] + 1
    assert gw.call("savecontact", phone="+493", tag_id=5)["message"] == "Tag 5 not found"
    assert gw.call("savecontact", phone="+493")["message"] == "Field 'ctag_id' is required"
    paket = gw.call(
        "savepaket",
        title="news",
        device_id=260,
        body="hi",
        tags=str(tag["tag_id"]),
        sim=0,
        time_to_send="01.02.2027 10:00:00",
    )
    assert paket["error"] == 0 and paket["paket_id"] > 0
    assert gw.call("savepaket", title="n", device_id=260, body="b", sim=0)["message"] == (
        "Field 'tags' is required"
    )
    assert gw.http.post("nosuchendpoint").status_code == 404


def test_run_forever_prints_a_banner_and_stops_on_request() -> None:
    out, stop = io.StringIO(), threading.Event()
    args = ("127.0.0.1", 0, [parse_device("270:0.5:-")])
    kwargs = {"out": out, "stop_event": stop, "token": "t0ken-1234"}
    thread = threading.Thread(target=run_forever, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    line = out.getvalue()
    assert "url=http://127.0.0.1:" in line and "token=t0ken-1234" in line and "270(" in line
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert parse_device("5:2:0.5:0,3") == SimDevice(
        id=5, title="Simulated phone 5", delaybetweenrequest=2, delaybetweeneachsms=0.5, sims=(0, 3)
    )


def test_the_simulator_process_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.simulator", "--json", "--device", "300:0.05:0.01"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        login = {"email": info["email"], "pass": info["password"]}
        answer = httpx.post(info["url"] + "gettoken", data=login, timeout=5, verify=False).json()
        assert answer["token"] == info["token"] and info["devices"][0]["id"] == 300
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT, _TEXT) | st.text() | st.text(alphabet="%=+&aZ09fF \t\n_"))
def test_the_fast_form_parser_equals_the_standard_one(data: dict[str, str] | str) -> None:
    text = data if isinstance(data, str) else urlencode(data)
    assert parse_qsl(text) == std_parse_qsl(text, keep_blank_values=True)
