"""schemathesis against the served /openapi.json: every operation fuzzed over real HTTP (a
modest number of examples each, valid and invalid input alike, so CI stays quick); no answer
is a 5xx, and every answer's status, content type and body match the document. Real Redis
(the fakeredis side of the same routes runs in test_api.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.settings import load_settings
from tests.fixtures.http import ApiServer, start_in_thread

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_server(real_redis_url: str) -> Iterator[ApiServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = start_in_thread(
        load_settings(redis_url=real_redis_url, key_prefix=prefix, log_level="WARNING")
    )
    yield server
    server.stop()
    conn = redis.Redis.from_url(real_redis_url)
    keys = list(conn.scan_iter(match=f"{prefix}:*")) + list(conn.scan_iter(match=f"rq:*{prefix}*"))
    for i in range(0, len(keys), 500):
        conn.delete(*keys[i : i + 500])
    conn.close()


OPERATIONS = [
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/batch"),
    ("GET", "/v1/messages/{msg_id}"),
    ("DELETE", "/v1/messages/{msg_id}"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/devices"),
    ("GET", "/v1/dead"),
    ("POST", "/v1/dead/{msg_id}/retry"),
    ("DELETE", "/v1/dead/{msg_id}"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/recent"),
    ("GET", "/v1/history"),
    ("GET", "/v1/lookup"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/getdata/{endpoint}"),
    ("POST", "/getdata/{endpoint}"),
    # last: a fuzzed DELETE may revoke keys
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{name}"),
]


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: ApiServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def test_the_list_names_every_operation(api_schema: Any) -> None:
    documented = {
        (method.upper(), path)
        for path, methods in api_schema.raw_schema["paths"].items()
        for method in methods
    }
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_answers_as_documented(
    api_schema: Any, fuzzed_server: ApiServer, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    auth = {"Authorization": f"Bearer {fuzzed_server.admin_key}"}

    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case[Any]) -> None:
        if case.path == "/v1/events":
            # an event stream never ends by itself: bound it so the answer can be read
            case.query = {**(case.query or {}), "timeout": 0.05}
        case.call_and_validate(base_url=fuzzed_server.url, headers=auth, checks=CHECKS, timeout=30)

    fuzz()


def test_event_stream_events_match_the_document(api_schema: Any, fuzzed_server: ApiServer) -> None:
    """Fuzzing rarely replays stored events; this reads some for certain and checks each
    event's JSON against the document (``contentSchema`` of ``data``)."""
    auth = {"Authorization": f"Bearer {fuzzed_server.admin_key}"}
    with fuzzed_server.client() as c:
        c.post("/v1/messages", json={"sendto": "+4915752982212", "body": "x", "device_id": 260})
    case = api_schema["/v1/events"]["GET"].Case(query={"timeout": 0.2, "last_event_id": "0"})
    response = case.call_and_validate(
        base_url=fuzzed_server.url, headers=auth, checks=CHECKS, timeout=30
    )
    assert response.text.count("\ndata: {") >= 1
