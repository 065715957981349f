"""Matching submitted messages to gateway records: the rules, and properties over random input."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.gateway.models import SmsRecord
from relay.reconcile.matching import (
    Submitted,
    is_same,
    match,
    normalise_phone,
    phones_agree,
    windows_for,
)

T0 = 1_800_000_000.0
WINDOW = 300.0


def record(
    sms_id: int,
    sendto: str,
    body: str,
    created: float,
    customerid: int | None = None,
    sim: int | None = 0,
) -> SmsRecord:
    return SmsRecord(
        id=sms_id,
        sendto=sendto,
        body=body,
        customerid=customerid,
        status=1,
        created=datetime.fromtimestamp(created, tz=UTC),
        sim=sim,
    )


def message(
    mid: str, sendto: str, body: str, at: float, customerid: int | None = None
) -> Submitted:
    return Submitted(mid, sendto, body, customerid, at, 0)


# --- the rules -----------------------------------------------------------------------


def test_phone_written_differently_is_the_same_recipient() -> None:
    assert normalise_phone("+49 157 52982212") == normalise_phone("+4915752982212")
    assert phones_agree("+49 (157) 529-822.12", "4915752982212")
    assert phones_agree("0049 157 52982212", "+4915752982212")
    assert phones_agree("015752982212", "+4915752982212")  # national vs international
    assert not phones_agree("+4915752982212", "+4915752982213")
    assert not phones_agree("12345", "912345")  # short numbers must agree exactly
    assert not phones_agree("", "")


def test_customerid_null_and_zero_mean_none() -> None:
    m = message("a", "+4915752982212", "hi", T0, customerid=None)
    assert is_same(m, record(1, "+4915752982212", "hi", T0, customerid=None), WINDOW)
    assert is_same(m, record(1, "+4915752982212", "hi", T0, customerid=0), WINDOW)
    assert not is_same(m, record(1, "+4915752982212", "hi", T0, customerid=7), WINDOW)


def test_body_sim_and_time_must_agree() -> None:
    m = message("a", "+4915752982212", "hello\r\nworld", T0)
    assert is_same(m, record(1, "4915752982212", "hello\nworld ", T0 + 5), WINDOW)
    assert not is_same(m, record(1, "4915752982212", "hello world", T0), WINDOW)
    assert not is_same(m, record(1, "4915752982212", "hello\nworld", T0 + WINDOW + 1), WINDOW)
    assert not is_same(m, record(1, "4915752982212", "hello\nworld", T0, sim=1), WINDOW)
    assert is_same(m, record(1, "4915752982212", "hello\nworld", T0, sim=None), WINDOW)


def test_identical_messages_match_one_to_one_oldest_first() -> None:
    messages = [message(f"m{i}", "+49 157 52982212", "code 1234", T0 + i) for i in range(3)]
    records = [
        record(103, "+4915752982212", "code 1234", T0 + 2),
        record(101, "+4915752982212", "code 1234", T0),
        record(102, "+4915752982212", "code 1234", T0 + 1),
    ]
    found = match(messages, records, window=WINDOW)
    assert {m: r.id for m, r in found.items()} == {"m0": 101, "m1": 102, "m2": 103}


def test_taken_records_are_never_reused() -> None:
    messages = [message("a", "+4915752982212", "x", T0), message("b", "+4915752982212", "x", T0)]
    records = [record(1, "+4915752982212", "x", T0), record(2, "+4915752982212", "x", T0)]
    found = match(messages, records, window=WINDOW, taken={1})
    assert {m: r.id for m, r in found.items()} == {"a": 2}


def test_records_outside_the_window_or_without_created_do_not_match() -> None:
    m = message("a", "+4915752982212", "x", T0)
    late = record(1, "+4915752982212", "x", T0 + WINDOW + 2)
    undated = SmsRecord(id=2, sendto="+4915752982212", body="x", status=1, created=None)
    assert match([m], [late, undated], window=WINDOW) == {}


def test_windows_merge_when_they_overlap() -> None:
    assert windows_for([], 10) == []
    assert windows_for([100, 105, 200], 10) == [(90, 115), (190, 210)]
    assert windows_for([100, 115], 10) == [(90, 125)]


# --- properties ----------------------------------------------------------------------

PHONES = ["+4915752982212", "+4915752982213", "+33612345678", "+15551234567"]
BODIES = ["code 1234", "hello", "Grüße 👋", "a\nb"]


def _spell(phone: str, style: int) -> str:
    """The same number written another way."""
    digits = phone.lstrip("+")
    return [phone, digits, f"+{digits[:2]} {digits[2:5]} {digits[5:]}", f"00{digits}"][style % 4]


sent = st.lists(
    st.tuples(
        st.sampled_from(PHONES),
        st.sampled_from(BODIES),
        st.sampled_from([None, 0, 7]),
        st.floats(0, 600),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(sent=sent, stored=st.data())
def test_every_stored_message_is_found_once_and_only_as_itself(
    sent: list[tuple[str, str, int | None, float]], stored: st.DataObject
) -> None:
    messages = [message(f"m{i:02d}", p, b, T0 + t, c) for i, (p, b, c, t) in enumerate(sent)]
    keep = stored.draw(st.lists(st.booleans(), min_size=len(messages), max_size=len(messages)))
    records = []
    for i, (m, kept) in enumerate(zip(messages, keep, strict=True)):
        if kept:
            skew = stored.draw(st.floats(-5, 5))
            style = stored.draw(st.integers(0, 3))
            records.append(
                record(1000 + i, _spell(m.sendto, style), m.body, m.submitted + skew, m.customerid)
            )
    records = stored.draw(st.permutations(records))
    found = match(messages, records, window=WINDOW)

    by_id = {m.id: m for m in messages}
    used = [r.id for r in found.values()]
    assert len(used) == len(set(used)), "a record was matched twice"
    for mid, rec in found.items():
        assert is_same(by_id[mid], rec, WINDOW)
    # as many matches as there are stored records: identical messages may swap records,
    # but every record finds a message and no message is left out while one is free
    assert len(found) == len(records)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 12), order=st.permutations(list(range(12))))
def test_identical_messages_pair_oldest_to_oldest(n: int, order: list[int]) -> None:
    messages = [message(f"m{i:02d}", "+4915752982212", "same", T0 + 10 * i) for i in range(n)]
    records = [record(500 + i, "4915752982212", "same", T0 + 10 * i + 1) for i in range(n)]
    shuffled = [records[i] for i in order if i < n]
    found = match(reversed(messages), shuffled, window=WINDOW)
    assert [found[m.id].id for m in messages] == [500 + i for i in range(n)]
