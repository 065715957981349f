"""GatewayClient over real sockets, never a mock transport.

Two servers:

- ``ScriptedGateway``, a tiny stdlib HTTP server on 127.0.0.1 whose answers each test
  scripts byte for byte (HTML, empty bodies, 5xx, dropped / reset / truncated connections,
  slow answers), for the failure paths that need exact wire control. It records every
  request so the tests check the exact form sent.
- the project's gateway simulator (``simulator`` / ``make_simulator`` fixtures,
  relay/simulator), at the bottom: every endpoint end to end, what it stored, its faults.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from structlog.testing import capture_logs

from relay.clock import FakeClock
from relay.errors import (
    ConfigError,
    GatewayAuthError,
    GatewayBadResponse,
    GatewayRejected,
    GatewayServerError,
    GatewayUnavailable,
    NotSent,
    OutcomeUnknown,
    ValidationError,
)
from relay.gateway import GatewayClient, OutgoingSms
from relay.gateway.wire import Backoff
from relay.settings import load_settings
from relay.simulator import FINAL_CODES, SimDevice, Simulator
from tests.fixtures.simulator import MakeSimulator

SAMPLES = Path(__file__).parent / "data" / "api_samples"
TOKEN = "tok-3f9a0c5d1e7b"
FRESH_TOKEN = "tok-fresh-77aa11"
EMAIL = "owner@example.com"
PASSWORD = "pw-s3cret-9876"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


# --- the scripted server ------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


Action = Callable[["_Handler"], None]


def answer(payload: Any, status: int = 200) -> Action:
    """Answer with ``payload`` as JSON (PHP style: text/html content type)."""
    return raw(json.dumps(payload).encode(), status, "text/html; charset=UTF-8")


def raw(body: bytes, status: int = 200, content_type: str = "text/html") -> Action:
    def act(handler: _Handler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return act


def drop(handler: _Handler) -> None:
    """Read the request, then close the connection without a byte of answer."""
    handler.close_connection = True


def reset(handler: _Handler) -> None:
    """Read the request, then reset the connection (RST, not FIN)."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


def truncated(handler: _Handler) -> None:
    """Promise 200 bytes of JSON, send 12, close."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "200")
    handler.end_headers()
    handler.wfile.write(b'{"error":0,"')
    handler.close_connection = True


def slow(seconds: float, then: Action) -> Action:
    def act(handler: _Handler) -> None:
        time.sleep(seconds)
        then(handler)

    return act


def then_close(then: Action) -> Action:
    """Answer (advertising keep-alive), then close the connection anyway."""

    def act(handler: _Handler) -> None:
        then(handler)
        handler.close_connection = True

    return act


DEFAULTS: dict[str, Any] = {
    "gettoken": {"error": 0, "message": "OK", "token": FRESH_TOKEN},
    "addsms": sample("apimd_addsms_ok"),
    "smstosend": sample("apimd_addsms_ok"),
    "addalotofsms": sample("apimd_addalotofsms_ok"),
    "getallsms": sample("seed_getallsms"),
    "getsmsstatus": sample("apimd_getsmsstatus_ok"),
    "getalldevices": sample("seed_getalldevices"),
    "getdevicestatus": sample("apimd_getdevicestatus_ok"),
    "savetag": sample("seed_savetag_ok"),
    "savecontact": sample("seed_savecontact_ok"),
    "savepaket": sample("seed_savepaket_ok"),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self.server.gateway.handle(self)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    gateway: ScriptedGateway

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped and reset connections are the point of these tests


class ScriptedGateway:
    """A real HTTP server; each endpoint answers its scripted actions in turn, then its default."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.scripts: dict[str, deque[Action]] = {}
        self.always: dict[str, Action] = {}
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.gateway = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/getdata/"

    def script(self, endpoint: str, *actions: Action) -> None:
        self.scripts.setdefault(endpoint, deque()).extend(actions)

    def handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        parts = urlsplit(handler.path)
        seen = Seen(
            method=handler.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            client_port=handler.client_address[1],
        )
        _decode_form(seen)
        self.requests.append(seen)
        queue = self.scripts.get(seen.endpoint)
        if queue:
            action = queue.popleft()
        else:
            action = self.always.get(seen.endpoint) or answer(DEFAULTS.get(seen.endpoint, {}))
        action(handler)

    def endpoints(self) -> list[str]:
        return [r.endpoint for r in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _decode_form(seen: Seen) -> None:
    kind = seen.headers.get("content-type", "")
    if kind.startswith("application/x-www-form-urlencoded"):
        fields = parse_qs(seen.body.decode(), keep_blank_values=True, strict_parsing=False)
        assert all(len(v) == 1 for v in fields.values()), fields
        seen.form = {k: v[0] for k, v in fields.items()}
    elif kind.startswith("multipart/form-data"):
        head = f"Content-Type: {kind}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + seen.body)
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            content = part.get_payload(decode=True)
            assert isinstance(content, bytes)
            filename = part.get_filename()
            if filename:
                seen.files[name] = (filename, content, part.get_content_type())
            else:
                seen.form[name] = content.decode()


@pytest.fixture
def gateway() -> Iterator[ScriptedGateway]:
    server = ScriptedGateway()
    yield server
    server.close()
    for request in server.requests:  # invariant of every test: secrets never in a URL
        assert request.method == "POST"
        assert request.query == ""
        for secret in (TOKEN, FRESH_TOKEN, PASSWORD, EMAIL):
            assert secret not in request.path


class RecordingClock(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


def make_client(gateway: ScriptedGateway, **options: Any) -> GatewayClient:
    options.setdefault("token", TOKEN)
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    options.setdefault("timeout", 5.0)
    return GatewayClient(gateway.url, **options)


@pytest.fixture
def client(gateway: ScriptedGateway) -> Iterator[GatewayClient]:
    with make_client(gateway) as gateway_client:
        yield gateway_client


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/getdata/"


# --- every endpoint: the exact form sent and the answer parsed ------------------------------


def test_url_is_base_plus_endpoint_with_or_without_trailing_slash(gateway: ScriptedGateway) -> None:
    with GatewayClient(gateway.url.rstrip("/"), token=TOKEN) as client:
        client.get_sms_status(1)
    assert gateway.requests[0].path == "/getdata/getsmsstatus"


def test_get_token(gateway: ScriptedGateway) -> None:
    with make_client(gateway, token=None, email=EMAIL, password=PASSWORD) as client:
        assert client.get_token() == FRESH_TOKEN
        assert client.get_token("other@example.com", "other-pass") == FRESH_TOKEN
    first, second = gateway.requests
    assert first.form == {"email": EMAIL, "pass": PASSWORD}
    assert second.form == {"email": "other@example.com", "pass": "other-pass"}


def test_add_sms(client: GatewayClient, gateway: ScriptedGateway) -> None:
    sms_id = client.add_sms(
        "+4915752982212", "Grüße", 260, 1,
        timetosend=datetime(2026, 5, 26, 12, 10, 4), customerid=122, urgent=True,
    )  # fmt: skip
    assert sms_id == 62807347
    (request,) = gateway.requests
    assert request.endpoint == "addsms"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "token": TOKEN, "sendto": "+4915752982212", "body": "Grüße", "device_id": "260",
        "sim": "1", "timetosend": "2026-05-26 12:10:04", "customerid": "122", "urgent": "1",
    }  # fmt: skip


def test_add_sms_minimal_form(client: GatewayClient, gateway: ScriptedGateway) -> None:
    client.add_sms("+49 157 52982212", "hi", 260, 0)
    assert gateway.requests[0].form == {
        "token": TOKEN, "sendto": "+49 157 52982212", "body": "hi", "device_id": "260",
        "sim": "0", "urgent": "0",
    }  # fmt: skip


def test_add_sms_with_image_bytes_is_multipart(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    assert client.add_sms("+4915752982212", "", 260, 2, file=("cat.png", image, "image/png")) > 0
    (request,) = gateway.requests
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert request.form["token"] == TOKEN and request.form["body"] == ""
    assert request.form["sim"] == "2"
    assert request.files == {"file": ("cat.png", image, "image/png")}


def test_add_sms_with_image_path(
    client: GatewayClient, gateway: ScriptedGateway, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff-jpeg")
    client.add_sms("+4915752982212", "caption", 260, 3, file=path)
    assert gateway.requests[0].files == {"file": ("photo.jpg", b"\xff\xd8\xff-jpeg", "image/jpeg")}
    assert gateway.requests[0].form["body"] == "caption"


def test_add_sms_refuses_before_sending(
    client: GatewayClient, gateway: ScriptedGateway, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as empty:
        client.add_sms("+49", "", 260, 0)
    assert empty.value.field == "body"
    with pytest.raises(ValidationError) as missing:
        client.add_sms("+49", "", 260, 2, file=tmp_path / "missing.png")
    assert missing.value.field == "file"
    assert gateway.requests == []


def test_send_with_login(gateway: ScriptedGateway) -> None:
    with make_client(gateway, token=None, email=EMAIL, password=PASSWORD) as client:
        assert client.send_with_login("+49", "hi", 260, 1, urgent=True, customerid=7) == 62807347
        client.send_with_login("+49", "hi", 260, 1, email="b@example.com", password="pw-b-1234")
    first, second = gateway.requests
    assert gateway.endpoints() == ["smstosend", "smstosend"]  # no token needed
    assert first.form == {
        "email": EMAIL, "pass": PASSWORD, "sendto": "+49", "body": "hi", "device_id": "260",
        "sim": "1", "customerid": "7", "urgent": "1",
    }  # fmt: skip
    assert (second.form["email"], second.form["pass"]) == ("b@example.com", "pw-b-1234")


def test_send_with_login_without_login_is_a_config_error(client: GatewayClient) -> None:
    with pytest.raises(ConfigError, match="RELAY_GATEWAY_EMAIL"):
        client.send_with_login("+49", "hi", 260, 1)


def test_add_many_sends_one_datajson_field_exactly_as_the_seed(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    seed = sample("seed_addalotofsms_datajson")
    messages = [
        OutgoingSms("015752982212", "Your password is 12345", 260, 1, urgent=True,
                    customerid=122, timetosend="2019-07-01 23:50:00"),
        OutgoingSms("015752982212", "Regular SMS. Not urgnet", 260, 1, urgent=False,
                    customerid=122, timetosend=datetime(2019, 7, 1, 23, 50)),
    ]  # fmt: skip
    client.add_many(messages)
    (request,) = gateway.requests
    assert request.endpoint == "addalotofsms"
    assert list(request.form) == ["datajson"]
    expected = {"token": TOKEN, "smsdata": seed["smsdata"]}
    assert request.form["datajson"] == json.dumps(expected, separators=(",", ":"))


def test_add_many_keeps_unicode_and_omits_unset_fields(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    client.add_many([OutgoingSms("+4915752982212", "Grüße 👋", 260, 0)])
    datajson = gateway.requests[0].form["datajson"]
    assert datajson == (
        '{"token":"' + TOKEN + '","smsdata":[{"sendto":"+4915752982212","body":"Grüße 👋",'
        '"sim":0,"device_id":260,"urgent":0}]}'
    )


def test_add_many_takes_mappings_with_the_gateways_names(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    as_dicts = [
        {"sendto": "015752982212", "body": "Your password is 12345", "device_id": "260",
         "sim": 1, "urgent": True, "customerid": 122, "timetosend": "2019-07-01 23:50:00"},
        {"sendto": "015752982212", "body": "Regular SMS. Not urgnet", "device_id": 260, "sim": "1",
         "urgent": 0, "customerid": "122", "timetosend": datetime(2019, 7, 1, 23, 50)},
    ]  # fmt: skip
    client.add_many(as_dicts)
    seed = sample("seed_addalotofsms_datajson")
    expected = {"token": TOKEN, "smsdata": seed["smsdata"]}
    assert gateway.requests[0].form["datajson"] == json.dumps(expected, separators=(",", ":"))


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ({"to": "+49", "body": "x", "device_id": 260}, "unknown: to"),
        ({"sendto": "+49", "body": "x"}, "missing: device_id"),
        ({"sendto": "+49", "body": "x", "device_id": "two"}, "wrong type"),
        ("+49 hi", "not str"),
    ],
)
def test_add_many_refuses_other_items_with_a_clear_type_error(
    client: GatewayClient, gateway: ScriptedGateway, item: object, words: str
) -> None:
    with pytest.raises(TypeError, match=words):
        client.add_many([item])  # type: ignore[list-item]  # the wrong type is the point
    assert gateway.requests == []  # nothing sent


def test_add_many_of_nothing_sends_nothing(client: GatewayClient, gateway: ScriptedGateway) -> None:
    client.add_many([])
    assert gateway.requests == []


def test_get_all_sms_every_filter_with_aware_dates_sent_in_utc(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    paris = ZoneInfo("Europe/Paris")
    answer = client.get_all_sms(
        device_id=260, status=7, sim=1, customerid=122, onlycount=True, phone="+4915752982212",
        orderbydesc=True, begindate=datetime(2026, 1, 2, 10, 0, tzinfo=paris),
        enddate=datetime(2026, 1, 2, 10, 5, tzinfo=UTC),
    )  # fmt: skip
    assert [r.id for r in answer.records] == [62050971, 62051117]
    assert gateway.requests[0].form == {
        "token": TOKEN, "device_id": "260", "status": "7", "sim": "1", "customerid": "122",
        "begindate": "2026-01-02 09:00:00", "enddate": "2026-01-02 10:05:00", "onlycount": "1",
        "phone": "+4915752982212", "orderbydesc": "1", "timezone": "UTC",
    }  # fmt: skip


def test_get_all_sms_dates_in_a_given_zone(client: GatewayClient, gateway: ScriptedGateway) -> None:
    client.get_all_sms(
        begindate=datetime(2026, 1, 2, 0, 0, tzinfo=UTC), enddate=date(2026, 1, 3),
        timezone="Australia/Sydney",
    )  # fmt: skip
    assert gateway.requests[0].form == {
        "token": TOKEN, "begindate": "2026-01-02 11:00:00", "enddate": "2026-01-03",
        "timezone": "Australia/Sydney",
    }  # fmt: skip


def test_get_all_sms_naive_dates_and_no_filters(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    client.get_all_sms()
    client.get_all_sms(begindate=datetime(2026, 1, 2, 3, 4, 5), enddate="2026-01-03")
    assert gateway.requests[0].form == {"token": TOKEN}
    assert gateway.requests[1].form == {
        "token": TOKEN, "begindate": "2026-01-02 03:04:05", "enddate": "2026-01-03",
    }  # fmt: skip


def test_get_all_sms_unknown_zone_is_refused_before_sending(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    with pytest.raises(ValidationError, match="timezone"):
        client.get_all_sms(timezone="Mars/Olympus")
    assert gateway.requests == []


def test_get_sms_status(client: GatewayClient, gateway: ScriptedGateway) -> None:
    status = client.get_sms_status(62807347)
    assert (status.sms_id, status.status, status.status_description) == (62807347, 1, "New")
    assert gateway.requests[0].form == {"token": TOKEN, "sms_id": "62807347"}


def test_get_all_devices(client: GatewayClient, gateway: ScriptedGateway) -> None:
    devices = client.get_all_devices()
    assert [d.id for d in devices] == [1576, 1297]
    assert devices[1].delaybetweeneachsms == 5.0
    assert gateway.requests[0].form == {"token": TOKEN}


def test_get_device_status(client: GatewayClient, gateway: ScriptedGateway) -> None:
    status = client.get_device_status(260)
    assert (status.device_id, status.online, status.diffseconds) == (260, False, 28851900)
    assert gateway.requests[0].form == {"token": TOKEN, "device_id": "260"}


def test_save_tag_contact_paket(client: GatewayClient, gateway: ScriptedGateway) -> None:
    assert client.save_tag("VIP") == 8303
    assert client.save_contact("+4915752982212", 8303, "Ada Lovelace") == 15954765
    assert client.save_contact("+4915752982213", 8303) == 15954765
    paket = client.save_paket("News", 260, "Hello", [12, 13, 14], 0, datetime(2026, 5, 6, 7, 8, 9))
    assert paket == 4711
    assert client.save_paket("News", 260, "Hello", "12,13", 1, "06.05.2026 07:08:09") == 4711
    tag, contact, contact_anon, paket1, paket2 = (r.form for r in gateway.requests)
    assert tag == {"token": TOKEN, "title": "VIP"}
    assert contact == {
        "token": TOKEN, "phone": "+4915752982212", "tag_id": "8303", "ctag_id": "8303",
        "fullname": "Ada Lovelace",
    }  # fmt: skip
    assert "fullname" not in contact_anon
    assert paket1 == {
        "token": TOKEN, "title": "News", "device_id": "260", "body": "Hello",
        "tags": "12,13,14", "sim": "0", "time_to_send": "06.05.2026 07:08:09",
    }  # fmt: skip
    assert (paket2["tags"], paket2["time_to_send"]) == ("12,13", "06.05.2026 07:08:09")


def test_connections_are_kept_alive(client: GatewayClient, gateway: ScriptedGateway) -> None:
    client.get_sms_status(1)
    client.add_sms("+49", "hi", 260, 0)
    client.get_all_devices()
    assert len({r.client_port for r in gateway.requests}) == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    gateway.script("getsmsstatus", then_close(answer(sample("apimd_getsmsstatus_ok"))))
    client.get_sms_status(1)
    time.sleep(0.05)  # the FIN arrives; httpcore sees the idle socket readable and drops it
    assert client.add_sms("+49", "hi", 260, 0) == 62807347
    assert len({r.client_port for r in gateway.requests}) == 2


def test_from_settings(gateway: ScriptedGateway) -> None:
    settings = load_settings(
        gateway_url=gateway.url, gateway_email=EMAIL, gateway_password=PASSWORD,
        gateway_timeout=3.0, gateway_retries=0,
    )  # fmt: skip
    with GatewayClient.from_settings(settings) as client:
        client.get_sms_status(5)
    assert gateway.endpoints() == ["gettoken", "getsmsstatus"]
    assert gateway.requests[1].form["token"] == FRESH_TOKEN


def test_bad_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RELAY_GATEWAY_URL"):
        GatewayClient("smsgateway24.com/getdata/")


# --- tokens ---------------------------------------------------------------------------------


def test_token_is_fetched_lazily_once_and_cached(gateway: ScriptedGateway) -> None:
    with make_client(gateway, token=None, email=EMAIL, password=PASSWORD) as client:
        assert gateway.requests == []
        client.get_sms_status(1)
        client.add_sms("+49", "hi", 260, 0)
    assert gateway.endpoints() == ["gettoken", "getsmsstatus", "addsms"]
    assert gateway.requests[2].form["token"] == FRESH_TOKEN


def test_no_token_and_no_login_is_a_config_error(gateway: ScriptedGateway) -> None:
    with make_client(gateway, token=None) as client, pytest.raises(ConfigError):
        client.get_sms_status(1)
    assert gateway.requests == []


@pytest.mark.parametrize("message", ["Wrong token", "Token is not valid", "Not authorized"])
def test_auth_error_renews_the_token_once_and_repeats_a_submit(
    gateway: ScriptedGateway, message: str
) -> None:
    gateway.script("addsms", answer({"error": 1, "message": message}))
    with make_client(gateway, email=EMAIL, password=PASSWORD) as client:
        assert client.add_sms("+49", "hi", 260, 0) == 62807347
        client.get_sms_status(1)
    assert gateway.endpoints() == ["addsms", "gettoken", "addsms", "getsmsstatus"]
    assert [r.form.get("token") for r in gateway.requests] == [
        TOKEN,
        None,
        FRESH_TOKEN,
        FRESH_TOKEN,
    ]


def test_auth_error_renews_the_token_for_a_read_and_a_batch(gateway: ScriptedGateway) -> None:
    gateway.script("getallsms", answer({"error": 1, "message": "Wrong token"}))
    gateway.script("addalotofsms", answer({"error": 1, "message": "Wrong token"}))
    with make_client(gateway, email=EMAIL, password=PASSWORD) as client:
        client.get_all_sms()
        gateway.script("gettoken", answer({"error": 0, "token": "tok-third-5555"}))
        client.add_many([OutgoingSms("+49", "hi", 260, 0)])
    assert gateway.endpoints() == [
        "getallsms", "gettoken", "getallsms", "addalotofsms", "gettoken", "addalotofsms",
    ]  # fmt: skip
    assert json.loads(gateway.requests[-1].form["datajson"])["token"] == "tok-third-5555"


def test_auth_error_twice_is_raised(gateway: ScriptedGateway) -> None:
    refused = answer({"error": 1, "message": "Token is not valid"})
    gateway.script("addsms", refused, refused)
    with (
        make_client(gateway, email=EMAIL, password=PASSWORD) as client,
        pytest.raises(GatewayAuthError, match="Token is not valid"),
    ):
        client.add_sms("+49", "hi", 260, 0)
    assert gateway.endpoints() == ["addsms", "gettoken", "addsms"]


def test_auth_error_without_a_login_is_raised_at_once(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    gateway.script("getdevicestatus", answer({"error": 1, "message": "Wrong token"}))
    with pytest.raises(GatewayAuthError):
        client.get_device_status(260)
    assert gateway.endpoints() == ["getdevicestatus"]


def test_bad_login_is_an_auth_error_not_retried(gateway: ScriptedGateway) -> None:
    gateway.always["gettoken"] = answer(sample("apimd_gettoken_error"))
    with make_client(gateway, token=None, email=EMAIL, password="wrong-pass") as client:
        with pytest.raises(GatewayAuthError, match="Login or password incorrect"):
            client.get_all_devices()
        with pytest.raises(GatewayAuthError):
            client.add_sms("+49", "hi", 260, 0)
    assert gateway.endpoints() == ["gettoken", "gettoken"]


def test_any_gettoken_refusal_is_an_auth_error(gateway: ScriptedGateway) -> None:
    gateway.script("gettoken", answer({"error": 1, "message": "User is blocked"}))
    with make_client(gateway, token=None) as client, pytest.raises(GatewayAuthError):
        client.get_token(EMAIL, PASSWORD)


def test_a_submit_whose_token_cannot_be_fetched_was_not_sent() -> None:
    with (
        GatewayClient(
            closed_port_url(), email=EMAIL, password=PASSWORD, retries=1, backoff_base=0.001
        ) as client,
        pytest.raises(NotSent) as info,
    ):
        client.add_sms("+49", "hi", 260, 0)
    assert isinstance(info.value.__cause__, GatewayUnavailable)


# --- "error":1 answers ------------------------------------------------------------------------


def test_refusal_of_a_submit_is_rejected_with_the_gateways_words(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    gateway.script("addalotofsms", answer({"error": 1, "message": "Device not found"}))
    with pytest.raises(GatewayRejected) as info:
        client.add_many([OutgoingSms("+49", "hi", 999, 0)])
    assert info.value.gateway_message == "Device not found"
    assert info.value.endpoint == "addalotofsms"
    assert gateway.endpoints() == ["addalotofsms"]


@pytest.mark.parametrize("flag", [1, "1", True])
def test_refusal_of_a_read_is_not_retried(
    client: GatewayClient, gateway: ScriptedGateway, flag: Any
) -> None:
    gateway.script("getsmsstatus", answer({"error": flag, "message": "Sms not found"}))
    with pytest.raises(GatewayRejected, match="Sms not found"):
        client.get_sms_status(1)
    assert len(gateway.requests) == 1


def test_refusal_with_a_4xx_status_is_still_the_gateways_refusal(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    gateway.script("savetag", answer({"error": 1, "message": "Title is empty"}, status=400))
    with pytest.raises(GatewayRejected, match="Title is empty"):
        client.save_tag("")


# --- read-only calls: retries -------------------------------------------------------------------


def test_read_retries_5xx_html_and_empty_bodies_then_succeeds(gateway: ScriptedGateway) -> None:
    gateway.script(
        "getsmsstatus",
        raw(b"<html>Bad gateway</html>", 502),
        raw(b"<html><body>Maintenance</body></html>", 200),
        raw(b"", 200),
        truncated,
    )
    clock = RecordingClock()
    with make_client(gateway, retries=4, backoff_base=0.1, backoff_max=0.25, clock=clock) as client:
        assert client.get_sms_status(1).status == 1
    assert len(gateway.requests) == 5
    assert len(clock.sleeps) == 4
    for attempt, slept in enumerate(clock.sleeps):
        ceiling = min(0.25, 0.1 * 2**attempt)
        assert ceiling / 2 <= slept <= ceiling


def test_read_gives_up_after_the_retries_with_the_last_error(gateway: ScriptedGateway) -> None:
    gateway.always["getallsms"] = raw(b"oops", 503)
    clock = RecordingClock()
    with (
        make_client(gateway, retries=3, clock=clock) as client,
        pytest.raises(GatewayServerError) as info,
    ):
        client.get_all_sms(device_id=260)
    assert info.value.status_code == 503
    assert len(gateway.requests) == 4 and len(clock.sleeps) == 3


def test_read_of_a_wrong_shape_is_retried_then_a_bad_response(gateway: ScriptedGateway) -> None:
    gateway.always["getsmsstatus"] = answer({"error": 0, "message": "Ok"})
    with (
        make_client(gateway, retries=2) as client,
        pytest.raises(GatewayBadResponse, match="unexpected shape: sms_id"),
    ):
        client.get_sms_status(1)
    assert len(gateway.requests) == 3


def test_read_with_no_retries_tries_once(gateway: ScriptedGateway) -> None:
    gateway.always["getalldevices"] = raw(b"<html>", 200)
    with make_client(gateway, retries=0) as client, pytest.raises(GatewayBadResponse):
        client.get_all_devices()
    assert len(gateway.requests) == 1


def test_read_of_an_unreachable_gateway_is_unavailable_after_retries() -> None:
    clock = RecordingClock()
    with (
        GatewayClient(closed_port_url(), token=TOKEN, retries=2, clock=clock) as client,
        pytest.raises(GatewayUnavailable) as info,
    ):
        client.get_device_status(260)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(clock.sleeps) == 2


def test_read_timeout_is_retried(gateway: ScriptedGateway) -> None:
    gateway.script("getdevicestatus", slow(1.0, answer({})))
    with make_client(gateway, timeout=0.2, retries=1) as client:
        assert client.get_device_status(260).device_id == 260
    assert len(gateway.requests) == 2


def test_get_all_devices_without_an_error_field_and_wrong_shape(gateway: ScriptedGateway) -> None:
    gateway.script("getalldevices", answer({"count": 0, "device": []}))
    gateway.script("getalldevices", answer({"message": "Ok"}), answer([1, 2]))
    with make_client(gateway, retries=1) as client:
        assert client.get_all_devices() == []
        with pytest.raises(GatewayBadResponse):
            client.get_all_devices()


def test_unexpected_4xx_without_a_gateway_error_is_a_bad_response(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    gateway.always["getsmsstatus"] = raw(b"<h1>Forbidden</h1>", 403)
    with pytest.raises(GatewayBadResponse, match="403"):
        client.get_sms_status(1)


# --- submitting calls: never retried, NotSent or OutcomeUnknown ----------------------------------


SUBMITS: dict[str, Callable[[GatewayClient], object]] = {
    "addsms": lambda c: c.add_sms("+49", "hi", 260, 0),
    "addalotofsms": lambda c: c.add_many([OutgoingSms("+49", "hi", 260, 0)]),
    "savetag": lambda c: c.save_tag("VIP"),
    "savecontact": lambda c: c.save_contact("+49", 1),
    "savepaket": lambda c: c.save_paket("t", 260, "b", [1], 0, "01.01.2026 00:00:00"),
}


@pytest.mark.parametrize("endpoint", sorted(SUBMITS))
@pytest.mark.parametrize(
    ("action", "cause"),
    [
        (raw(b"<html>502 Bad Gateway</html>", 502), GatewayServerError),
        (raw(b"<html>Fatal error</html>", 200), GatewayBadResponse),
        (raw(b"", 200), GatewayBadResponse),
        (answer({"message": "saved?"}), GatewayBadResponse),
        (drop, httpx.RemoteProtocolError),
        (truncated, httpx.RemoteProtocolError),
        (reset, httpx.TransportError),
    ],
    ids=["5xx", "html", "empty", "shape", "dropped", "truncated", "reset"],
)
def test_submit_failure_after_sending_is_outcome_unknown_and_not_retried(
    client: GatewayClient,
    gateway: ScriptedGateway,
    endpoint: str,
    action: Action,
    cause: type[BaseException],
) -> None:
    gateway.script(endpoint, action)
    with pytest.raises(OutcomeUnknown) as info:
        SUBMITS[endpoint](client)
    assert isinstance(info.value.__cause__, cause)
    assert not isinstance(info.value.__cause__, httpx.ConnectError)
    assert gateway.endpoints() == [endpoint]


def test_submit_read_timeout_is_outcome_unknown(gateway: ScriptedGateway) -> None:
    gateway.script("addsms", slow(1.0, answer(sample("apimd_addsms_ok"))))
    with make_client(gateway, timeout=0.2) as client, pytest.raises(OutcomeUnknown) as info:
        client.add_sms("+49", "hi", 260, 0)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    time.sleep(1.0)  # the slow answer ends; the gateway had the request all along
    assert gateway.endpoints() == ["addsms"]


def test_submit_success_without_its_id_is_outcome_unknown(
    client: GatewayClient, gateway: ScriptedGateway
) -> None:
    gateway.script("addsms", answer({"error": 0, "message": "Sms has been saved successfully"}))
    with pytest.raises(OutcomeUnknown, match="sms_id") as info:
        client.add_sms("+49", "hi", 260, 0)
    assert isinstance(info.value.__cause__, GatewayBadResponse)


@pytest.mark.parametrize("endpoint", sorted(SUBMITS))
def test_submit_to_a_closed_port_is_not_sent(endpoint: str) -> None:
    with (
        GatewayClient(closed_port_url(), token=TOKEN, retries=4) as client,
        pytest.raises(NotSent) as info,
    ):
        SUBMITS[endpoint](client)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_send_with_login_to_a_closed_port_is_not_sent() -> None:
    with (
        GatewayClient(closed_port_url(), email=EMAIL, password=PASSWORD) as client,
        pytest.raises(NotSent),
    ):
        client.send_with_login("+49", "hi", 260, 0)


def test_submit_connect_timeout_is_not_sent() -> None:
    """A listener whose accept queue is full drops SYNs: the connect itself times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{port}/getdata/"
        with GatewayClient(url, token=TOKEN, timeout=0.3) as client, pytest.raises(NotSent) as info:
            client.add_sms("+49", "hi", 260, 0)
        assert isinstance(info.value.__cause__, httpx.ConnectTimeout)
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(0.2, 5.0)
    for attempt in range(60):
        ceiling = min(5.0, 0.2 * 2**attempt)
        assert ceiling / 2 <= backoff.delay(attempt) <= ceiling
    assert len({backoff.delay(10) for _ in range(20)}) > 1


# --- logs -------------------------------------------------------------------------------------


def test_one_debug_line_per_exchange_and_no_secrets(gateway: ScriptedGateway) -> None:
    gateway.script("addsms", answer({"error": 1, "message": "Wrong token"}))
    gateway.script("getsmsstatus", raw(b"", 500))
    with capture_logs() as logs, make_client(gateway, email=EMAIL, password=PASSWORD) as client:
        client.add_sms("+49", "secret body text", 260, 0)
        client.get_sms_status(1)
    requests = [entry for entry in logs if entry["event"] == "gateway.request"]
    assert [(e["endpoint"], e["outcome"]) for e in requests] == [
        ("addsms", "auth_error"), ("gettoken", "ok"), ("addsms", "ok"),
        ("getsmsstatus", "server_error"), ("getsmsstatus", "ok"),
    ]  # fmt: skip
    assert all(e["log_level"] == "debug" and e["duration_ms"] >= 0 for e in requests)
    assert [e["attempt"] for e in requests if e["endpoint"] == "getsmsstatus"] == [1, 2]
    text = repr(logs)
    for secret in (TOKEN, FRESH_TOKEN, PASSWORD, "secret body text"):
        assert secret not in text


# --- against the project's gateway simulator -----------------------------------------------------


@pytest.fixture
def frozen_sim(make_simulator: MakeSimulator) -> Simulator:
    """A simulator on a clock that moves only when told: statuses stay New until then."""
    devices = [
        SimDevice(id=260, title="phone 260", delaybetweenrequest=1.0, delaybetweeneachsms=0.5,
                  sims=(0, 1, 2)),
        SimDevice(id=261, title="phone 261", delaybetweenrequest=2.0, delaybetweeneachsms=None),
    ]  # fmt: skip
    return make_simulator(devices, clock=FakeClock(), timezone="Europe/Paris")


def sim_client(sim: Simulator, **options: Any) -> GatewayClient:
    options.setdefault("email", sim.email)
    options.setdefault("password", sim.password)
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    options.setdefault("timeout", 5.0)
    return GatewayClient(sim.url, **options)


def test_sim_every_endpoint_end_to_end(simulator: Simulator) -> None:
    with sim_client(simulator) as client:
        assert client.get_token() == simulator.token
        one = client.add_sms("+4915752982212", "Grüße", 260, 1, customerid=122, urgent=True)
        client.add_many([
            OutgoingSms("+4915752982213", "bulk a", 260, 0, customerid=7),
            OutgoingSms("+4915752982214", "bulk b", 261, 1, urgent=True),
        ])  # fmt: skip
        two = client.send_with_login("+4915752982215", "by login", 261, 0)
        deadline = time.monotonic() + 10
        while client.get_sms_status(two).status not in FINAL_CODES:
            assert time.monotonic() < deadline, "the simulated phones never finished"
            time.sleep(0.05)
        answer = client.get_all_sms()
        devices = client.get_all_devices()
        status = client.get_device_status(260)
        tag = client.save_tag("VIP")
        contact = client.save_contact("+4915752982212", tag, "Ada")
        paket = client.save_paket("News", 260, "Hello", [tag], 0, datetime(2030, 1, 2, 3, 4, 5))
        assert simulator.open_connections == 1  # one pooled keep-alive connection for it all
    ledger = {entry.sms_id: entry for entry in simulator.ledger()}
    assert len(ledger) == 4 and {one, two} <= set(ledger)
    assert [e.request.endpoint for e in ledger.values()] == [
        "addsms", "addalotofsms", "addalotofsms", "smstosend",
    ]  # fmt: skip
    assert (ledger[one].body, ledger[one].customerid, ledger[one].urgent) == ("Grüße", 122, 1)
    assert answer.count == 4 and sorted(r.id for r in answer.records) == sorted(ledger)
    for record in answer.records:
        entry = ledger[record.id]
        assert (record.sendto, record.body, record.deviceid) == (
            entry.sendto, entry.body, entry.device_id,
        )  # fmt: skip
        assert record.created is not None and record.created.tzinfo is not None
    assert [d.id for d in devices] == [260, 261]
    assert devices[0].delaybetweeneachsms == 0.01 and devices[1].delaybetweeneachsms is None
    assert [s.slot for s in devices[0].siminfo] == [0, 1]
    assert status.device_id == 260 and status.online is True and status.title == "phone 260"
    assert tag > 0 and contact > 0 and paket > 0
    assert simulator.engine.contacts[contact]["tag_id"] == tag
    assert simulator.engine.pakets[paket]["time_to_send"] == "02.01.2030 03:04:05"


def test_sim_add_many_stores_each_item_as_sent(frozen_sim: Simulator) -> None:
    messages = [
        OutgoingSms("+4915752982212", "code 123", 260, 1, urgent=True, customerid=5),
        OutgoingSms("+4915752982213", "later", 260, 0, timetosend="2030-01-01 10:00:00"),
        OutgoingSms("+4915752982214", "Grüße 👋", 261, 1),
    ]
    with sim_client(frozen_sim) as client:
        client.add_many(messages)
        answer = client.get_all_sms(device_id=260, orderbydesc=True)
    entries = frozen_sim.ledger()
    assert [dict(e.request.fields) for e in entries] == [m.to_datajson_item() for m in messages]
    assert [e.urgent for e in entries] == [1, 0, 0]
    assert [r.body for r in answer.records] == ["later", "code 123"]
    later = answer.records[0]
    assert later.timetosend == datetime(2030, 1, 1, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert later.status == 1 and later.urgent is False and later.customerid is None
    assert answer.records[1].urgent is True and answer.records[1].customerid == 5


def test_sim_get_all_sms_filters(frozen_sim: Simulator) -> None:
    with sim_client(frozen_sim) as client:
        first = client.add_sms("+49 157 52982212", "a", 260, 0, customerid=1)
        second = client.add_sms("+4915752982299", "b", 260, 1, customerid=2)
        third = client.add_sms("+4915752982212", "c", 261, 0)

        def ids(**filters: Any) -> list[int]:
            return [r.id for r in client.get_all_sms(**filters).records]

        assert ids() == [first, second, third]
        assert ids(orderbydesc=True) == [third, second, first]
        assert ids(device_id=260) == [first, second]
        assert ids(device_id=260, sim=1) == [second]
        assert ids(customerid=2) == [second]
        assert ids(phone="+4915752982212") == [first, third]
        assert ids(status=1) == [first, second, third] and ids(status=7) == []
        counted = client.get_all_sms(device_id=260, onlycount=True)
        assert counted.count == 2 and counted.records == []


def test_sim_date_window_in_utc_against_a_paris_gateway(frozen_sim: Simulator) -> None:
    created = datetime.fromtimestamp(frozen_sim.engine.now(), UTC)
    with sim_client(frozen_sim) as client:
        sms_id = client.add_sms("+4915752982212", "a", 260, 0)
        record = client.get_all_sms().records[0]
        assert record.created == created.replace(microsecond=0)
        assert record.created is not None and record.created.tzinfo == ZoneInfo("Europe/Paris")
        second = timedelta(seconds=1)
        inside = client.get_all_sms(begindate=created - second, enddate=created + second)
        before = client.get_all_sms(begindate=created - 3 * second, enddate=created - 2 * second)
        local = client.get_all_sms(
            begindate=created - second, enddate=created + second, timezone="Asia/Tokyo"
        )
    assert [r.id for r in inside.records] == [sms_id] and before.records == []
    assert [r.id for r in local.records] == [sms_id]


def test_sim_status_follows_the_simulated_phone(frozen_sim: Simulator) -> None:
    clock = frozen_sim.engine.clock
    assert isinstance(clock, FakeClock)
    with sim_client(frozen_sim) as client:
        sms_id = client.add_sms("+4915752982212", "a", 260, 0)
        assert client.get_sms_status(sms_id).status == 1
        clock.advance(60)
        status = client.get_sms_status(sms_id)
    assert status.status == frozen_sim.status(sms_id) and status.status in FINAL_CODES | {6}
    assert status.status_description != ""


def test_sim_image_upload_replaces_the_body(frozen_sim: Simulator) -> None:
    with sim_client(frozen_sim) as client:
        sms_id = client.add_sms(
            "+4915752982212", "", 260, 2, file=("cat.png", b"\x89PNG", "image/png")
        )
    body = frozen_sim.entry(sms_id).body
    assert body.startswith("https://") and body.endswith(".png")


def test_sim_refusals(frozen_sim: Simulator) -> None:
    with sim_client(frozen_sim) as client:
        with pytest.raises(GatewayRejected, match="Device 999 not found") as info:
            client.add_sms("+4915752982212", "a", 999, 0)
        assert info.value.endpoint == "addsms"
        with pytest.raises(GatewayRejected, match="Sms 123 not found"):
            client.get_sms_status(123)
        with pytest.raises(GatewayAuthError, match="Login or password incorrect"):
            client.send_with_login("+49", "a", 260, 0, password="wrong-password")
    with (
        sim_client(frozen_sim, password="wrong-password") as client,
        pytest.raises(GatewayAuthError),
    ):
        client.get_all_devices()
    with (
        sim_client(frozen_sim, token="not-the-token", email=None, password=None) as client,
        pytest.raises(GatewayAuthError, match="Wrong token"),
    ):
        client.get_all_devices()
    assert frozen_sim.ledger() == []


def test_sim_expired_token_is_renewed_once(frozen_sim: Simulator) -> None:
    with sim_client(frozen_sim, token=frozen_sim.token) as client:
        new_token = frozen_sim.expire_token()
        assert client.add_sms("+4915752982212", "a", 260, 0) > 0
        frozen_sim.faults.add("addalotofsms", "token_expired")
        client.add_many([OutgoingSms("+4915752982212", "b", 260, 0)])
        assert client.get_token() == frozen_sim.token != new_token
    assert len(frozen_sim.ledger()) == 2
    assert frozen_sim.faults.count("addalotofsms", "token_expired") == 1


def test_sim_read_faults_are_retried(frozen_sim: Simulator) -> None:
    frozen_sim.faults.add("getallsms", "http_500", times=1)
    frozen_sim.faults.add("getallsms", "malformed", times=1)
    frozen_sim.faults.add("getallsms", "malformed_html", times=1)
    frozen_sim.faults.add("getallsms", "drop_before", times=1)
    with sim_client(frozen_sim) as client:
        assert client.get_all_sms().count == 0
        frozen_sim.faults.add("getalldevices", "http_503", times=3)
        with sim_client(frozen_sim, retries=2) as impatient, pytest.raises(GatewayServerError):
            impatient.get_all_devices()
        assert len(client.get_all_devices()) == 2
    assert frozen_sim.faults.count("getallsms") == 4


@pytest.mark.parametrize(
    ("kind", "stored"),
    [
        ("http_500", False),
        ("malformed", False),
        ("malformed_html", False),
        ("drop_before", False),
        ("drop_after", True),
    ],
)
def test_sim_submit_faults_are_outcome_unknown(
    frozen_sim: Simulator, kind: str, stored: bool
) -> None:
    """Whether the gateway stored the batch differs while the client sees the same thing:
    exactly why these are OutcomeUnknown and never retried blind."""
    frozen_sim.faults.add("addalotofsms", kind)
    with sim_client(frozen_sim, token=frozen_sim.token) as client, pytest.raises(OutcomeUnknown):
        client.add_many([OutgoingSms("+4915752982212", "a", 260, 0)])
    assert len(frozen_sim.ledger()) == (1 if stored else 0)
    assert frozen_sim.stats()["requests"].get("addalotofsms") == 1


def test_sim_slow_answer_times_out_as_outcome_unknown_but_was_stored(
    frozen_sim: Simulator,
) -> None:
    frozen_sim.faults.add("addsms", "slow", delay=0.6)
    with (
        sim_client(frozen_sim, token=frozen_sim.token, timeout=0.2) as client,
        pytest.raises(OutcomeUnknown) as info,
    ):
        client.add_sms("+4915752982212", "a", 260, 0)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    deadline = time.monotonic() + 5
    while not frozen_sim.ledger():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_sim_stopped_is_not_sent_for_submits_and_unavailable_for_reads(
    frozen_sim: Simulator,
) -> None:
    with sim_client(frozen_sim, token=frozen_sim.token, retries=1) as client:
        client.get_all_devices()
        frozen_sim.stop()
        with pytest.raises(NotSent):
            client.add_many([OutgoingSms("+4915752982212", "a", 260, 0)])
        with pytest.raises(GatewayUnavailable):
            client.get_all_devices()


def test_sim_capped_answer_says_more_are_available(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(max_records=2, clock=FakeClock())
    with sim_client(sim) as client:
        client.add_many([OutgoingSms(f"+491575298221{i}", "x", 260, 0) for i in range(5)])
        answer = client.get_all_sms()
    assert answer.count == 5 and len(answer.records) == 2 and answer.more_available
