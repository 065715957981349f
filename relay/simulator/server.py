"""The HTTP layer: a threaded stdlib server speaking HTTP/1.1 with keep-alive.

``/getdata/<endpoint>`` goes through fault injection to :class:`GatewayApi`;
``/_sim/<name>`` goes to :class:`AdminApi`. Each answer is written with one ``send``
(headers and body together, Nagle off), so pooled clients are not slowed by delayed ACKs.
A dropped request closes the connection without writing a byte.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from relay.simulator.admin import AdminApi
from relay.simulator.api import GatewayApi, Request
from relay.simulator.engine import Engine
from relay.simulator.faults import BUSY, Fault, FaultInjector
from relay.simulator.wire import BadBody, parse_form, parse_json_or_form

GATEWAY_PREFIX = "/getdata/"
ADMIN_PREFIX = "/_sim/"
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
PHP_ERROR_PAGE = (
    b"<html><body><br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes "
    b"exhausted in <b>/var/www/smsgateway/getdata.php</b> on line <b>212</b><br />\n"
    b"</body></html>\n"
)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer to write."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def json_reply(data: Any, status: int = 200) -> Reply:
    """``data`` as compact JSON."""
    return Reply(status, json.dumps(data, separators=(",", ":")).encode())


def html_page(status: int, detail: str = "") -> Reply:
    """The kind of HTML error page a web server or proxy in front of the gateway gives."""
    reason = _reason(status) or "Error"
    page = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n{detail}<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Reply(status, page.encode(), HTML_TYPE)


class Router:
    """Turns (method, target, content type, body) into a :class:`Reply`, or None to drop."""

    def __init__(
        self, engine: Engine, api: GatewayApi, faults: FaultInjector, admin: AdminApi
    ) -> None:
        self.engine = engine
        self.api = api
        self.faults = faults
        self.admin = admin
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()

    def received_counts(self) -> dict[str, int]:
        """Gateway requests received per endpoint (faulted ones included)."""
        with self._lock:
            return dict(self.received)

    def respond(self, method: str, target: str, content_type: str, body: bytes) -> Reply | None:
        """The answer of one request (None: close the connection without answering)."""
        url = urlsplit(target)
        try:
            if url.path.startswith(GATEWAY_PREFIX):
                endpoint = url.path[len(GATEWAY_PREFIX) :].strip("/").lower()
                fields, files = parse_form(url.query, content_type, body)
                return self.gateway(Request(endpoint, fields, files))
            if url.path.startswith(ADMIN_PREFIX):
                args = parse_json_or_form(url.query, content_type, body)
                name = url.path[len(ADMIN_PREFIX) :].strip("/")
                status, data = self.admin.handle(method, name, args)
                return json_reply(data, status)
        except BadBody as exc:
            return html_page(400, f"<p>{exc}</p>")
        return html_page(404)

    def gateway(self, request: Request) -> Reply | None:
        """A gateway call, with the fault configured for its endpoint, if any."""
        if request.endpoint not in self.api.endpoints:
            return html_page(404)
        with self._lock:
            self.received[request.endpoint] += 1
        fault = self.faults.pick(request.endpoint)
        if fault is None:
            return json_reply(self.api.handle(request))
        return self._faulty(request, fault)

    def _faulty(self, request: Request, fault: Fault) -> Reply | None:
        """Apply ``fault``: wait, maybe process, then drop or answer what it says."""
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.kind == "token_expired":
            with self.engine.lock:
                self.engine.account.expire()
        answer = None
        if fault.processes:
            faulted = Request(request.endpoint, request.fields, request.files, fault.kind)
            answer = self.api.handle(faulted)
        if fault.drops:
            return None
        if fault.kind.startswith("http_"):
            return html_page(fault.status)
        if fault.kind == "malformed_html":
            return Reply(fault.status, PHP_ERROR_PAGE, HTML_TYPE)
        if fault.kind == "busy":
            return json_reply({"error": 1, "message": BUSY})
        if fault.kind == "malformed":
            text = json.dumps(answer or {"error": 0, "message": "Sms has been saved successfully"})
            return Reply(fault.status, text[: max(1, len(text) // 2)].encode())
        return json_reply(answer)


class SimServer(ThreadingHTTPServer):
    """A threading HTTP server that can cut every open keep-alive connection on stop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        super().__init__(address, SimHandler)
        self.router = router
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (e.g. timed out on a ``slow`` fault) is normal here;
        anything else is printed as socketserver does."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    @property
    def open_connections(self) -> int:
        """Client connections currently open (keep-alive ones stay open between requests)."""
        with self._connections_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        """Shut every open client connection (their handler threads then end)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SimHandler(BaseHTTPRequestHandler):
    """Reads one request at a time on a keep-alive connection and writes its reply."""

    protocol_version = "HTTP/1.1"
    server_version = "SMSGateway24-simulator/1.0"
    disable_nagle_algorithm = True
    timeout = 600  # an idle keep-alive connection is closed after this many seconds

    def do_GET(self) -> None:
        """Gateway calls accept GET query fields."""
        self._serve()

    def do_POST(self) -> None:
        """Gateway calls accept POST form fields (urlencoded or multipart)."""
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a test run would drown in access lines."""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._write(html_page(400, "<p>unreadable body</p>"))
            return
        router = cast(SimServer, self.server).router
        reply = router.respond(self.command, self.path, self.headers.get("Content-Type", ""), body)
        if reply is None:
            self.close_connection = True
            return
        self._write(reply)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, reply: Reply) -> None:
        reason = _reason(reply.status)
        head = [
            f"HTTP/1.1 {reply.status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        if self.close_connection:
            head.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            head.append("Connection: keep-alive")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
