"""Bad input never enters (docs/design.md, invariant 7): property tests over every way in.

``Relay.send``, ``Relay.send_many``, ``relay send`` and ``relay send --file`` (JSONL and
CSV) get random messages, each either valid (with the stored form worked out here, not by
``relay.produce.validation``) or with ONE field spoiled in a way that field must refuse. A spoiled
input must be refused naming that field (the CLI: exit 2, a line naming the field and the
line number, no traceback) with nothing stored (every key under the prefix compared before
and after); a valid one must be stored exactly (the record read back and compared). Wild
inputs (any types, any text) must end one of those two ways, never with another exception.

Runs on both Redis servers, 60 examples a test. ``HYPOTHESIS_PROFILE=long`` turns that up to
1000 (give pytest ``--timeout 0`` then: the default 120 s per test is too short).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.cli.main import cli
from relay.clock import FakeClock
from relay.connection import text
from relay.core import Relay
from relay.errors import ValidationError
from relay.keys import Keys
from relay.lanes import BULK, URGENT, LaneId
from relay.produce.validation import FIELDS, validate
from relay.settings import load_settings

_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "relay-props", max_examples=60, deadline=None, suppress_health_check=_CHECKS
)
settings.register_profile("long", max_examples=1000, deadline=None, suppress_health_check=_CHECKS)
PROFILE = settings.get_profile(
    "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "relay-props"
)

BODY_MAX = 4096  # the default RELAY_BODY_MAX
INT_MAX = 2**63 - 1
NOW = 1_800_000_000.0  # the FakeClock of library tests (2027-01-15)
PAST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE = datetime(2100, 1, 1, tzinfo=UTC)  # after NOW and after the wall clock of CLI tests
CLI_OPTION = {
    "sendto": "--to",
    "body": "--body",
    "device_id": "--device",
    "sim": "--sim",
    "customerid": "--customer-id",
    "timetosend": "--at",
    "key": "--key",
}


@dataclass(frozen=True)
class Expect:
    """The record a valid message must leave, worked out independently of relay's validation."""

    sendto: str
    body: str
    device_id: int
    sim: int = 0
    urgent: bool = False
    customerid: int | None = None
    due_ms: int | None = None
    key: str | None = None


Field = tuple[Any, Any]  # (what is given, what must be stored)

# --- valid values ------------------------------------------------------------------------


@st.composite
def phones(draw: st.DrawFn) -> Field:
    digits = draw(st.text("0123456789", min_size=1, max_size=20))
    seps = draw(
        st.lists(
            st.sampled_from(["", "", " ", "-", ".", "(", ")", "/", "\u00a0", "\u2009"]),
            min_size=len(digits),
            max_size=len(digits),
        )
    )
    plus = "+" if draw(st.booleans()) else ""
    return plus + "".join(s + d for s, d in zip(seps, digits, strict=True)), plus + digits


_BODY_CHARS = st.characters(
    blacklist_categories=["Cs"],
    blacklist_characters=[chr(c) for c in range(32) if chr(c) not in "\t\n\r"],
)
BODIES = st.one_of(
    st.text(_BODY_CHARS, min_size=1, max_size=60),
    st.integers(BODY_MAX - 2, BODY_MAX).map(lambda n: "€" * n),
).filter(lambda body: not body.isspace())


def _number(low: int, high: int) -> st.SearchStrategy[Field]:
    """An int in low..high as an int, digit text (spaces, a +) or a float without fraction."""
    return st.integers(low, high).flatmap(
        lambda n: (
            st.sampled_from([(n, n), (str(n), n), (f" +{n} ", n), (float(n), n)])
            if n < 2**53
            else st.sampled_from([(n, n), (str(n), n)])
        )
    )


URGENT_VALUES: list[Field] = [
    (True, True),
    (False, False),
    (1, True),
    (0, False),
    ("true", True),
    ("FALSE", False),
    (" 1 ", True),
    ("0", False),
    (None, False),
]


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@st.composite
def _future_moment(draw: st.DrawFn) -> Field:
    zone = draw(
        st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
        )
    )
    when = draw(st.datetimes(datetime(2100, 1, 1), datetime(2200, 1, 1), timezones=st.just(zone)))
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    naive_utc = when.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    day = when.date()
    midnight = _ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    return draw(
        st.sampled_from(
            [
                (when, _ms(when)),
                (when.isoformat(), _ms(when)),
                (day, midnight),
                (day.isoformat(), midnight),
                (naive_utc.strftime("%Y-%m-%d %H:%M:%S"), _ms(naive_utc.replace(tzinfo=UTC))),
            ]
        )
    )


_EPOCHS = st.integers(round(FUTURE.timestamp()), 99_999_999_999).flatmap(
    lambda s: st.sampled_from([(s, s * 1000), (str(s), s * 1000), (float(s), s * 1000)])
)
#: ``timetosend`` in every accepted form, with the due ms it stands for (None: send now).
DUE_TIMES = st.one_of(
    st.sampled_from(
        [
            (None, None),
            ("", None),
            (PAST, None),
            (PAST.isoformat(), None),
            (946684800, None),
            ("2000-01-01", None),
            (date(1999, 12, 31), None),
        ]
    ),
    _future_moment(),
    _EPOCHS,
)


_PRINTABLE = st.one_of(st.characters(categories=["L", "M", "N", "P", "S"]), st.just(" "))
KEYS = st.text(_PRINTABLE, min_size=1, max_size=30).map(lambda k: (k, k))
VALID: dict[str, st.SearchStrategy[Field]] = {
    "sendto": phones(),
    "body": BODIES.map(lambda b: (b, b)),
    "device_id": _number(1, INT_MAX),
    "sim": _number(0, 5),
    "urgent": st.sampled_from(URGENT_VALUES),
    "customerid": st.one_of(st.just((None, None)), st.just(("", None)), _number(0, INT_MAX)),
    "timetosend": DUE_TIMES,
    "key": st.one_of(st.just((None, None)), KEYS),
}

# --- spoiled values, one field at a time -----------------------------------------------------

_CONTROL = st.sampled_from([chr(c) for c in range(32) if chr(c) not in "\t\n\r"])


def _spliced(base: st.SearchStrategy[str], extra: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``base`` with one ``extra`` character inserted at a random place."""
    return st.tuples(base, extra, st.integers(0, 100)).map(
        lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]
    )


DIGITS = st.text("0123456789", min_size=1, max_size=12)
#: Spoiled values that are text, so every way in (library, JSONL, CSV, CLI) can carry them.
TEXT_BAD: dict[str, st.SearchStrategy[str]] = {
    "sendto": st.one_of(
        _spliced(DIGITS, st.characters(categories=["Lu", "Ll", "Lo"])),
        _spliced(DIGITS, st.sampled_from(["\t", "\n", "\x00", "\x1f", "#", "*", "+"])).filter(
            lambda s: not s.startswith("+") or s.count("+") > 1 or not s[1:].isdigit()
        ),
        st.sampled_from(["123,456", "123;456", " - ", "++49", "٢٦٠١٢٣", "49 1 5 7 ² 3"]),
        st.text("0123456789", min_size=21, max_size=40),
    ),
    "body": st.one_of(
        _spliced(st.text(_BODY_CHARS, min_size=1, max_size=40), _CONTROL),
        st.text(" \t\n\r\u3000\u00a0", min_size=1, max_size=5),
        st.integers(BODY_MAX + 1, BODY_MAX + 300).map(lambda n: "ä" * n),
    ),
    "device_id": st.one_of(
        st.sampled_from(["0", "-1", "26O", "1.5", "0x10", "1e3", "٢٦٠", " ", "two", "2 60"]),
        st.integers(INT_MAX + 1, 2**70).map(str),
        st.integers(4400, 6000).map(lambda n: "9" * n),
    ),
    "sim": st.sampled_from(["6", "7", "-1", "one", "1.5", "٣", "99999999999999999999999"]),
    "urgent": st.sampled_from(["yes", "no", "2", "-1", "urgent", "tru"]),
    "customerid": st.sampled_from(["-1", "abc", "1.5", "1e3", "12a", "٣", "9" * 5000]),
    "timetosend": st.sampled_from(
        [
            "2030-02-30",
            "2030-13-01",
            "tomorrow",
            "12:00",
            "nan",
            "inf",
            "-5",
            "2030-01-01T25:00",
            "1800000000000",
            "9" * 400,
            "2030/01/02",
        ]
    ),
    "key": st.one_of(
        st.integers(201, 400).map(lambda n: "k" * n),
        _spliced(
            st.text("abc", min_size=0, max_size=5), st.sampled_from(["\n", "\x00", "\u2028", "\t"])
        ),
    ),
}
#: Further spoiled values that only the library (and JSON, where it can say them) can carry.
PY_BAD: dict[str, list[Any]] = {
    "sendto": [4915752982212, b"+49157", ["+49157"], 1.5, "", True],
    "body": [b"hello", 17, ["hi"], "", "a\ud800b", {"text": "x"}],
    "device_id": [
        0,
        -5,
        1.5,
        True,
        False,
        [260],
        {"id": 1},
        float("nan"),
        float("inf"),
        INT_MAX + 1,
        10**400,
        "",
        b"260",
    ],
    "sim": [6, -1, 1.5, True, [0], float("nan"), 10**30],
    "urgent": [2, -1, 1.0, "", [], "maybe", b"1"],
    "customerid": [-1, 1.5, True, [1], float("inf"), 10**25],
    "timetosend": [True, [], {}, b"2030", float("nan"), -1, 10**400, float("inf"), 1.8e12, "x"],
    "key": ["", 17, b"k", ["k"], "k" * 201],
}
ORDER = ("sendto", "body", "device_id", "sim", "urgent", "customerid", "timetosend", "key")
REQUIRED = ("sendto", "body", "device_id")


def _valid_dict(draw: st.DrawFn) -> tuple[dict[str, Any], Expect]:
    raw: dict[str, Any] = {}
    stored: dict[str, Any] = {}
    for name in ORDER:
        given_value, stored[name] = draw(VALID[name])
        if name in REQUIRED or given_value is not None or draw(st.booleans()):
            raw[name] = given_value
    e = Expect(*(stored[name] for name in ORDER))
    return raw, e


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[dict[str, Any], Expect]:
    """A valid message (field → value as given) and the record it must leave."""
    return _valid_dict(draw)


@st.composite
def spoiled_messages(
    draw: st.DrawFn, carrier: str = "py", fields: tuple[str, ...] = ORDER
) -> tuple[dict[str, Any], str]:
    """A message with one field spoiled, and that field. ``carrier``: ``py`` (any value),
    ``json`` (values JSON can carry) or ``text`` (strings only: CSV and the CLI)."""
    raw, base = _valid_dict(draw)
    if carrier == "text":
        raw = text_message(raw, base)
    field = draw(st.sampled_from(fields))
    extra = [] if carrier == "text" else PY_BAD[field]
    if carrier == "json":
        extra = [v for v in extra if not isinstance(v, bytes)]
    strategy: st.SearchStrategy[Any] = TEXT_BAD[field]
    if extra:
        strategy = st.one_of(strategy, st.sampled_from(extra))
    raw[field] = draw(strategy)
    return raw, field


# --- fixtures and checks --------------------------------------------------------------------


@pytest.fixture
def prefixes(key_prefix: str) -> Callable[[], str]:
    """Factory: a fresh key prefix under this test's own, one per example (so each example
    starts from an empty Redis and its snapshots stay small)."""
    counter = itertools.count()
    return lambda: f"{key_prefix}:{next(counter)}"


@pytest.fixture
def fresh(
    redis_url: str, redis_conn: redis.Redis, prefixes: Callable[[], str]
) -> Callable[[], Relay]:
    """Factory: a Relay on a fresh prefix, the FakeClock at NOW, sharing one connection."""
    base = load_settings(redis_url=redis_url)

    def make() -> Relay:
        settings = base.model_copy(update={"key_prefix": prefixes()})
        return Relay(settings, conn=redis_conn, clock=FakeClock(NOW))

    return make


def snapshot(conn: redis.Redis, prefix: str) -> dict[bytes | str, Any]:
    """Every key of ``prefix`` and its RQ queues → (type, contents or size)."""
    keys = Keys(prefix)
    queues = [f"rq:queue:{q}" for q in (keys.urgent_queue, keys.bulk_queue, keys.webhook_queue)]
    names = sorted(conn.keys(f"{prefix}:*"))  # one round trip: the test DB is shared and big
    names += [q.encode() for q in queues if conn.exists(q)]
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    kinds = pipe.execute()
    read: dict[bytes, Callable[[bytes | str], object]] = {
        b"string": pipe.get,
        b"hash": pipe.hgetall,
        b"zset": pipe.zcard,
        b"set": pipe.smembers,
        b"stream": pipe.xlen,
    }
    for name, kind in zip(names, kinds, strict=True):
        if kind == b"list":
            pipe.lrange(name, 0, -1)
        else:
            read[kind](name)
    return dict(zip(names, zip(kinds, pipe.execute(), strict=True), strict=True))


def assert_stored(
    conn: redis.Redis, keys: Keys, msg_id: str, e: Expect, seen: dict[str, str]
) -> None:
    """The record of ``msg_id`` is exactly ``e`` and waits on its lane or schedule."""
    if e.key is not None and e.key in seen:
        assert msg_id == seen[e.key], "a known idempotency key must answer its first id"
        return
    if e.key is not None:
        seen[e.key] = msg_id
    raw = conn.hgetall(keys.msg(msg_id))
    record = {text(k): text(v) for k, v in raw.items()}  # each chunk whole UTF-8
    state = "queued" if e.due_ms is None else "scheduled"
    chunks = [record.pop("body")]
    while f"body{len(chunks)}" in record:
        chunks.append(record.pop(f"body{len(chunks)}"))
    assert "".join(chunks) == e.body
    assert all(len(c.encode()) <= 64 for c in chunks)  # the hash stays a listpack
    want = {"sendto": e.sendto, "device_id": str(e.device_id), "state": state}
    optional = {
        "customerid": e.customerid,
        "timetosend": e.due_ms,
        "key": e.key,
        "sim": e.sim or None,  # 0 is the default, not stored
        "urgent": 1 if e.urgent else None,
    }
    want.update({k: str(v) for k, v in optional.items() if v is not None})
    assert record == want
    kind = URGENT if e.urgent else BULK
    if e.due_ms is None:
        lane = conn.lrange(keys.lane(LaneId(kind, e.device_id, e.sim)), 0, -1)
        assert msg_id.encode() in lane
    else:
        assert conn.zscore(keys.sched(LaneId(kind, e.device_id, e.sim)), msg_id) == e.due_ms


def assert_refused(exc: ValidationError, field: str, index: int | None = None) -> None:
    assert exc.field == field, (exc.field, field, str(exc))
    assert f"{field}: " in str(exc)
    assert exc.index == index


# --- the library -------------------------------------------------------------------------


@PROFILE
@given(case=spoiled_messages())
def test_send_refuses_a_spoiled_field_by_name_storing_nothing(
    fresh: Callable[[], Relay], redis_conn: redis.Redis, case: tuple[dict[str, Any], str]
) -> None:
    raw, field = case
    relay = fresh()
    relay.send("+4915752982212", "already there", 260, key="k1")
    before = snapshot(redis_conn, relay.settings.key_prefix)
    with pytest.raises(ValidationError) as info:
        relay.send(**raw)
    assert_refused(info.value, field)
    assert snapshot(redis_conn, relay.settings.key_prefix) == before


@PROFILE
@given(case=valid_messages())
def test_send_stores_a_valid_message_exactly(
    fresh: Callable[[], Relay], redis_conn: redis.Redis, case: tuple[dict[str, Any], Expect]
) -> None:
    raw, e = case
    relay = fresh()
    msg_id = relay.send(**raw)
    assert_stored(redis_conn, relay.ctx.keys, msg_id, e, {})
    if e.key is not None:  # the same key again: the first id, nothing more stored
        before = snapshot(redis_conn, relay.settings.key_prefix)
        assert relay.send(**raw) == msg_id
        assert snapshot(redis_conn, relay.settings.key_prefix) == before


def _not_a_message(draw: st.DrawFn, raw: dict[str, Any]) -> tuple[Any, str]:
    """``raw`` spoiled as a whole: not a mapping, an unknown field, a required one missing."""
    how = draw(st.sampled_from(["type", "unknown", "missing"]))
    if how == "type":
        return draw(st.sampled_from([None, "sendto", 17, ["+49", "x", 1], ("a",)])), "item"
    if how == "unknown":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in FIELDS))
        return {**raw, name: draw(st.integers())}, name
    missing = draw(st.sampled_from(REQUIRED))
    return {k: v for k, v in raw.items() if k != missing}, missing


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Any], list[Expect], tuple[int, str] | None]:
    """1-6 messages, maybe one (at a drawn index) spoiled: items, expects, (index, field)."""
    goods = draw(st.lists(valid_messages(), min_size=1, max_size=6))
    items: list[Any] = [raw for raw, _ in goods]
    if not draw(st.booleans()):
        return items, [e for _, e in goods], None
    at = draw(st.integers(0, len(items) - 1))
    if draw(st.booleans()):
        items[at], field = draw(spoiled_messages())
    else:
        items[at], field = _not_a_message(draw, items[at])
    return items, [], (at, field)


@PROFILE
@given(case=batches(), chunk=st.integers(1, 4))
def test_send_many_stores_all_or_nothing(
    fresh: Callable[[], Relay],
    redis_conn: redis.Redis,
    case: tuple[list[Any], list[Expect], tuple[int, str] | None],
    chunk: int,
) -> None:
    items, expects, bad = case
    relay = fresh()
    if bad is None:
        ids = relay.send_many(items, chunk_size=chunk)
        assert len(ids) == len(items)
        seen: dict[str, str] = {}
        for msg_id, e in zip(ids, expects, strict=True):
            assert_stored(redis_conn, relay.ctx.keys, msg_id, e, seen)
        return
    relay.send("+4915752982212", "already there", 260, urgent=True)
    before = snapshot(redis_conn, relay.settings.key_prefix)
    with pytest.raises(ValidationError) as info:
        relay.send_many(items, chunk_size=chunk)
    assert_refused(info.value, bad[1], bad[0])
    after = snapshot(redis_conn, relay.settings.key_prefix)
    assert after == before, "a refused send_many stored something"


WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dates(),
    st.datetimes(),
    st.text("0123456789+ -().", max_size=24),
    st.sampled_from(["260", "0", "1", "true", "2100-01-01"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(_CONTROL, min_size=1, max_size=3),
)
WILD_ITEMS = st.one_of(
    st.fixed_dictionaries(
        {"sendto": WILD, "body": WILD, "device_id": WILD},
        optional={name: WILD for name in ORDER[3:]},
    ),
    st.dictionaries(st.one_of(st.sampled_from(ORDER), st.text(max_size=6)), WILD, max_size=9),
    WILD,
)


@PROFILE
@given(items=st.lists(WILD_ITEMS, min_size=1, max_size=4))
def test_wild_input_is_refused_by_name_or_stored_as_validated(
    fresh: Callable[[], Relay], redis_conn: redis.Redis, items: list[Any]
) -> None:
    relay = fresh()
    relay.send("+4915752982212", "already there", 260)
    before = snapshot(redis_conn, relay.settings.key_prefix)
    seen: dict[str, str] = {}
    try:
        ids = relay.send_many(items)
    except ValidationError as exc:
        assert exc.index is not None and 0 <= exc.index < len(items)
        item = items[exc.index]
        named = (
            set(FIELDS) | {"item"} | (set(map(str, item)) if isinstance(item, Mapping) else set())
        )
        assert exc.field in named and f"{exc.field}: " in str(exc)
        assert snapshot(redis_conn, relay.settings.key_prefix) == before
        return
    for msg_id, item in zip(ids, items, strict=True):
        valid = validate(item, relay.settings, NOW)
        e = Expect(
            valid.sendto,
            valid.body,
            valid.device_id,
            valid.sim,
            valid.urgent,
            valid.customerid,
            valid.timetosend,
            valid.key,
        )
        assert item["body"] == e.body
        assert_stored(redis_conn, relay.ctx.keys, msg_id, e, seen)


# --- the CLI: relay send ----------------------------------------------------------------------


_INT_FIELDS = ("device_id", "sim", "customerid")


def as_text(value: Any) -> str | None:
    """A valid value as a CLI argument or CSV cell would give it (None: left out)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def text_message(raw: Mapping[str, Any], e: Expect | None) -> dict[str, Any]:
    """``raw`` in text form; with ``e``, valid integers given as floats become digits
    (``260.0`` is valid only where JSON can say it is a number)."""
    out = {}
    for name, value in raw.items():
        if e is not None and name in _INT_FIELDS and not isinstance(value, str):
            value = getattr(e, name)
        text = as_text(value)
        if text is not None:
            out[name] = text
    return out


def run_cli(args: list[str], redis_url: str, prefix: str) -> Result:
    env = {"RELAY_REDIS_URL": redis_url, "RELAY_KEY_PREFIX": prefix}
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"relay {args[:2]} raised") from result.exception
    assert "Traceback" not in result.stderr
    return result


def cli_args(fields: Mapping[str, str], urgent: bool) -> list[str]:
    args = ["send", "--json"]
    args += [f"{CLI_OPTION[name]}={value}" for name, value in fields.items() if name != "urgent"]
    return args + (["--urgent"] if urgent else [])


@st.composite
def cli_cases(draw: st.DrawFn) -> tuple[dict[str, str], bool, Expect | str]:
    """Options of one ``relay send``: text fields, --urgent, and the Expect or spoiled field."""
    if draw(st.booleans()):
        raw, e = draw(valid_messages())
        return text_message(raw, e), e.urgent, e
    fields, field = draw(spoiled_messages("text", tuple(f for f in ORDER if f != "urgent")))
    if field in _INT_FIELDS and not fields[field].isascii():
        fields[field] = "12a"  # click's int type takes any Unicode digits ("٣" is 3)
    urgent = fields.pop("urgent", "false") in ("true", "1", " 1 ")
    return fields, urgent, field


@PROFILE
@given(case=cli_cases())
def test_cli_send_refuses_by_name_or_stores_exactly(
    redis_url: str,
    redis_conn: redis.Redis,
    prefixes: Callable[[], str],
    case: tuple[dict[str, str], bool, Expect | str],
) -> None:
    fields, urgent, outcome = case
    prefix = prefixes()
    result = run_cli(cli_args(fields, urgent), redis_url, prefix)
    if isinstance(outcome, Expect):
        assert result.exit_code == 0, result.stderr
        (msg_id,) = json.loads(result.stdout)
        assert_stored(redis_conn, Keys(prefix), msg_id, outcome, {})
        return
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert outcome in lines[0] or CLI_OPTION[outcome] in lines[0], lines[0]
    assert redis_conn.keys(f"{prefix}:*") == []


# --- the CLI: relay send --file (JSON Lines and CSV) ------------------------------------------


@st.composite
def file_cases(draw: st.DrawFn, carrier: str) -> list[tuple[dict[str, Any], Expect | str]]:
    """1-5 lines, each a valid message (with its Expect) or a spoiled one (with its field)."""
    lines: list[tuple[dict[str, Any], Expect | str]] = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 3)) == 0:
            raw, field = draw(spoiled_messages(carrier))
            lines.append((raw, field))
        else:
            raw, e = draw(valid_messages())
            lines.append((raw, e))
    return lines


def _json_line(raw: Mapping[str, Any]) -> str:
    data = {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in raw.items()}
    text = json.dumps(data, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON can only say it escaped
        text = json.dumps(data)
    return text


def write_jsonl(path: Path, lines: list[tuple[dict[str, Any], Expect | str]]) -> list[int]:
    path.write_text("".join(_json_line(raw) + "\n" for raw, _ in lines), encoding="utf-8")
    return list(range(1, len(lines) + 1))


def write_csv(path: Path, lines: list[tuple[dict[str, Any], Expect | str]]) -> list[int]:
    """Write the rows; returns the line each row ends on (quoted cells may span lines)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(ORDER)
    ends = []
    for raw, outcome in lines:
        cells = text_message(raw, outcome) if isinstance(outcome, Expect) else raw
        writer.writerow([cells.get(name, "") for name in ORDER])
        ends.append(len(io.StringIO(buffer.getvalue(), newline="").readlines()))
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return ends


def check_file_outcome(
    result: Result,
    conn: redis.Redis,
    prefix: str,
    lines: list[tuple[dict[str, Any], Expect | str]],
    numbers: list[int],
) -> None:
    bad = [
        (n, outcome)
        for n, (_, outcome) in zip(numbers, lines, strict=True)
        if isinstance(outcome, str)
    ]
    if not bad:
        assert result.exit_code == 0, result.stderr
        ids = json.loads(result.stdout)
        seen: dict[str, str] = {}
        for msg_id, (_, e) in zip(ids, lines, strict=True):
            assert isinstance(e, Expect)
            assert_stored(conn, Keys(prefix), msg_id, e, seen)
        return
    assert result.exit_code == 2, (result.stdout, result.stderr)
    errors = result.stderr.splitlines()
    for n, field in bad:
        assert any(line.startswith(f"line {n}: {field}: ") for line in errors), (n, field, errors)
    assert len(errors) == len(bad) + 1 and "nothing was sent" in errors[-1], errors
    assert conn.keys(f"{prefix}:*") == []


@PROFILE
@given(lines=file_cases("json"))
def test_cli_send_jsonl_file_refuses_lines_by_number_and_field(
    redis_url: str,
    redis_conn: redis.Redis,
    prefixes: Callable[[], str],
    tmp_path: Path,
    lines: list[tuple[dict[str, Any], Expect | str]],
) -> None:
    prefix = prefixes()
    path = tmp_path / f"{prefix.replace(':', '-')}.jsonl"
    numbers = write_jsonl(path, lines)
    result = run_cli(["send", "--json", "--file", str(path)], redis_url, prefix)
    check_file_outcome(result, redis_conn, prefix, lines, numbers)


@PROFILE
@given(lines=file_cases("text"))
def test_cli_send_csv_file_refuses_lines_by_number_and_field(
    redis_url: str,
    redis_conn: redis.Redis,
    prefixes: Callable[[], str],
    tmp_path: Path,
    lines: list[tuple[dict[str, Any], Expect | str]],
) -> None:
    prefix = prefixes()
    path = tmp_path / f"{prefix.replace(':', '-')}.csv"
    numbers = write_csv(path, lines)
    result = run_cli(["send", "--json", "--file", str(path)], redis_url, prefix)
    check_file_outcome(result, redis_conn, prefix, lines, numbers)


GOOD_JSON = b'{"sendto": "+4915752982212", "body": "fine", "device_id": 260}\n'
GOOD_ROW = b"+4915752982212,fine,260\n"


@pytest.mark.parametrize(
    ("name", "content", "bad_line", "words"),
    [
        (
            "huge.jsonl",
            GOOD_JSON + b'{"body": "x", "device_id": ' + b"9" * 5000 + b"}\n",
            2,
            "line: not valid JSON",
        ),
        ("deep.jsonl", b"[" * 100_000 + b"\n" + GOOD_JSON, 1, "line: not valid JSON"),
        (
            "latin1.jsonl",
            GOOD_JSON + b'{"body": "caf\xe9"}\n' + GOOD_JSON,
            2,
            "line: is not UTF-8 text",
        ),
        (
            "huge.csv",
            b"sendto,body,device_id\n" + GOOD_ROW + b"+49157,x," + b"9" * 5000 + b"\n",
            3,
            "device_id: is out of range",
        ),
        (
            "latin1.csv",
            b"sendto,body,device_id\n" + GOOD_ROW + b"+49157,caf\xe9,260\n",
            3,
            "line: is not UTF-8 text",
        ),
        (
            "wide.csv",
            b"sendto,body,device_id\n+49157," + b"x" * 200_000 + b",260\n",
            2,
            "line: unreadable CSV",
        ),
        (
            "digits.csv",
            "sendto,body,device_id\n+49157,x,٢٦٠\n".encode(),
            2,
            "device_id: must be a whole number",
        ),
    ],
)
def test_unreadable_lines_are_refused_by_number_without_a_traceback(
    redis_url: str,
    redis_conn: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    name: str,
    content: bytes,
    bad_line: int,
    words: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_cli(["send", "--file", str(path)], redis_url, key_prefix)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert f"line {bad_line}: {words}" in result.stderr, result.stderr
    assert redis_conn.keys(f"{key_prefix}:*") == []
    if name.startswith("latin1"):  # only the line with the bad bytes is spoiled
        result = run_cli(
            ["send", "--json", "--skip-invalid", "--file", str(path)], redis_url, key_prefix
        )
        assert result.exit_code == 0, result.stderr
        ids = json.loads(result.stdout)
        assert ids[bad_line - (2 if name.endswith(".csv") else 1)] is None
        assert len([i for i in ids if i]) == len(ids) - 1
