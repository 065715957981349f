"""``GET /v1/events`` (Server-Sent Events) over real HTTP, on a real Redis and fakeredis:
resume after a disconnect with Last-Event-ID loses no event and repeats none; filters;
the comment heartbeat."""

from __future__ import annotations

import json
from typing import Any

import httpx

from relay.context import Context
from relay.presence import Presence, record
from tests.fixtures.http import ApiServer, MakeApi
from tests.fixtures.workers import MakeSettings

MSG = {"sendto": "+4915752982212", "body": "hello", "device_id": 260}


def parse(lines: list[str]) -> list[dict[str, Any]]:
    """SSE events (``id`` and JSON ``data``) of ``lines``."""
    events, current = [], {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
    return events


def read_all(
    c: httpx.Client, params: dict[str, Any], headers: dict[str, str] | None = None
) -> list[str]:
    """Every line of a stream the server ends itself (``timeout``)."""
    with c.stream("GET", "/v1/events", params=params, headers=headers or {}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(r.iter_lines())


def send(c: httpx.Client, n: int, **extra: Any) -> list[str]:
    return [c.post("/v1/messages", json={**MSG, **extra}).json()["id"] for _ in range(n)]


def test_resume_after_disconnect_loses_no_event(api: ApiServer) -> None:
    with api.client() as c:
        first = send(c, 3)  # before the stream opens: not shown without Last-Event-ID
        received: list[dict[str, Any]] = []
        with c.stream("GET", "/v1/events") as r:
            lines = r.iter_lines()
            assert next(lines) == ": connected"
            batch1 = send(c, 5)
            buffer: list[str] = []
            for line in lines:
                buffer.append(line)
                if len(parse(buffer)) == 3:
                    break
            received += parse(buffer)
        # the client went away after 3 of 5 events; more happen meanwhile
        batch2 = send(c, 4)
        last = received[-1]["id"]
        rest = parse(read_all(c, {"timeout": 1.0}, {"Last-Event-ID": last}))
        received += rest
    ids = [e["data"]["id"] for e in received]
    assert ids == batch1 + batch2
    assert not set(first) & set(ids)
    stream_ids = [tuple(map(int, e["id"].split("-"))) for e in received]
    assert stream_ids == sorted(set(stream_ids))
    assert all(e["data"]["event_id"] == e["id"] for e in received)
    assert {e["data"]["state"] for e in received} == {"queued"}


def test_query_resume_and_filters(api: ApiServer) -> None:
    with api.client() as c:
        start = read_all(c, {"timeout": 0.05})  # nothing yet
        assert parse(start) == []
        a, b = send(c, 2, timetosend=4102444800)
        assert c.delete(f"/v1/messages/{a}").status_code == 200
        everything = parse(read_all(c, {"timeout": 0.5, "last_event_id": "0"}))
        assert [(e["data"]["id"], e["data"]["state"]) for e in everything] == [
            (a, "scheduled"),
            (b, "scheduled"),
            (a, "cancelled"),
        ]
        only_b = parse(read_all(c, {"timeout": 0.5, "last_event_id": "0", "id": b}))
        assert [e["data"]["id"] for e in only_b] == [b]
        finals = parse(read_all(c, {"timeout": 0.5, "last_event_id": "0-0", "final": "1"}))
        assert [(e["data"]["id"], e["data"]["final"]) for e in finals] == [(a, True)]
        bad = c.get("/v1/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"


def test_device_events_are_streamed_and_filtered_like_messages(
    api: ApiServer, relay_settings: MakeSettings
) -> None:
    ctx = Context.from_settings(relay_settings())
    try:
        with api.client() as c:
            (queued,) = send(c, 1)
            record(ctx, [Presence(260, False, ctx.now_ms() - 300_000)])
            (device,) = c.get("/v1/devices").json()  # 260: relay has a lane for it
            assert (device["id"], device["offline"]) == (260, True)
            record(ctx, [Presence(260, True, ctx.now_ms())])
            assert c.get("/v1/devices").json()[0]["offline"] is False
            everything = parse(read_all(c, {"timeout": 0.5, "last_event_id": "0"}))
            only_message = parse(read_all(c, {"timeout": 0.3, "last_event_id": "0", "id": queued}))
    finally:
        ctx.close()
    shown = [(e["data"]["event"], e["data"]["id"], e["data"]["state"]) for e in everything]
    assert shown == [
        ("message", queued, "queued"),
        ("device.offline", "", "offline"),
        ("device.online", "", "online"),
    ]
    assert everything[1]["data"]["device_id"] == 260 and everything[1]["data"]["lastseen_ms"]
    assert [e["data"]["id"] for e in only_message] == [queued]


def test_heartbeat_comment(make_api: MakeApi) -> None:
    api = make_api(api_sse_heartbeat=0.1)
    with api.client() as c:
        lines = read_all(c, {"timeout": 0.6})
    assert lines.count(": heartbeat") >= 3
