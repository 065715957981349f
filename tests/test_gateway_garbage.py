"""Gateway garbage never kills a worker or a reconciler (docs/design.md, invariant 7).

A tiny HTTP server of this test (:class:`StubGateway`, on 127.0.0.1:0) answers chosen
endpoints with fuzzed answers (JSON of wrong shapes and types, HTML error pages, empty
bodies, bytes, ``"error":1`` with any text, any HTTP status) and forwards everything else
to the project's simulator. Whatever comes back:

- ``relay.dispatch.run_ticket`` returns; every message of the batch is back in its lane
  (``queued``), or ``unknown`` with its batch awaiting verification, or — only when the
  gateway said ``"error":1`` — ``rejected`` with the gateway's own words; or ``submitted``
  only when the gateway said it stored them (``"error"`` false). None is lost, none is left
  ``submitting``, none is in a lane twice.
- ``Reconciler.run_once`` returns; submitted messages stay pending, and are followed to
  their final state once the gateway answers sense again.
- device syncs fail with a gateway error, never another exception; a real burst worker
  process survives garbage, and every message reaches the gateway exactly once.

40 fuzzed answers a test; ``HYPOTHESIS_PROFILE=long`` makes it 500 (with ``--timeout 0``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq.registry import FailedJobRegistry

from relay import context as context_module
from relay.connection import maybe_text, text
from relay.context import Context
from relay.devices import refresh_if_stale, sync_devices
from relay.dispatch.ticket import run_ticket
from relay.dispatch.tickets import queue as ticket_queue
from relay.errors import GatewayError
from relay.gateway import GatewayClient
from relay.lanes import BULK, LaneId, LaneKind
from relay.produce.producer import Producer
from relay.reconcile.reconciler import Reconciler
from relay.settings import Settings
from relay.simulator import OutcomeRule, SimDevice, Simulator
from relay.states import State
from tests.fixtures.replies import members
from tests.fixtures.simulator import MakeSimulator
from tests.fixtures.workers import MakeSettings, StartWorkers

DEV, SIM = 260, 0
_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"  # as in test_properties: more examples
FUZZ = settings(max_examples=500 if LONG else 40, deadline=None, suppress_health_check=_CHECKS)


# --- the stub gateway ------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP answer of the stub."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(data).encode())


Rule = Callable[[str, Mapping[str, str]], Reply | None]


def answering(endpoint: str, reply: Reply) -> Rule:
    """A rule answering requests to ``endpoint`` with ``reply``, passing the others on."""
    return lambda asked, form: reply if asked == endpoint else None


class StubGateway:
    """An HTTP/1.1 server on 127.0.0.1:0: ``rule(endpoint, form)`` answers a request, or
    None forwards it to ``upstream`` (a simulator's URL) unchanged."""

    def __init__(self, upstream: str | None = None, rule: Rule | None = None) -> None:
        self.upstream = upstream
        self.rule: Rule = rule or (lambda endpoint, form: None)
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.paths: list[str] = []  # each request's path and query, as sent
        self._http = httpx.Client(timeout=10)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/getdata/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def answer(self, endpoint: str, raw: bytes, content_type: str) -> Reply:
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        self.seen.append((endpoint, form))
        reply = self.rule(endpoint, form)
        if reply is not None:
            return reply
        if self.upstream is None:
            return Reply.json({"error": 1, "message": "no upstream"}, 502)
        got = self._http.post(
            self.upstream + endpoint, content=raw, headers={"Content-Type": content_type}
        )
        return Reply(got.status_code, got.content, got.headers.get("content-type", ""))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_POST(self) -> None:
                stub.paths.append(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint = self.path.rstrip("/").rsplit("/", 1)[-1]
                reply = stub.answer(endpoint, raw, self.headers.get("Content-Type", ""))
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def sim(make_simulator: MakeSimulator) -> Simulator:
    return make_simulator([SimDevice(id=DEV, delaybetweenrequest=0.05, delaybetweeneachsms=0.01)])


@pytest.fixture
def stub(sim: Simulator) -> Iterator[StubGateway]:
    gateway = StubGateway(sim.url)
    yield gateway
    gateway.stop()


@pytest.fixture
def contexts(
    relay_settings: MakeSettings, redis_conn: redis.Redis, stub: StubGateway, sim: Simulator
) -> Iterator[Callable[..., Context]]:
    """Factory: a Context on a fresh key prefix (one per example), gateway = the stub
    (one client for all: making an httpx client costs ~0.1 s)."""
    base = relay_settings(
        gateway_url=stub.url,
        gateway_token=sim.token,
        gateway_timeout=2.0,
        gateway_retries=0,
        device_overrides={str(DEV): 0},
    )
    client = GatewayClient.from_settings(base)
    counter = itertools.count()

    def make(**changes: Any) -> Context:
        prefix = f"{base.key_prefix}:{next(counter)}"
        settings = base.model_copy(update={"key_prefix": prefix, **changes})
        return Context(settings, redis_conn, _gateway=client)

    yield make
    client.close()


def send(ctx: Context, n: int, tag: str = "m", urgent: bool = False) -> list[str]:
    items = [
        {"sendto": f"+4915752{i:06d}", "body": f"{tag}{i}", "device_id": DEV, "urgent": urgent}
        for i in range(n)
    ]
    return Producer(ctx).send_many(items)


def run_lane(ctx: Context, kind: LaneKind = BULK) -> str:
    """The lane's ticket, run here as the RQ job its key names would run it."""
    context_module.use(ctx)
    holder = ctx.conn.get(ctx.keys.ticket(LaneId(kind, DEV, SIM)))
    return run_ticket(kind, DEV, SIM, job_id=maybe_text(holder))


# --- fuzzed answers --------------------------------------------------------------------

GATEWAY_WORDS = [
    "error",
    "message",
    "smss",
    "count",
    "sms_id",
    "status",
    "statustitle",
    "device",
    "id",
    "sendto",
    "body",
    "created",
    "deviceid",
    "sim",
    "urgent",
    "delaybetweeneachsms",
    "delaybetweenrequest",
    "siminfo",
    "lastseen",
    "token",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["", "null", "0", "1e999"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(GATEWAY_WORDS), st.text(max_size=6)), inner, max_size=5
        ),
    ),
    max_leaves=12,
)
HTML = st.sampled_from(
    [
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        b"<!DOCTYPE html><html><body><h1>Fatal error</h1> Uncaught PDOException</body></html>",
        b"Warning: mysqli_connect(): Too many connections in /var/www/api.php on line 7",
    ]
)
NOT_JSON = st.one_of(
    HTML,
    st.just(b""),
    st.just(b"   \n"),
    st.binary(max_size=40),
    st.sampled_from([b'{"error":0,"mess', b"{'error': 0}", b"\xef\xbb\xbf", b"null null"]),
)
ERROR_TRUE = st.sampled_from([1, "1", True, "true", "yes", 2, -1, "error"])
ERROR_FALSE = st.sampled_from([0, "0", False, "false", "", None, "no", "OK"])
WORDS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        ["Sms limit exceeded", "Wrong token", "Device is blocked ", "Недостаточно средств", ""]
    ),
)


def _extra(data: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(GATEWAY_WORDS[3:]), JSON, max_size=3).map(
        lambda more: {**more, **data}
    )


@st.composite
def refusals(draw: st.DrawFn) -> tuple[Reply, str]:
    """``"error":1`` (any truthy spelling) with the gateway's words: (reply, the words)."""
    words = draw(WORDS)
    data = draw(_extra({"error": draw(ERROR_TRUE), "message": words}))
    status = draw(st.sampled_from([200, 200, 400, 403, 404]))
    return Reply.json(data, status), words.strip() or "error without a message"


@st.composite
def garbage(draw: st.DrawFn) -> Reply:
    """Answers that say nothing: not JSON, JSON of no gateway shape, or any answer as 5xx."""
    kind = draw(st.sampled_from(["not-json", "json", "no-error-field", "5xx"]))
    status = draw(st.sampled_from([200, 200, 301, 400, 404, 429]))
    if kind == "not-json":
        return Reply(
            status, draw(NOT_JSON), draw(st.sampled_from(["text/html", "", "application/json"]))
        )
    if kind == "json":
        value = draw(JSON.filter(lambda v: not isinstance(v, dict)))
        return Reply.json(value, status)
    if kind == "no-error-field":
        value = draw(st.dictionaries(st.sampled_from(GATEWAY_WORDS[1:]), JSON, max_size=4))
        return Reply.json(value, status)
    body = draw(
        st.one_of(
            NOT_JSON,
            JSON.map(lambda v: json.dumps(v).encode()),
            st.just(b'{"error":0,"message":"Sms has been saved successfully"}'),
        )
    )
    return Reply(draw(st.sampled_from([500, 502, 503, 504])), body)


def accepted() -> st.SearchStrategy[Reply]:
    """Success said with any falsy ``error`` spelling, and junk beside it."""
    return ERROR_FALSE.flatmap(lambda flag: _extra({"error": flag})).map(Reply.json)


# --- checks ------------------------------------------------------------------------------


def lane_of(ctx: Context, kind: LaneKind = BULK) -> list[str]:
    return [text(i) for i in ctx.conn.lrange(ctx.keys.lane(LaneId(kind, DEV, SIM)), 0, -1)]


def batches_awaiting_verification(ctx: Context) -> set[str]:
    """Ids of the batches in ``verify``."""
    ids: set[str] = set()
    for bid in members(ctx.conn, ctx.keys.verify):
        raw = maybe_text(ctx.conn.hget(ctx.keys.batch(bid), "ids"))
        ids.update(raw.split(",") if raw else [])
    return ids


def outcome_of(ctx: Context, ids: list[str]) -> dict[str, str]:
    """Each id's fate, checking it is kept where that fate says it must be."""
    lane = lane_of(ctx)
    assert len(lane) == len(set(lane)), f"an id is in its lane twice: {lane}"
    verifying = batches_awaiting_verification(ctx)
    assert ctx.conn.zcard(ctx.keys.inflight) == 0, "a batch is left in flight"
    fates = {}
    for msg_id, msg in zip(ids, ctx.store.get_many(ids), strict=True):
        assert msg is not None, f"{msg_id} lost: no record"
        fates[msg_id] = msg.state.value
        if msg.state == State.QUEUED:
            assert msg_id in lane, f"{msg_id} queued but not in its lane"
        elif msg.state == State.UNKNOWN:
            assert msg_id in verifying, f"{msg_id} unknown but no batch awaits verification"
        elif msg.state == State.SUBMITTED:
            assert ctx.conn.zscore(ctx.keys.pending(DEV), msg_id) is not None
        elif msg.state == State.REJECTED:
            assert ctx.conn.zscore(ctx.keys.dead, msg_id) is not None
        else:
            raise AssertionError(f"{msg_id} is {msg.state.value} after one ticket run")
    return fates


# --- dispatch --------------------------------------------------------------------------------


@FUZZ
@given(reply=garbage(), urgent=st.booleans())
def test_garbage_from_addalotofsms_leaves_the_batch_unknown_awaiting_verification(
    contexts: Callable[..., Context], stub: StubGateway, reply: Reply, urgent: bool
) -> None:
    ctx = contexts()
    stub.rule = lambda endpoint, form: reply if endpoint == "addalotofsms" else None
    ids = send(ctx, 3, urgent=urgent)
    run_lane(ctx, "u" if urgent else "b")
    fates = outcome_of(ctx, ids)
    assert set(fates.values()) == {"unknown"}, (reply, fates)
    assert {m.error for m in ctx.store.get_many(ids) if m} != {None}


@FUZZ
@given(refusal=refusals())
def test_error_1_from_addalotofsms_puts_back_or_rejects_with_the_gateways_words(
    contexts: Callable[..., Context], stub: StubGateway, refusal: tuple[Reply, str]
) -> None:
    reply, words = refusal
    ctx = contexts(max_attempts=2)
    stub.rule = lambda endpoint, form: reply if endpoint == "addalotofsms" else None
    ids = send(ctx, 3)
    run_lane(ctx)
    fates = outcome_of(ctx, ids)
    assert set(fates.values()) <= {"queued", "rejected"}, (reply, fates)
    for msg in ctx.store.get_many(ids):
        assert msg is not None
        if msg.state == State.REJECTED or msg.error is not None:
            assert msg.error == words, (msg.error, words)


@FUZZ
@given(reply=accepted())
def test_a_falsy_error_field_is_taken_as_stored(
    contexts: Callable[..., Context], stub: StubGateway, reply: Reply
) -> None:
    ctx = contexts()
    stub.rule = lambda endpoint, form: reply if endpoint == "addalotofsms" else None
    ids = send(ctx, 2)
    run_lane(ctx)
    assert set(outcome_of(ctx, ids).values()) == {"submitted"}, reply


# --- the reconciler --------------------------------------------------------------------------


def submitted(ctx: Context, stub: StubGateway, n: int = 2) -> list[str]:
    """``n`` messages stored at the simulator through the stub and ``submitted`` in relay."""
    stub.rule = lambda endpoint, form: None
    ids = send(ctx, n)
    run_lane(ctx)
    assert {m.state for m in ctx.store.get_many(ids) if m} == {State.SUBMITTED}
    return ids


@st.composite
def lookalike_records(draw: st.DrawFn) -> Reply:
    """A getallsms answer whose records look like ours (our sendto and body) with fields of
    wrong types or values."""
    smss = {}
    for i in range(draw(st.integers(1, 2))):
        record: dict[str, Any] = {"sendto": f"+4915752{i:06d}", "body": f"m{i}"}
        for name in ("id", "status", "created", "deviceid", "customerid", "sim", "urgent"):
            if draw(st.booleans()):
                record[name] = draw(st.one_of(JSON, st.sampled_from([1e300, -1, "7", "x", 10**30])))
        smss[draw(st.one_of(st.text(max_size=4), st.integers().map(str)))] = record
    count = draw(st.one_of(st.just(len(smss)), JSON))
    return Reply.json({"error": draw(ERROR_FALSE), "smss": smss, "count": count})


def any_answer() -> st.SearchStrategy[Reply]:
    return st.one_of(garbage(), refusals().map(lambda r: r[0]), accepted(), lookalike_records())


def assert_followed(ctx: Context, ids: list[str]) -> None:
    """Every message is still there; one not final still awaits the reconciler; one that
    moved on did so on a status code the gateway gave."""
    for msg_id, msg in zip(ids, ctx.store.get_many(ids), strict=True):
        assert msg is not None, f"{msg_id} lost"
        if not msg.final:
            assert ctx.conn.zscore(ctx.keys.pending(DEV), msg_id) is not None, msg_id
        if msg.state != State.SUBMITTED:
            assert msg.status is not None, (msg_id, msg.state)


@FUZZ
@given(reply=any_answer())
def test_garbage_from_getallsms_never_ends_a_reconciler_pass(
    contexts: Callable[..., Context], stub: StubGateway, reply: Reply
) -> None:
    ctx = contexts()
    ids = submitted(ctx, stub)
    stub.rule = lambda endpoint, form: reply if endpoint == "getallsms" else None
    Reconciler(ctx).run_once()
    assert_followed(ctx, ids)


@FUZZ
@given(reply=any_answer())
def test_garbage_from_getsmsstatus_never_ends_a_reconciler_pass(
    contexts: Callable[..., Context], stub: StubGateway, sim: Simulator, reply: Reply
) -> None:
    sim.set_outcome(OutcomeRule(report_delay=3600))  # sent, then no report for an hour
    ctx = contexts()
    ids = submitted(ctx, stub)
    Reconciler(ctx).run_once()  # matched: each has its sms_id
    assert all(m is not None and m.sms_id for m in ctx.store.get_many(ids))
    stub.rule = lambda endpoint, form: reply if endpoint == "getsmsstatus" else None
    Reconciler(ctx, straggler_after=0).run_once()  # every one a straggler: getsmsstatus
    assert any(endpoint == "getsmsstatus" for endpoint, _ in stub.seen)
    assert_followed(ctx, ids)


GARBAGE_KINDS = [
    Reply(502, b"<html><body>Bad Gateway</body></html>", "text/html"),
    Reply(200, b""),
    Reply.json([]),
    Reply.json({"error": 1, "message": "Internal error, try later"}),
    Reply.json({"error": 0, "smss": "none", "count": "many"}),
    Reply.json(
        {
            "error": 0,
            "smss": {
                "1": {
                    "id": 1,
                    "status": 7,
                    "created": 1e300,
                    "sendto": "+4915752000000",
                    "body": "m0",
                }
            },
        }
    ),
]


def test_the_reconciler_follows_every_message_once_the_gateway_makes_sense_again(
    contexts: Callable[..., Context], stub: StubGateway, sim: Simulator
) -> None:
    ctx = contexts()
    ids = submitted(ctx, stub, 3)
    reconciler = Reconciler(ctx)
    for reply in GARBAGE_KINDS:
        stub.rule = answering("getallsms", reply)
        report = reconciler.run_once()
        assert report.errors == 1 and report.changes == {}, (reply, report)
        assert_followed(ctx, ids)
    stub.rule = lambda endpoint, form: None
    deadline = ctx.clock.now() + 30  # the phones deliver in ~0.1 s; no assertion on speed
    while ctx.clock.now() < deadline:
        reconciler.run_once()
        if {m.state for m in ctx.store.get_many(ids) if m} == {State.DELIVERED}:
            break
        ctx.clock.sleep(0.05)
    delivered = ctx.store.get_many(ids)
    assert [m.state if m else None for m in delivered] == [State.DELIVERED] * 3
    sms_ids = {m.sms_id for m in delivered if m}
    assert sms_ids == {e.sms_id for e in sim.ledger()}


# --- devices -------------------------------------------------------------------------------


@st.composite
def device_lists(draw: st.DrawFn) -> Reply:
    """A getalldevices answer with our device in it, its fields of wrong types or values."""
    device: dict[str, Any] = {"id": DEV}
    for name in (
        "delaybetweeneachsms",
        "delaybetweenrequest",
        "lastseen",
        "siminfo",
        "title",
        "created",
        "id",
    ):
        if draw(st.booleans()):
            device[name] = draw(
                st.one_of(
                    JSON,
                    st.sampled_from(
                        [1e300, -1, -0.5, "1e999", "0", 0, "abc", 10**30, [{"Slot": "x"}]]
                    ),
                )
            )
    return Reply.json({"count": draw(st.one_of(st.just(1), JSON)), "device": {str(DEV): device}})


@FUZZ
@given(reply=st.one_of(any_answer(), device_lists()))
def test_garbage_from_getalldevices_never_stops_dispatch(
    contexts: Callable[..., Context], stub: StubGateway, sim: Simulator, reply: Reply
) -> None:
    ctx = contexts(device_overrides={})
    stub.rule = lambda endpoint, form: reply if endpoint == "getalldevices" else None
    with contextlib.suppress(GatewayError):  # any other exception fails the test
        sync_devices(ctx)
    assert refresh_if_stale(ctx) in (True, False)
    ids = send(ctx, 2)
    run_lane(ctx)  # paced by whatever the sync stored: the batch still goes, or waits
    fates = outcome_of(ctx, ids)
    assert set(fates.values()) <= {"submitted", "queued"}, fates
    if "queued" in fates.values():  # held back by pacing: its ticket waits on a timer
        assert ctx.conn.zscore(ctx.keys.timers, f"b:{DEV}:{SIM}") is not None


NASTY_DEVICES = [
    {"delaybetweeneachsms": "1e999", "delaybetweenrequest": "Infinity"},
    {"delaybetweeneachsms": 1e300, "delaybetweenrequest": 1e300},
    {"delaybetweeneachsms": -3, "delaybetweenrequest": "NaN"},
    {"delaybetweeneachsms": "0.01", "lastseen": 1e300, "created": -1e300},
    {"delaybetweeneachsms": 0.01, "siminfo": "not json", "title": {"a": 1}},
]


@pytest.mark.parametrize("fields", NASTY_DEVICES)
def test_nonsense_device_delays_fall_back_to_the_defaults(
    contexts: Callable[..., Context], stub: StubGateway, fields: dict[str, Any]
) -> None:
    # without a usable lastseen the sync counts the phone offline, and RELAY_HOLD_OFFLINE
    # would hold its messages: this is about the delays, so they are submitted anyway
    ctx = contexts(device_overrides={}, default_send_interval=0.0, hold_offline=False)
    device = {"id": DEV, **fields}
    reply = Reply(200, json.dumps({"count": 1, "device": {str(DEV): device}}).encode())
    stub.rule = lambda endpoint, form: reply if endpoint == "getalldevices" else None
    with contextlib.suppress(GatewayError):
        sync_devices(ctx)
    ids = send(ctx, 2)
    run_lane(ctx)
    assert set(outcome_of(ctx, ids).values()) == {"submitted"}


# --- a real worker process -------------------------------------------------------------------


@pytest.mark.slow
def test_a_burst_worker_process_survives_garbage_and_sends_each_message_once(
    relay_settings: MakeSettings,
    stub: StubGateway,
    sim: Simulator,
    start_workers: StartWorkers,
    redis_conn: redis.Redis,
) -> None:
    answers = iter(
        [
            Reply(502, b"<html>Bad Gateway</html>", "text/html"),
            Reply.json({"ok": True}),
            Reply(200, b"\x00\xff garbage"),
        ]
    )

    def rule(endpoint: str, form: Mapping[str, str]) -> Reply | None:
        if endpoint != "addalotofsms":
            return None
        return next(answers, None)  # three garbage answers, then the simulator

    stub.rule = rule
    settings: Settings = relay_settings(
        gateway_url=stub.url, gateway_token=sim.token, gateway_timeout=1.0, batch_max=2
    )
    ctx = Context(settings, redis_conn)
    ids = send(ctx, 5) + send(ctx, 1, tag="otp", urgent=True)
    (worker,) = start_workers(1, settings, "--burst")
    assert worker.proc.wait(90) == 0, worker.log()
    assert "Traceback" not in worker.log()
    assert next(answers, None) is None, "every garbage answer was served"
    assert sorted(e.body for e in sim.ledger()) == sorted(["otp0", *(f"m{i}" for i in range(5))])
    assert {m.state for m in ctx.store.get_many(ids) if m} == {State.SUBMITTED}
    for kind in ("u", "b"):
        registry = FailedJobRegistry(queue=ticket_queue(redis_conn, ctx.keys, kind))
        assert registry.count == 0, "a ticket job failed"
