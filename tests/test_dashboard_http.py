"""The dashboard's doors over real HTTP (uvicorn in a thread), on a real Redis and fakeredis:
``/v1/history``, ``/v1/events/recent`` and ``/v1/lookup`` with Bearer keys; the login that
exchanges a key for a session cookie (stored in Redis, never the key), CSRF on changes made
with that cookie, revocation ending sessions, logout; and the page itself."""

from __future__ import annotations

import re

import httpx
import pytest

from relay.api.sessions import COOKIE, SESSION_TTL_S
from relay.apikeys import ApiKeys
from relay.connection import text
from relay.context import Context
from tests.fixtures.http import ApiServer
from tests.test_api import MSG, error_of


def send(api: ApiServer, n: int = 1, **extra: object) -> list[str]:
    with api.client() as client:
        return [
            client.post("/v1/messages", json={**MSG, **extra, "body": f"m{i}"}).json()["id"]
            for i in range(n)
        ]


def login(api: ApiServer, key: str) -> httpx.Client:
    """A client that logged in through the form, holding the session cookie."""
    client = httpx.Client(base_url=api.url, timeout=10)
    form = client.get("/dashboard/login")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post("/dashboard/login", data={"token": token.group(1), "key": key})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/dashboard"
    return client


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/dashboard")
    assert page.status_code == 200
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("path", ["/v1/history", "/v1/events/recent", "/v1/lookup?q=12345"])
def test_the_dashboards_routes_need_a_key_that_may_read(api: ApiServer, path: str) -> None:
    with api.client("") as anonymous:
        error_of(anonymous.get(path), 401)
    with api.client(api.key("send")) as sender:
        error_of(sender.get(path), 403)
    with api.client(api.key("read")) as reader:
        assert reader.get(path).status_code == 200


def test_history_counts_what_the_api_did(api: ApiServer) -> None:
    ids = send(api, 3)
    with api.client() as client:
        for msg_id in ids[:2]:
            assert client.delete(f"/v1/messages/{msg_id}").status_code == 200
        doc = client.get("/v1/history", params={"minutes": 2}).json()
        assert len(doc["throughput"]) == 2
        assert sum(row["cancelled"] for row in doc["throughput"]) == 2
        error_of(client.get("/v1/history", params={"minutes": 0}), 422)
        error_of(client.get("/v1/history", params={"minutes": 1441}), 422)


def test_recent_events_come_newest_first_and_page_back(api: ApiServer) -> None:
    ids = send(api, 5)
    with api.client() as client:
        newest = client.get("/v1/events/recent", params={"limit": 3}).json()
        assert [e["id"] for e in newest] == ids[:1:-1]
        older = client.get(
            "/v1/events/recent", params={"limit": 10, "before": newest[-1]["event_id"]}
        ).json()
        assert [e["id"] for e in older] == ids[1::-1]
        assert error_of(client.get("/v1/events/recent", params={"before": "x"}), 422)["field"]


def test_lookup_over_http(api: ApiServer) -> None:
    [msg_id] = send(api)
    with api.client() as client:
        by_id = client.get("/v1/lookup", params={"q": msg_id}).json()
        assert [m["id"] for m in by_id["messages"]] == [msg_id]
        assert by_id["messages"][0]["via"] == "id"
        assert [e["state"] for e in by_id["messages"][0]["events"]] == ["queued"]
        by_phone = client.get("/v1/lookup", params={"q": "015752982212"}).json()
        assert [m["id"] for m in by_phone["messages"]] == [msg_id]
        error_of(client.get("/v1/lookup", params={"q": ""}), 422)
        error_of(client.get("/v1/lookup", params={"q": "1", "scan": 10**9}), 422)


def test_login_gives_a_session_cookie_and_never_stores_the_key(
    api: ApiServer, redis_url: str
) -> None:
    key = api.key("read")
    client = login(api, key)
    cookie = next(c for c in client.cookies.jar if c.name == COOKIE)
    assert cookie.value is not None and cookie.value != key and key not in cookie.value
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.path == "/"
    raw = httpx.Client(base_url=api.url)
    form = raw.get("/dashboard/login")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    answer = raw.post("/dashboard/login", data={"token": token.group(1), "key": key})
    set_cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    raw.close()

    ctx = Context.from_settings(api.settings)
    sessions = list(ctx.conn.scan_iter(match=f"{api.settings.key_prefix}:session:*"))
    assert len(sessions) == 2
    for name in sessions:
        assert 0 < ctx.conn.ttl(name) <= SESSION_TTL_S
        stored = " ".join(text(v) for v in ctx.conn.hgetall(name).values())
        assert key not in stored and cookie.value not in stored + text(name)
    assert client.get("/v1/stats").status_code == 200
    client.close()
    ctx.close()


def test_the_login_refuses_bad_keys_and_forged_forms(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as client:
        form = client.get("/dashboard/login")
        assert form.status_code == 200 and "Content-Security-Policy" in form.headers
        token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert token is not None
        wrong = client.post("/dashboard/login", data={"token": token.group(1), "key": "rk_nope"})
        assert "Unknown or revoked API key" in wrong.text and COOKIE not in client.cookies
        token = re.search(r'name="token" value="([^"]+)"', wrong.text)  # a new form, a new token
        assert token is not None
        sender = client.post(
            "/dashboard/login", data={"token": token.group(1), "key": api.key("send")}
        )
        assert "cannot read the dashboard" in sender.text and COOKIE not in client.cookies
    with httpx.Client(base_url=api.url, timeout=10) as forged:  # no login cookie: cross-site
        answer = forged.post("/dashboard/login", data={"token": "x" * 43, "key": api.admin_key})
        assert "The form expired" in answer.text and COOKIE not in forged.cookies


def test_changes_made_with_the_cookie_need_the_csrf_token(api: ApiServer) -> None:
    [msg_id] = send(api)
    client = login(api, api.admin_key)
    token = csrf_of(client)
    error = error_of(client.delete(f"/v1/messages/{msg_id}"), 403)
    assert error["code"] == "csrf"
    error_of(client.delete(f"/v1/messages/{msg_id}", headers={"X-CSRF-Token": "x" * 43}), 403)
    with api.client() as bearer:
        assert bearer.get(f"/v1/messages/{msg_id}").json()["state"] == "queued"
    done = client.delete(f"/v1/messages/{msg_id}", headers={"X-CSRF-Token": token})
    assert done.status_code == 200 and done.json()["state"] == "cancelled"
    error_of(client.post("/v1/dead/0000/retry", headers={"X-CSRF-Token": token}), 404)
    client.close()


def test_revoking_the_key_ends_its_sessions_and_logout_ends_one(api: ApiServer) -> None:
    key = api.key("read", name="watcher")
    first, second = login(api, key), login(api, key)
    assert first.get("/v1/stats").status_code == 200
    error_of(first.post("/dashboard/logout", data={"csrf": "wrong"}), 403)
    out = first.post("/dashboard/logout", data={"csrf": csrf_of(first)})
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    error_of(first.get("/v1/stats"), 401)
    assert second.get("/v1/stats").status_code == 200
    ctx = Context.from_settings(api.settings)
    assert ApiKeys(ctx).revoke("watcher")
    error_of(second.get("/v1/stats"), 401)
    assert second.get("/dashboard").status_code == 303
    ctx.close()
    first.close()
    second.close()


def test_the_page_holds_no_data_and_wants_a_key(api: ApiServer) -> None:
    [msg_id] = send(api)
    with api.client("") as anonymous:
        answer = anonymous.get("/dashboard")
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    with api.client("rk_wrong") as wrong:
        error_of(wrong.get("/dashboard"), 401)
    with api.client(api.key("send")) as sender:
        error_of(sender.get("/dashboard"), 403)
    with api.client(api.key("read", name="night-shift")) as reader:
        page = reader.get("/dashboard")
        assert page.status_code == 200 and "night-shift" in page.text
        assert msg_id not in page.text and MSG["sendto"] not in page.text
        assert page.headers["cache-control"] == "no-store"
        assert 'name="relay-can-act" content="0"' in page.text
    with api.client() as admin:
        assert 'name="relay-can-act" content="1"' in admin.get("/dashboard").text
