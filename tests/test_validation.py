"""Every validation rule: what is accepted, how it is normalised, and that a refusal names
the field (and the item's index), with nothing stored."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from relay.core import Relay
from relay.errors import ValidationError
from relay.produce.validation import ValidMessage, check, check_body, validate
from relay.settings import Settings, load_settings
from tests.fixtures.workers import MakeSettings

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
SETTINGS = load_settings(body_max=20)
DE = load_settings(default_region="DE")


def ok(settings: Settings = SETTINGS, **fields: Any) -> ValidMessage:
    data = {"sendto": "+4915752982212", "body": "hi", "device_id": 260, **fields}
    return validate(data, settings, NOW)


def refused(settings: Settings = SETTINGS, **fields: Any) -> ValidationError:
    data = {"sendto": "+4915752982212", "body": "hi", "device_id": 260, **fields}
    with pytest.raises(ValidationError) as info:
        validate(data, settings, NOW)
    return info.value


# --- sendto ----------------------------------------------------------------------------


def test_formatting_characters_are_dropped() -> None:
    assert ok(sendto="+49 (157) 5298-22.12/1").sendto == "+49157529822121"
    assert ok(sendto="+49\u00a0157\u202f52982212").sendto == "+4915752982212"
    assert ok(sendto="0157\u2013529 822 12").sendto == "015752982212"


@pytest.mark.parametrize("value", ["+491575,+491576", "123; 456"])
def test_several_recipients_are_refused_with_a_hint(value: str) -> None:
    err = refused(sendto=value)
    assert err.field == "sendto"
    assert "send_many" in err.reason


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("+49 15a 123", "letters"),
        ("+49\t157123", "control"),
        ("", "empty"),
        (" - ", "empty"),
        ("+", "digits"),
        ("++49123", "digits"),
        ("49+123", "digits"),
        ("\u0661\u0662\u0663", "digits"),  # Arabic-Indic digits are not [0-9]
        ("1" * 21, "more than 20"),
    ],
)
def test_sendto_must_be_digits_with_optional_plus(value: str, words: str) -> None:
    err = refused(sendto=value)
    assert err.field == "sendto"
    assert words in err.reason


def test_sendto_must_be_text() -> None:
    err = refused(sendto=4915752982212)
    assert (err.field, "string" in err.reason) == ("sendto", True)


def test_without_region_the_cleaned_number_is_kept() -> None:
    assert ok(sendto="0157 52982212").sendto == "015752982212"


def test_with_region_numbers_become_e164() -> None:
    assert ok(DE, sendto="0157 52982212").sendto == "+4915752982212"
    assert ok(DE, sendto="0049 157 52982212").sendto == "+4915752982212"
    assert ok(DE, sendto="+1 (202) 555-0147").sendto == "+12025550147"


def test_with_region_impossible_numbers_are_refused() -> None:
    assert refused(DE, sendto="+49 1").field == "sendto"
    assert "possible" in refused(DE, sendto="+1 202").reason


# --- body ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["x", "line\nline\r\n\ttab", "Grüße 😀", "x" * 20])
def test_bodies_are_kept_unchanged(body: str) -> None:
    assert ok(body=body).body == body


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("", "empty"),
        (" \n\t ", "empty"),
        ("x" * 21, "at most 20"),
        ("a\x00b", "U+0000"),
        ("esc\x1b[0m", "U+001B"),
        ("unit\x1fsep", "U+001F"),
        ("half \ud83d", "surrogate"),
        (b"bytes", "string"),
        (42, "string"),
    ],
)
def test_bad_bodies_are_refused(body: Any, words: str) -> None:
    err = refused(body=body)
    assert err.field == "body"
    assert words in err.reason


@given(st.text(min_size=1, max_size=50))
def test_an_accepted_body_never_holds_the_enqueue_separator(body: str) -> None:
    try:
        accepted = check_body(body, 100)
    except ValidationError:
        return
    assert "\x1f" not in accepted and accepted == body


# --- integers --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(260, 260), ("260", 260), (" 7 ", 7), (9.0, 9)])
def test_device_id_takes_whole_numbers_and_digit_strings(value: Any, expected: int) -> None:
    assert ok(device_id=value).device_id == expected


@pytest.mark.parametrize("value", [0, -3, "0", True, False, 2.5, "26a", "2.0", "", [260]])
def test_device_id_must_be_a_positive_whole_number(value: Any) -> None:
    assert refused(device_id=value).field == "device_id"


@pytest.mark.parametrize("value", [2**63, 10**30, "9" * 5000, 1e300, float("inf"), "-" + "9" * 25])
def test_integers_beyond_64_bits_are_refused(value: Any) -> None:
    assert refused(device_id=value).field == "device_id"
    assert refused(customerid=value).field == "customerid"


def test_the_largest_64_bit_id_is_accepted() -> None:
    assert ok(device_id=str(2**63 - 1)).device_id == 2**63 - 1


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (5, 5), ("3", 3), (None, 0), (1.0, 1)])
def test_sim_takes_slots_0_to_5(value: Any, expected: int) -> None:
    assert ok(sim=value).sim == expected


@pytest.mark.parametrize("value", [6, -1, True, 0.5, "one"])
def test_sim_outside_0_to_5_is_refused(value: Any) -> None:
    err = refused(sim=value)
    assert err.field == "sim"


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), (0, 0), ("42", 42)])
def test_customerid_is_optional_and_non_negative(value: Any, expected: int | None) -> None:
    assert ok(customerid=value).customerid == expected


@pytest.mark.parametrize("value", [-1, True, 1.5, "x"])
def test_bad_customerid_is_refused(value: Any) -> None:
    assert refused(customerid=value).field == "customerid"


# --- urgent ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("true", True),
        ("FALSE", False),
        ("1", True),
        ("0", False),
        (None, False),
    ],
)
def test_urgent_takes_bools_and_their_spellings(value: Any, expected: bool) -> None:
    msg = ok(urgent=value)
    assert msg.urgent is expected
    assert msg.lane.kind == ("u" if expected else "b")


@pytest.mark.parametrize("value", [2, "yes", "", 1.0])
def test_other_urgent_values_are_refused(value: Any) -> None:
    assert refused(urgent=value).field == "urgent"


# --- timetosend ------------------------------------------------------------------------

LATER = NOW + 3600
LATER_MS = int(LATER * 1000)


@pytest.mark.parametrize(
    "value",
    [
        datetime.fromtimestamp(LATER, UTC),
        datetime.fromtimestamp(LATER, UTC).replace(tzinfo=None),  # naive = UTC
        datetime.fromtimestamp(LATER, UTC).astimezone(timezone(timedelta(hours=2))),
        "2027-01-15T09:00:00Z",
        "2027-01-15T11:00:00+02:00",
        "2027-01-15 09:00:00",
        LATER,
        int(LATER),
        str(int(LATER)),
    ],
)
def test_future_times_in_every_form_give_the_due_ms(value: Any) -> None:
    assert ok(timetosend=value).timetosend == LATER_MS


def test_dates_mean_midnight_utc() -> None:
    midnight = int(datetime(2027, 2, 1, tzinfo=UTC).timestamp() * 1000)
    assert ok(timetosend="2027-02-01").timetosend == midnight
    assert ok(timetosend=date(2027, 2, 1)).timetosend == midnight


@pytest.mark.parametrize("value", [None, "", NOW, NOW - 1, "2020-01-01", 0])
def test_absent_past_or_now_means_send_now(value: Any) -> None:
    assert ok(timetosend=value).timetosend is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (LATER_MS, "milliseconds"),
        (-5, "positive"),
        (float("nan"), "positive"),
        (True, "bool"),
        ("tomorrow", "ISO 8601"),
        ("2027-13-01", "ISO 8601"),
        ([LATER], "ISO 8601"),
        (10**400, "milliseconds"),
        (-(10**400), "positive"),
    ],
)
def test_bad_times_are_refused(value: Any, words: str) -> None:
    err = refused(timetosend=value)
    assert err.field == "timetosend"
    assert words in err.reason


# --- key -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "order-17", "k" * 200, "with space ü"])
def test_keys_up_to_200_printable_characters(value: str | None) -> None:
    assert ok(key=value).key == value


@pytest.mark.parametrize("value", ["", "k" * 201, "tab\there", "nl\n", 17])
def test_bad_keys_are_refused(value: Any) -> None:
    assert refused(key=value).field == "key"


# --- the mapping -----------------------------------------------------------------------


def test_unknown_fields_are_refused_by_name() -> None:
    err = refused(priority=1, Sendto="x")
    assert err.field == "Sendto"
    assert "priority" in err.reason and "Sendto" in err.reason


@pytest.mark.parametrize("name", ["sendto", "body", "device_id"])
def test_missing_required_fields_are_named(name: str) -> None:
    data: dict[str, Any] = {"sendto": "123", "body": "x", "device_id": 1}
    del data[name]
    with pytest.raises(ValidationError) as info:
        validate(data, SETTINGS, NOW, index=4)
    assert (info.value.field, info.value.index) == (name, 4)
    assert str(info.value) == f"item 4: {name}: is required"


def test_errors_carry_the_index() -> None:
    with pytest.raises(ValidationError) as info:
        validate({"sendto": "1", "body": "x", "device_id": 1, "sim": 9}, SETTINGS, NOW, index=7)
    assert (info.value.field, info.value.index) == ("sim", 7)


def test_an_item_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError) as info:
        # a list where a mapping belongs: the wrong type is the point
        validate(["+49", "x", 1], SETTINGS, NOW, index=0)  # type: ignore[arg-type]
    assert info.value.field == "item"


def test_the_result_is_frozen_plain_data() -> None:
    msg = check(
        "+49 157",
        "x",
        "260",
        sim="1",
        urgent="true",
        customerid="5",
        key="k",
        settings=SETTINGS,
        now=NOW,
    )
    assert msg == ValidMessage("+49157", "x", 260, 1, True, 5, None, "k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.body = "changed"  # type: ignore[misc]  # writing a frozen field is the point


# --- nothing stored on a refusal (both Redis servers) ----------------------------------


@pytest.fixture
def relay(relay_settings: MakeSettings) -> Iterator[Relay]:
    with Relay(relay_settings(body_max=50)) as r:
        yield r


def _stored(conn: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(conn.scan_iter(match=f"{prefix}:*", count=1000)) + sorted(
        conn.scan_iter(match=f"rq:*{prefix}*", count=1000)
    )


def test_send_refusal_names_the_field_and_stores_nothing(
    relay: Relay, redis_conn: redis.Redis, key_prefix: str
) -> None:
    relay.send("+4915752982212", "first", 260)
    before = _stored(redis_conn, key_prefix)
    with pytest.raises(ValidationError) as info:
        relay.send("+4915752982212", "x" * 51, 260)
    assert info.value.field == "body" and info.value.index is None
    with pytest.raises(ValidationError) as info:
        relay.send("+4915752982212", "ok", 260, sim=7, urgent=True)
    assert info.value.field == "sim"
    assert _stored(redis_conn, key_prefix) == before


def test_send_many_refusal_names_the_index_and_stores_nothing(
    relay: Relay, redis_conn: redis.Redis, key_prefix: str
) -> None:
    good = {"sendto": "+4915752982212", "body": "fine", "device_id": 260}
    items = [good, {**good, "urgent": True}, {**good, "key": "k1"}, {**good, "sendto": "12a"}, good]
    with pytest.raises(ValidationError) as info:
        relay.send_many(items, chunk_size=2)
    assert (info.value.field, info.value.index) == ("sendto", 3)
    assert str(info.value).startswith("item 3: sendto:")
    assert _stored(redis_conn, key_prefix) == []


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.text(min_size=1, max_size=50).filter(lambda b: not b.isspace()))
def test_an_accepted_body_is_stored_exactly(relay: Relay, body: str) -> None:
    try:
        msg_id = relay.send("+4915752982212", body, 260, customerid=7, key=None)
    except ValidationError as exc:
        assert exc.field == "body"
        return
    assert relay.status(msg_id).body == body
