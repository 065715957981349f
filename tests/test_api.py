"""The native HTTP API over real HTTP (uvicorn in a thread), on a real Redis and fakeredis:
every /v1 route, every error code in the one error shape, idempotency under concurrent
retries, batches validated whole, metrics, the OpenAPI document and /docs without a CDN."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from relay.connection import text
from relay.keys import Keys
from relay.lanes import LaneId
from relay.states import State
from relay.store import Store
from tests.fixtures.http import ApiServer, MakeApi

PHONE = "+4915752982212"
MSG: dict[str, Any] = {"sendto": PHONE, "body": "Your code is 4711", "device_id": 260}


def stored(conn: redis.Redis, prefix: str) -> set[bytes]:
    """Every key of relay's under ``prefix`` except the API keys themselves."""
    return {
        k for k in conn.scan_iter(match=f"{prefix}:*", count=1000) if b":apikey" not in k
    } | set(conn.scan_iter(match=f"rq:*{prefix}*", count=1000))


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of ``response``, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert "Traceback" not in response.text
    return error


# --- auth ------------------------------------------------------------------------------


def test_missing_wrong_and_revoked_keys_get_the_same_401(api: ApiServer) -> None:
    from relay.apikeys import ApiKeys
    from relay.context import Context

    key = api.key("send", name="soon-revoked")
    with api.client(key) as c:
        assert c.post("/v1/messages", json=MSG).status_code == 202
    ctx = Context.from_settings(api.settings)
    assert ApiKeys(ctx).revoke("soon-revoked")
    ctx.close()
    answers = []
    for headers in (
        {},
        {"Authorization": "Bearer rk_not-a-key"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": f"Bearer {key}"},  # revoked
    ):
        with httpx.Client(base_url=api.url, headers=headers) as c:
            r = c.post("/v1/messages", json=MSG)
            assert r.headers["www-authenticate"] == "Bearer"
            answers.append(error_of(r, 401))
    assert all(a == answers[0] for a in answers)
    assert answers[0]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("scope", "method", "path", "allowed"),
    [
        ("read", "POST", "/v1/messages", False),
        ("read", "GET", "/v1/stats", True),
        ("read", "POST", "/v1/dead/0abc/retry", False),
        ("send", "GET", "/v1/stats", False),
        ("send", "GET", "/v1/events?timeout=0.1", False),
        ("send", "GET", "/v1/dead", False),
        ("send", "DELETE", "/v1/dead/0abc", False),
        ("read", "GET", "/v1/events?timeout=0.1", True),
        ("admin", "DELETE", "/v1/dead/0abc", True),
    ],
)
def test_scopes(api: ApiServer, scope: str, method: str, path: str, allowed: bool) -> None:
    with api.client(api.key(scope)) as c:
        r = c.request(method, path, json=MSG if method == "POST" else None)
    if allowed:
        assert r.status_code not in (401, 403), r.text
    else:
        assert error_of(r, 403)["code"] == "forbidden"


def test_send_and_read_keys_both_follow_a_message(api: ApiServer) -> None:
    with api.client(api.key("send")) as sender:
        sent = sender.post("/v1/messages", json=MSG)
        assert sender.get(sent.headers["location"]).status_code == 200
    with api.client(api.key("read")) as reader:
        assert reader.get(sent.headers["location"]).json()["id"] == sent.json()["id"]


# --- POST /v1/messages -----------------------------------------------------------------


def test_send_answers_202_with_location_and_stores_through_the_producer(api: ApiServer) -> None:
    with api.client() as c:
        r = c.post("/v1/messages", json={**MSG, "urgent": True, "sim": "1", "customerid": 7})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body == {"id": body["id"], "state": "queued"}
        assert r.headers["location"] == f"/v1/messages/{body['id']}"
        record = c.get(r.headers["location"]).json()
    assert record["urgent"] is True and record["sim"] == 1 and record["customerid"] == 7
    assert record["state"] == "queued" and record["sendto"] == PHONE
    keys = Keys(api.settings.key_prefix)
    conn = redis.Redis.from_url(api.settings.redis_url)
    assert [text(i) for i in conn.lrange(keys.lane(LaneId("u", 260, 1)), 0, -1)] == [body["id"]]
    conn.close()


def test_send_scheduled_message(api: ApiServer) -> None:
    with api.client() as c:
        r = c.post("/v1/messages", json={**MSG, "timetosend": "2099-01-01T00:00:00Z"})
    assert r.status_code == 202 and r.json()["state"] == "scheduled"


def test_twenty_concurrent_retries_of_one_key_store_one_message(api: ApiServer) -> None:
    conn = redis.Redis.from_url(api.settings.redis_url)
    before = len(list(conn.scan_iter(match=f"{api.settings.key_prefix}:m:*")))

    def attempt(_: int) -> httpx.Response:
        with api.client() as c:
            return c.post("/v1/messages", json=MSG, headers={"Idempotency-Key": "order-42"})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(attempt, range(20)))
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1
    assert sorted(r.status_code for r in answers) == [200] * 19 + [202]
    after = len(list(conn.scan_iter(match=f"{api.settings.key_prefix}:m:*")))
    assert after - before == 1
    # the body's key is the same key; a repeat says the current state
    with api.client() as c:
        again = c.post("/v1/messages", json={**MSG, "key": "order-42"})
    assert again.status_code == 200 and again.json() == {"id": ids.pop(), "state": "queued"}
    conn.close()


def test_key_field_and_header_must_agree(api: ApiServer) -> None:
    with api.client() as c:
        r = c.post("/v1/messages", json={**MSG, "key": "a"}, headers={"Idempotency-Key": "b"})
    assert error_of(r, 422)["field"] == "key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**MSG, "sendto": "call me"}, "sendto"),
        ({**MSG, "body": ""}, "body"),
        ({**MSG, "device_id": 0}, "device_id"),
        ({**MSG, "sim": 9}, "sim"),
        ({**MSG, "urgent": "maybe"}, "urgent"),
        ({**MSG, "colour": "red"}, "colour"),
        ({"sendto": PHONE, "body": "x"}, "device_id"),
        ({**MSG, "timetosend": "next tuesday"}, "timetosend"),
        ({**MSG, "key": ""}, "key"),
        ({**MSG, "ttl": 0}, "ttl"),
        ({**MSG, "ttl": "soon"}, "ttl"),
    ],
)
def test_invalid_message_names_the_field_and_stores_nothing(
    api: ApiServer, body: dict[str, Any], field: str
) -> None:
    conn = redis.Redis.from_url(api.settings.redis_url)
    before = stored(conn, api.settings.key_prefix)
    with api.client() as c:
        error = error_of(c.post("/v1/messages", json=body), 422)
    assert error["field"] == field and error["code"] == "invalid"
    assert stored(conn, api.settings.key_prefix) == before
    conn.close()


def test_a_ttl_is_kept_and_shown_as_expires(api: ApiServer) -> None:
    with api.client() as c:
        answer = c.post("/v1/messages", json={**MSG, "ttl": 300})
        assert answer.status_code == 202, answer.text
        shown = c.get(f"/v1/messages/{answer.json()['id']}").json()
        plain = c.get(f"/v1/messages/{c.post('/v1/messages', json=MSG).json()['id']}").json()
    queued = datetime.fromisoformat(shown["times"]["queued"])
    assert datetime.fromisoformat(shown["expires"]) - queued == timedelta(seconds=300)
    assert plain["expires"] is None


def test_body_errors_415_422_413(make_api: MakeApi) -> None:
    api = make_api(api_body_max=2048)
    with api.client() as c:
        assert error_of(c.post("/v1/messages", content=b"sendto=1"), 415)["code"] == (
            "unsupported_media_type"
        )
        bad = c.post("/v1/messages", content=b"{nope", headers={"content-type": "application/json"})
        assert error_of(bad, 422)["code"] == "invalid_json"
        nested = c.post(
            "/v1/messages",
            content=b"[" * 100_0 + b"]" * 100_0,
            headers={"content-type": "application/json"},
        )
        assert error_of(nested, 422)["code"] == "invalid_json"
        array = c.post("/v1/messages", json=[MSG])
        assert error_of(array, 422)["code"] == "invalid"
        big = c.post("/v1/messages", json={**MSG, "body": "x" * 5000})
        assert error_of(big, 413)["code"] == "payload_too_large"


# --- batches ---------------------------------------------------------------------------


def test_batch_gives_ids_in_input_order(api: ApiServer) -> None:
    items = [{**MSG, "sendto": f"+49157000000{i:02d}", "customerid": i} for i in range(30)]
    with api.client() as c:
        r = c.post("/v1/messages/batch", json={"messages": items})
        assert r.status_code == 202, r.text
        ids = r.json()["ids"]
        assert len(ids) == 30 and len(set(ids)) == 30
        for i in (0, 17, 29):
            assert c.get(f"/v1/messages/{ids[i]}").json()["customerid"] == i


def test_batch_lists_every_bad_item_and_stores_nothing(api: ApiServer) -> None:
    conn = redis.Redis.from_url(api.settings.redis_url)
    before = stored(conn, api.settings.key_prefix)
    items = [MSG, {**MSG, "sendto": "x"}, MSG, {**MSG, "body": 5}, "not an object", MSG]
    with api.client() as c:
        error = error_of(c.post("/v1/messages/batch", json={"messages": items}), 422)
    assert [(e["index"], e["field"]) for e in error["errors"]] == [
        (1, "sendto"),
        (3, "body"),
        (4, "item"),
    ]
    assert all(e["message"] for e in error["errors"])
    assert stored(conn, api.settings.key_prefix) == before
    conn.close()


def test_batch_limits_and_shape(make_api: MakeApi) -> None:
    api = make_api(api_batch_max=3)
    with api.client() as c:
        assert (
            error_of(c.post("/v1/messages/batch", json={"messages": [MSG] * 4}), 413)["field"]
            == "messages"
        )
        assert error_of(c.post("/v1/messages/batch", json={"messages": []}), 422)
        assert error_of(c.post("/v1/messages/batch", json={"messages": MSG}), 422)
        assert error_of(c.post("/v1/messages/batch", json={"msgs": [MSG]}), 422)["field"] == (
            "msgs"
        )
        keyed = [{**MSG, "key": "k1"}, {**MSG, "key": "k1"}]
        first = c.post("/v1/messages/batch", json={"messages": keyed})
        assert first.status_code == 202 and len(set(first.json()["ids"])) == 1
        repeat = c.post("/v1/messages/batch", json={"messages": keyed})
        assert repeat.status_code == 200 and repeat.json() == first.json()


# --- one message -----------------------------------------------------------------------


def test_unknown_message_is_404(api: ApiServer) -> None:
    with api.client() as c:
        assert error_of(c.get("/v1/messages/0000000000000"), 404)["code"] == "not_found"
        assert error_of(c.get("/v1/messages/%E2%9C%93"), 404)
        assert error_of(c.delete("/v1/messages/NOT-AN-ID"), 404)


def test_cancel_then_409_with_the_state(api: ApiServer) -> None:
    with api.client() as c:
        msg_id = c.post("/v1/messages", json={**MSG, "timetosend": 4102444800}).json()["id"]
        r = c.delete(f"/v1/messages/{msg_id}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        error = error_of(c.delete(f"/v1/messages/{msg_id}"), 409)
    assert error["state"] == "cancelled" and error["code"] == "conflict"


# --- results ---------------------------------------------------------------------------


def _rejected(api: ApiServer) -> str:
    """A message that ended rejected, as the dispatcher leaves one (state and dead index)."""
    with api.client() as c:
        msg_id: str = c.post("/v1/messages", json=MSG).json()["id"]
    keys = Keys(api.settings.key_prefix)
    conn = redis.Redis.from_url(api.settings.redis_url)
    store = Store(conn, keys)
    assert store.transition([msg_id], State.SUBMITTING, [State.QUEUED])
    assert store.transition(
        [msg_id], State.REJECTED, [State.SUBMITTING], fields={"error": "bad"}, add_index=keys.dead
    )
    conn.lrem(keys.lane(LaneId("b", 260, 0)), 0, msg_id)
    conn.close()
    return msg_id


def test_stats_devices_and_dead(api: ApiServer) -> None:
    dead_id = _rejected(api)
    with api.client() as c:
        stats = c.get("/v1/stats").json()
        assert stats["states"]["rejected"] == 1 and "totals" in stats
        devices = c.get("/v1/devices").json()
        assert [d["id"] for d in devices] == [260] and devices[0]["known"] is False
        dead = c.get("/v1/dead").json()
        assert [d["id"] for d in dead] == [dead_id] and dead[0]["error"] == "bad"
        assert error_of(c.get("/v1/dead?limit=0"), 422)["field"] == "limit"
        retried = c.post(f"/v1/dead/{dead_id}/retry")
        assert retried.json() == {"id": dead_id, "state": "queued"}
        assert error_of(c.post(f"/v1/dead/{dead_id}/retry"), 409)["state"] == "queued"
        assert error_of(c.delete("/v1/dead/0unknown000000"), 404)


def test_purge_dead(api: ApiServer) -> None:
    dead_id = _rejected(api)
    with api.client() as c:
        assert c.delete(f"/v1/dead/{dead_id}").json() == {"id": dead_id, "state": "purged"}
        assert error_of(c.get(f"/v1/messages/{dead_id}"), 404)


# --- keys -------------------------------------------------------------------------------


def test_admin_manages_keys_over_http(api: ApiServer) -> None:
    with api.client() as c:
        made = c.post("/v1/keys", json={"name": "crm", "scope": "read"})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        assert made.json()["scopes"] == ["read"] and key.startswith("rk_")
        assert error_of(c.post("/v1/keys", json={"name": "crm"}), 409)["code"] == "conflict"
        assert error_of(c.post("/v1/keys", json={"name": "x y"}), 422)["field"] == "name"
        assert (
            error_of(c.post("/v1/keys", json={"name": "z", "scope": "root"}), 422)["field"]
            == "scope"
        )
        listed = c.get("/v1/keys").json()
        assert {k["name"] for k in listed} == {"admin", "crm"}
        assert key not in c.get("/v1/keys").text
        with api.client(key) as reader:
            assert reader.get("/v1/stats").status_code == 200
            assert error_of(reader.get("/v1/keys"), 403)
            assert error_of(reader.post("/v1/keys", json={"name": "mine"}), 403)
            assert c.delete("/v1/keys/crm").json()["name"] == "crm"
            assert error_of(reader.get("/v1/stats"), 401)
        assert error_of(c.delete("/v1/keys/crm"), 404)


# --- health, metrics, errors of the framework ------------------------------------------


def test_health_ready_and_metrics(api: ApiServer) -> None:
    with api.client("") as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
    with api.client() as c:
        c.post("/v1/messages", json=MSG)
        c.get("/v1/messages/0000000000000")
        text = c.get("/metrics").text
    assert 'relay_http_requests_total{method="POST",route="/v1/messages",status="202"} 1.0' in text
    assert re.search(
        r'relay_http_request_duration_seconds_bucket\{le="0.1",method="GET",'
        r'route="/v1/messages/\{msg_id\}",status="404"\} 1.0',
        text,
    )
    assert "relay_stats_up 1.0" in text
    assert 'relay_lane_depth{device="260",lane="bulk",sim="0"} 1.0' in text


def test_unknown_route_and_method_use_the_error_shape(api: ApiServer) -> None:
    with api.client() as c:
        assert error_of(c.get("/v1/nothing"), 404)["code"] == "not_found"
        assert error_of(c.put("/v1/messages"), 405)["code"] == "method_not_allowed"
        assert error_of(c.get("/getdata/"), 404)


def test_openapi_document_and_docs_need_no_cdn(api: ApiServer) -> None:
    with api.client("") as c:
        doc = c.get("/openapi.json").json()
        page = c.get("/docs")
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        for asset in assets:
            assert asset.startswith("/"), asset
            assert c.get(asset).status_code == 200, asset
    assert doc["openapi"].startswith("3.1")
    assert {
        "/v1/messages",
        "/v1/messages/batch",
        "/v1/messages/{msg_id}",
        "/v1/stats",
        "/v1/devices",
        "/v1/dead",
        "/v1/dead/{msg_id}/retry",
        "/v1/dead/{msg_id}",
        "/v1/events",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/keys",
        "/v1/keys/{name}",
    } <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    send = doc["paths"]["/v1/messages"]["post"]
    assert send["security"] == [{"apiKey": []}]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessageIn"
    }
    assert doc["components"]["schemas"]["MessageIn"]["examples"]
    assert "http://" not in page.text and "https://" not in page.text
    assert len(assets) >= 2
