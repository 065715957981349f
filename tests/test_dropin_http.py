"""The drop-in front ``/getdata/<endpoint>`` over real HTTP (the app under uvicorn on a free
port, real Redis and fakeredis, the simulator as the gateway): every parameter style of
docs/gateway-api.md and its quirks, answers read the way the gateway's PHP SDK reads them,
tokens and scopes, fan-out and all-or-nothing batches, integer ids unique under concurrency,
the reading endpoints and the calls passed on to the gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from relay.apikeys import ApiKeys
from relay.connection import text
from relay.context import Context
from relay.devices import sync_devices
from relay.simulator import Simulator
from relay.states import State
from relay.store import Message
from tests.fixtures.http import ApiServer, MakeApi
from tests.fixtures.workers import MakeSettings

PHONE = "+4915752982212"
SAVED = "Sms has been saved successfully"


@pytest.fixture
def server(make_api: MakeApi, relay_settings: MakeSettings, simulator: Simulator) -> ApiServer:
    return make_api(relay_settings(simulator))


@pytest.fixture
def ctx(server: ApiServer) -> Iterator[Context]:
    context = Context.from_settings(server.settings)
    yield context
    context.close()


@pytest.fixture
def http(server: ApiServer) -> Iterator[httpx.Client]:
    """A client that never follows redirects (the gateway's curl examples do not)."""
    with httpx.Client(base_url=server.url, timeout=10.0, follow_redirects=False) as client:
        yield client


def sdk(response: httpx.Response) -> dict[str, Any]:
    """The answer as the PHP SDK reads it: any HTTP 4xx/5xx throws, the body is JSON whatever
    its content type, and only ``error == 1`` is an error."""
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    data: dict[str, Any] = json.loads(response.content)
    return data


def ok(response: httpx.Response) -> dict[str, Any]:
    data = sdk(response)
    assert data.get("error") != 1, data
    return data


def refusal(response: httpx.Response) -> str:
    data = sdk(response)
    assert data["error"] == 1 and set(data) == {"error", "message"}, data
    message: str = data["message"]
    return message


def sms_id(response: httpx.Response) -> int:
    """``(int)$response['sms_id']`` of the SDK, after checking the value is a real int."""
    data = ok(response)
    assert data["message"] == SAVED and data["error"] == 0
    assert type(data["sms_id"]) is int
    return int(data["sms_id"])


def record(ctx: Context, number: int) -> Message:
    msg_id = ctx.conn.hget(ctx.keys.dropin_ids, str(number))
    assert msg_id is not None, f"no drop-in id {number}"
    msg = ctx.store.get(text(msg_id))
    assert msg is not None
    return msg


def nothing_stored(ctx: Context) -> bool:
    counts = ctx.conn.hgetall(ctx.keys.counts)
    return not any(int(v) for v in counts.values()) and not ctx.conn.exists(ctx.keys.dropin_seq)


# --- addsms in every parameter style ----------------------------------------------------------


def test_addsms_get_query_with_unencoded_plus_and_string_ints(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    key = server.key("send")
    query = f"token={key}&sendto=+49+157+52982212&body=Your+code+4711&device_id=260&sim=0"
    number = sms_id(http.get(f"/getdata/addsms?{query}&urgent=1&customerId=19921"))
    msg = record(ctx, number)
    assert (msg.sendto, msg.body, msg.device_id, msg.sim) == (PHONE, "Your code 4711", 260, 0)
    assert msg.urgent and msg.customerid == 19921 and msg.dropin_id == number
    assert msg.state == State.QUEUED


def test_addsms_post_form_params_as_the_php_sdk_sends_them(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    # Guzzle form_params of SmsGateway24::addSms: nulls are left out, customerId camel-cased
    form = {"sendto": PHONE, "body": "Hello", "device_id": "260", "sim": "0"}
    form |= {"customerId": "12", "urgent": "1", "token": server.key("send")}
    number = sms_id(http.post("/getdata/addsms", data=form))
    msg = record(ctx, number)
    assert (msg.customerid, msg.urgent, msg.body) == (12, True, "Hello")


def test_addsms_multipart_as_php_curl_and_npm_send_it(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    fields = {"token": server.key("send"), "sendto": "+49 157 52982212", "body": "Grüße 👋"}
    fields |= {"device_id": "261", "sim": "1", "timetosend": "2031-08-01 12:00", "urgent": "0"}
    number = sms_id(http.post("/getdata/addsms", data=fields, files={"unused": ("", b"")}))
    msg = record(ctx, number)
    assert (msg.sendto, msg.body, msg.device_id, msg.sim) == (PHONE, "Grüße 👋", 261, 1)
    assert msg.state == State.SCHEDULED
    assert msg.timetosend == datetime(2031, 8, 1, 12, 0, tzinfo=UTC)  # RELAY_DROPIN_TIMEZONE


def test_addsms_json_body_and_params_in_the_query_of_an_empty_post(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    key = server.key("send")
    body = {"token": key, "sendto": PHONE, "body": "json", "device_id": 260, "customerid": 5}
    first = sms_id(http.post("/getdata/addsms", json=body))
    query = f"token={key}&sendto=%2B4915752982212&body=query&device_id=260"
    second = sms_id(http.post(f"/getdata/addsms?{query}", content=b""))
    assert second == first + 1
    assert record(ctx, first).customerid == 5 and record(ctx, second).body == "query"


def test_trailing_slash_answers_the_same_without_a_redirect(
    server: ApiServer, http: httpx.Client
) -> None:
    form = {"token": server.key("send"), "sendto": PHONE, "body": "x", "device_id": "260"}
    sms_id(http.post("/getdata/addsms/", data=form))
    sms_id(http.post("/getdata/ADDSMS", data=form))


def test_a_comma_list_fans_out_and_answers_the_first_id(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    key = server.key("send")
    form = {"token": key, "sendto": "+4915752982212, +4915752982213", "body": "x"}
    first = sms_id(http.post("/getdata/addsms", data={**form, "device_id": "260"}))
    assert [record(ctx, n).sendto for n in (first, first + 1)] == [PHONE, "+4915752982213"]
    status = ok(http.get(f"/getdata/getsmsstatus?token={key}&sms_id={first + 1}"))
    assert status["sms_id"] == first + 1


def test_a_bad_recipient_in_a_list_stores_nothing(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    form = {"token": server.key("send"), "sendto": f"{PHONE},+49abc", "body": "x"}
    message = refusal(http.post("/getdata/addsms", data={**form, "device_id": "260"}))
    assert message.startswith("recipient 2 (+49abc): Field 'sendto'")
    assert nothing_stored(ctx)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"sendto": PHONE, "device_id": "260"}, "Field 'body' is required"),
        ({"sendto": PHONE, "body": "x"}, "Field 'device_id' is required"),
        ({"sendto": PHONE, "body": "x", "device_id": "abc"}, "Field 'device_id' must be"),
        ({"sendto": PHONE, "body": "x", "device_id": "260", "sim": "7"}, "Field 'sim' is 7"),
        ({"sendto": "", "body": "x", "device_id": "260"}, "Field 'sendto' is required"),
        ({"sendto": PHONE, "body": "x", "device_id": "1", "urgent": "maybe"}, "'urgent'"),
    ],
)
def test_invalid_messages_are_refused_naming_the_field(
    server: ApiServer, http: httpx.Client, ctx: Context, fields: dict[str, str], words: str
) -> None:
    answer = refusal(http.post("/getdata/addsms", data={**fields, "token": server.key("send")}))
    assert words in answer
    assert nothing_stored(ctx)


def test_an_image_file_is_refused_and_nothing_stored(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    fields = {"token": server.key("send"), "sendto": PHONE, "body": "", "device_id": "260"}
    files = {"file": ("cat.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    assert "relay does not carry images" in refusal(
        http.post("/getdata/addsms", data=fields, files=files)
    )
    assert nothing_stored(ctx)


def test_ids_are_unique_integers_under_concurrent_requests(server: ApiServer, ctx: Context) -> None:
    key = server.key("send")

    def send(i: int) -> int:
        form = {"token": key, "sendto": f"+49157{i:08d}", "body": f"m{i}", "device_id": "260"}
        with httpx.Client(base_url=server.url, timeout=10.0) as c:
            return sms_id(c.post("/getdata/addsms", data=form))

    with ThreadPoolExecutor(max_workers=16) as pool:
        numbers = list(pool.map(send, range(64)))
    assert sorted(numbers) == list(range(1, 65))
    assert len({record(ctx, n).id for n in numbers}) == 64


# --- tokens and scopes ---------------------------------------------------------------------------


def test_missing_wrong_and_revoked_tokens_answer_as_the_gateway(
    server: ApiServer, http: httpx.Client, ctx: Context, simulator: Simulator
) -> None:
    form = {"sendto": PHONE, "body": "x", "device_id": "260"}
    gateway = httpx.post(f"{simulator.url}addsms", data={**form, "token": "wrong"}).json()
    assert (
        refusal(http.post("/getdata/addsms", data={**form, "token": "wrong"}))
        == (gateway["message"])
    )
    missing = httpx.post(f"{simulator.url}addsms", data=form).json()
    assert refusal(http.post("/getdata/addsms", data=form)) == missing["message"]
    key = server.key("send", name="to-revoke")
    assert ApiKeys(ctx).revoke("to-revoke")
    assert refusal(http.post("/getdata/addsms", data={**form, "token": key})) == "Wrong token"
    assert refusal(http.get(f"/getdata/getsmsstatus?token={key}&sms_id=1")) == "Wrong token"
    assert nothing_stored(ctx)


def test_scopes(server: ApiServer, http: httpx.Client, ctx: Context) -> None:
    reader, sender = server.key("read"), server.key("send")
    form = {"sendto": PHONE, "body": "x", "device_id": "260"}
    assert "may not send" in refusal(http.post("/getdata/addsms", data={**form, "token": reader}))
    bulk = json.dumps({"token": reader, "smsdata": [form]})
    assert "may not send" in refusal(http.post("/getdata/addalotofsms", data={"datajson": bulk}))
    assert nothing_stored(ctx)
    number = sms_id(http.post("/getdata/addsms", data={**form, "token": sender}))
    for key in (reader, sender, server.admin_key):  # one gateway token sends and reads
        assert ok(http.get(f"/getdata/getsmsstatus?token={key}&sms_id={number}"))["status"] == 1
        assert ok(http.get(f"/getdata/getallsms?token={key}"))["count"] == 1


def test_gettoken_and_smstosend_take_a_relay_key_as_the_password(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    key = server.key("send")
    login = {"email": "shop@example.com", "pass": key}
    assert ok(http.post("/getdata/gettoken", data=login)) == {
        "error": 0,
        "message": "OK",
        "token": key,
    }
    bad = refusal(http.post("/getdata/gettoken", data={**login, "pass": "nope"}))
    assert bad == "Login or password incorrect"
    form = {**login, "sendto": PHONE, "body": "x", "device_id": "260", "sim": "0"}
    number = sms_id(http.post("/getdata/smstosend", data=form))
    assert record(ctx, number).body == "x"
    assert refusal(http.post("/getdata/smstosend", data={**form, "pass": "nope"})) == bad


# --- addalotofsms ---------------------------------------------------------------------------


def smsdata(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"sendto": f"+49 157 {i:08d}", "body": f"m{i}", "device_id": "260", "sim": 0, **extra}
        for i in range(n)
    ]


def test_addalotofsms_datajson_form_field(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    datajson = json.dumps({"token": server.key("send"), "smsdata": smsdata(3, urgent="1")})
    answer = ok(http.post("/getdata/addalotofsms", data={"datajson": datajson}))
    assert answer == {"error": 0, "message": SAVED}  # no ids, as the gateway
    msgs = [record(ctx, n) for n in (1, 2, 3)]
    assert [m.body for m in msgs] == ["m0", "m1", "m2"] and all(m.urgent for m in msgs)


def test_addalotofsms_multipart_and_raw_json_body(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    key = server.key("send")
    datajson = json.dumps({"token": key, "smsdata": smsdata(2)})
    ok(http.post("/getdata/addalotofsms", data={"datajson": datajson}, files={"x": ("", b"")}))
    ok(http.post("/getdata/addalotofsms", json={"token": key, "smsdata": smsdata(2)}))
    seq = ctx.conn.get(ctx.keys.dropin_seq)
    assert seq is not None and int(seq) == 4


def test_addalotofsms_is_all_or_nothing(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    items = smsdata(5)
    items[3]["device_id"] = "0"
    datajson = json.dumps({"token": server.key("send"), "smsdata": items})
    message = refusal(http.post("/getdata/addalotofsms", data={"datajson": datajson}))
    assert message.startswith("smsdata[3]: Field 'device_id'")
    assert nothing_stored(ctx)


# --- reading ---------------------------------------------------------------------------------


def test_getsmsstatus_new_then_relays_ending_and_unknown_ids(
    server: ApiServer, http: httpx.Client, ctx: Context
) -> None:
    key = server.key("send")
    form = {"token": key, "sendto": PHONE, "body": "x", "device_id": "260"}
    number = sms_id(http.post("/getdata/addsms", data={**form, "timetosend": "2031-01-01"}))
    status = ok(http.get(f"/getdata/getsmsstatus?token={key}&sms_id={number}"))
    assert status == {
        "error": 0,
        "sms_id": number,
        "status": 1,
        "status_description": "New",
        "message": "Ok",
    }
    server_relay_cancel(ctx, record(ctx, number).id)
    status = ok(http.post("/getdata/getsmsstatus", data={"token": key, "sms_id": str(number)}))
    assert (status["status"], status["status_description"]) == (9, "Not sent: cancelled in relay")
    assert refusal(http.get(f"/getdata/getsmsstatus?token={key}&sms_id=999")) == (
        "Sms 999 not found"
    )
    assert "whole number" in refusal(http.get(f"/getdata/getsmsstatus?token={key}&sms_id=x"))


def server_relay_cancel(ctx: Context, msg_id: str) -> None:
    from relay.produce.producer import Producer

    Producer(ctx).cancel(msg_id)


def test_getallsms_filters_and_shapes(server: ApiServer, http: httpx.Client, ctx: Context) -> None:
    key = server.key("send")
    base = {"token": key, "body": "x", "device_id": "260"}
    a = sms_id(http.post("/getdata/addsms", data={**base, "sendto": PHONE, "customerid": "7"}))
    b = sms_id(http.post("/getdata/addsms", data={**base, "sendto": "+4915700000001", "sim": "1"}))
    c = sms_id(http.post("/getdata/addsms", data={**base, "sendto": PHONE, "device_id": "261"}))

    def listing(**query: str) -> dict[str, Any]:
        return ok(http.get("/getdata/getallsms", params={"token": key, **query}))

    everything = listing()
    assert everything["count"] == 3 and everything["message"] == "Ok"
    assert list(everything["smss"]) == [str(a), str(b), str(c)]
    assert everything["sms"] == everything["smss"]  # the npm package's name
    first = everything["smss"][str(a)]
    assert first["id"] == a and first["deviceid"] == 260 and first["customerid"] == 7
    assert (first["status"], first["statustitle"], first["urgent"]) == (1, "New", 0)
    assert set(first["created"]) == {"date", "timezone_type", "timezone"}
    assert first["created"]["timezone"] == "UTC" and first["senttime"] is None
    assert list(listing(orderbydesc="1")["smss"]) == [str(c), str(b), str(a)]
    assert list(listing(device_id="260")["smss"]) == [str(a), str(b)]
    assert list(listing(sim="1")["smss"]) == [str(b)]
    assert list(listing(customerid="7")["smss"]) == [str(a)]
    assert list(listing(phone="+49 157 52982212")["smss"]) == [str(a), str(c)]
    assert listing(status="1")["count"] == 3 and listing(status="7")["count"] == 0
    assert listing(status="7")["smss"] == []  # PHP's json_encode of an empty array
    assert listing(onlycount="1") == {
        "error": 0,
        "smss": [],
        "count": 3,
        "message": "Ok",
        "sms": [],
    }
    today = datetime.now(UTC).date()
    assert listing(begindate=str(today), enddate=str(today))["count"] == 3
    assert listing(enddate=str(today - timedelta(days=1)))["count"] == 0
    sydney = listing(timezone="Australia/Sydney")["smss"][str(a)]["created"]
    assert sydney["timezone"] == "Australia/Sydney"
    assert "Field 'begindate'" in refusal(
        http.get("/getdata/getallsms", params={"token": key, "begindate": "yesterday"})
    )
    assert "time zone" in refusal(
        http.get("/getdata/getallsms", params={"token": key, "timezone": "Mars/Base"})
    )


def test_devices_from_relays_sync(server: ApiServer, http: httpx.Client, ctx: Context) -> None:
    key = server.key("read")
    sync_devices(ctx)
    devices = ok(http.get(f"/getdata/getalldevices?token={key}"))
    assert devices["count"] == 2 and set(devices["device"]) == {"260", "261"}
    phone = devices["device"]["260"]
    assert phone["id"] == 260 and phone["title"] == "phone 260"
    assert set(phone["lastseen"]) == {"date", "timezone_type", "timezone"}
    assert phone["siminfo"][0]["Slot"] == "0"
    status = ok(http.get(f"/getdata/getdevicestatus?token={key}&device_id=260"))
    # LastSeenDate(string, int, string), device_id int, title string: as the SDK builds them
    seen = status["lastseen"]
    assert isinstance(seen["date"], str) and type(seen["timezone_type"]) is int
    assert isinstance(seen["timezone"], str)
    assert type(status["device_id"]) is int and isinstance(status["title"], str)
    assert status["online"] is True and status["error"] == 0
    assert refusal(http.get(f"/getdata/getdevicestatus?token={key}&device_id=9")) == (
        "Device 9 not found"
    )


def test_getalldevices_syncs_once_when_relay_never_did(
    server: ApiServer, http: httpx.Client
) -> None:
    devices = ok(http.get(f"/getdata/getalldevices?token={server.key('read')}"))
    assert devices["count"] == 2


# --- passed on to the gateway ---------------------------------------------------------------


def test_tags_contacts_and_newsletters_go_to_the_gateway_with_relays_credentials(
    server: ApiServer, http: httpx.Client, simulator: Simulator
) -> None:
    key = server.key("send")
    tag = ok(http.post("/getdata/savetag", data={"token": key, "title": "Rich customers"}))
    assert tag["error"] == 0 and type(tag["tag_id"]) is int
    contact = ok(
        http.post(
            "/getdata/savecontact",
            data={"token": key, "fullname": "Support", "phone": PHONE, "tag_id": tag["tag_id"]},
        )
    )
    assert type(contact["contact_id"]) is int
    form = {"token": key, "title": "News", "device_id": "260", "body": "Hi", "tags": "1"}
    paket = ok(http.post("/getdata/savepaket", data={**form, "tags": str(tag["tag_id"])}))
    assert type(paket["paket_id"]) is int and paket["paket"] == paket["paket_id"]
    assert refusal(http.post("/getdata/savecontact", data={**form, "phone": PHONE})) == (
        "Field 'tag_id' is required"
    )
    unknown = refusal(http.post("/getdata/savepaket", data={**form, "device_id": "99"}))
    assert unknown == "Device 99 not found"  # the gateway's own words
    for answer in (tag, contact, paket):
        assert simulator.token not in json.dumps(answer)


# --- whatever arrives ------------------------------------------------------------------------


JSON_TYPE = {"content-type": "application/json"}
FORM_TYPE = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("path", "kwargs", "words"),
    [
        ("/getdata/nothing", {}, "Unknown method"),
        ("/getdata/addsms", {"content": b"{oops", "headers": JSON_TYPE}, "JSON"),
        ("/getdata/addsms", {"content": b"a=%ff", "headers": FORM_TYPE}, "UTF-8"),
        ("/getdata/addalotofsms", {"data": {"datajson": "[1"}}, "Field 'datajson'"),
        ("/getdata/addsms", {"content": b"x" * 2048}, "larger than 1024 bytes"),
    ],
)
def test_garbage_gets_an_error_answer_never_a_stack_trace(
    make_api: MakeApi,
    relay_settings: MakeSettings,
    path: str,
    kwargs: dict[str, Any],
    words: str,
) -> None:
    small = make_api(relay_settings(api_body_max=1024))
    with httpx.Client(base_url=small.url) as c:
        assert words in refusal(c.post(path, **kwargs))
