"""Matching relay's submitted messages to the gateway's records (pure functions).

``addalotofsms`` answers no ids, so a message learns its gateway ``sms_id`` by being found
among the records ``getallsms`` lists for its device. A message and a record are *the same
message* when all of these agree:

- **recipient**: both phone numbers reduced to digits (``+49 157 52982212`` ==
  ``+4915752982212`` == ``0049 157 52982212`` after the leading zeros go). A national form
  and an international one (``015752982212`` vs ``+4915752982212``) also agree when the
  shorter, without its leading zeros, has at least :data:`MIN_SUFFIX_DIGITS` digits and ends
  the longer: the gateway stores what relay sends, so this only tolerates a gateway that
  rewrites numbers, and body, customer id, device, SIM and time must agree as well. A
  ``sendto`` listing several numbers agrees number by number, in order.
- **body**: equal after line endings are made ``\\n`` and surrounding white space is dropped.
- **customerid**: equal, where the gateway's ``null`` and ``0`` and relay's ``None`` all mean
  "none".
- **sim**: equal when both sides say (the record's ``sim`` may be missing).
- **time**: the record's ``created`` lies within ``window`` seconds of the message's
  submission (either side: the clocks differ; the gateway shows whole seconds). A record
  without ``created`` never matches.

Identical messages (same recipient, body and customer id) are matched one to one, the oldest
message (by submission time, then id: relay's ids are time-ordered, so within one batch this
is the order they were sent in) to the oldest record (by ``created``, then ``sms_id``), and
a record already matched to another message (``Keys.sms_index(dev)``, passed as ``taken``)
is never used again.

Known limit: two identical messages to one number within ``window`` seconds of each other
are told apart only by order; when one of them is in doubt (its batch being verified) while
the other is followed by the reconciler, their ``sms_id`` may be swapped. Each still gets
exactly one record, so nothing is lost or sent twice.

This module is pure (property-tested): no I/O. :mod:`relay.reconcile.lookup` finds the
records at the gateway and remembers matches in Redis, for the reconciler and recovery alike.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from relay.states import STATUS_TITLES

MIN_SUFFIX_DIGITS = 9
"""Fewest digits a national number must keep to agree with an international one by suffix."""

_NON_DIGITS = re.compile(r"\D+")


class GatewayRecord(Protocol):
    """What matching reads of a gateway record (``relay.gateway.models.SmsRecord`` has it)."""

    @property
    def id(self) -> int: ...

    @property
    def sendto(self) -> str: ...

    @property
    def body(self) -> str: ...

    @property
    def customerid(self) -> int | None: ...

    @property
    def sim(self) -> int | None: ...

    @property
    def created(self) -> object: ...  # an aware datetime or None


R = TypeVar("R", bound=GatewayRecord)


@dataclass(frozen=True)
class Submitted:
    """A relay message handed to the gateway: what matching compares, and when (epoch s)."""

    id: str
    sendto: str
    body: str
    customerid: int | None
    submitted: float
    sim: int | None = None


def normalise_phone(value: str) -> str:
    """Digits only, leading zeros dropped (``+49 157 52982212`` → ``4915752982212``)."""
    return _NON_DIGITS.sub("", value).lstrip("0")


def recipients(sendto: str) -> tuple[str, ...]:
    """The normalised numbers of a ``sendto`` (several may be given, comma separated)."""
    parts = (normalise_phone(part) for part in re.split(r"[,;]", sendto))
    return tuple(part for part in parts if part)


def numbers_agree(a: str, b: str) -> bool:
    """Whether two normalised numbers name one recipient (equal, or national vs international)."""
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= MIN_SUFFIX_DIGITS and long.endswith(short)


def phones_agree(a: str, b: str) -> bool:
    """Whether two ``sendto`` values address the same recipients, in the same order."""
    left, right = recipients(a), recipients(b)
    if not left or len(left) != len(right):
        return False
    return all(numbers_agree(x, y) for x, y in zip(left, right, strict=True))


def phone_key(sendto: str) -> str:
    """A bucket key every agreeing ``sendto`` shares: the last digits of each number."""
    return ",".join(n[-MIN_SUFFIX_DIGITS:] for n in recipients(sendto))


def normalise_body(body: str) -> str:
    """``body`` with ``\\r\\n`` / ``\\r`` made ``\\n`` and surrounding white space dropped."""
    return body.replace("\r\n", "\n").replace("\r", "\n").strip()


def customer_key(customerid: int | None) -> int | None:
    """``None`` for "no customer id" (the gateway writes null or 0)."""
    return customerid or None


def created_ts(record: GatewayRecord) -> float | None:
    """The record's ``created`` as epoch seconds, or None when it has none."""
    created = record.created
    timestamp = getattr(created, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def is_same(message: Submitted, record: GatewayRecord, window: float) -> bool:
    """Whether ``record`` may be ``message`` (every rule of the module docstring)."""
    created = created_ts(record)
    return (
        created is not None
        and abs(created - message.submitted) <= window
        and customer_key(message.customerid) == customer_key(record.customerid)
        and (message.sim is None or record.sim is None or message.sim == record.sim)
        and normalise_body(message.body) == normalise_body(record.body)
        and phones_agree(message.sendto, record.sendto)
    )


Bucket = tuple[str, str, int | None]


def bucket(sendto: str, body: str, customerid: int | None) -> Bucket:
    """The key identical messages share (recipient, body, customer id): only messages and
    records of one bucket can match, and two messages of one bucket are twins."""
    return phone_key(sendto), normalise_body(body), customer_key(customerid)


def _record_order(record: GatewayRecord) -> tuple[float, int]:
    return created_ts(record) or 0.0, record.id


def match(
    messages: Iterable[Submitted],
    records: Iterable[R],
    *,
    window: float,
    taken: Collection[int] = (),
) -> dict[str, R]:
    """Message id → the gateway record that is that message, for every message found.

    One to one, oldest message to oldest record; records whose id is in ``taken`` are
    skipped. Messages are bucketed by recipient, body and customer id, so the work grows
    with the input, not with its square.
    """
    buckets: dict[Bucket, list[R]] = defaultdict(list)
    for record in records:
        if record.id not in taken and created_ts(record) is not None:
            buckets[bucket(record.sendto, record.body, record.customerid)].append(record)
    for candidates in buckets.values():
        candidates.sort(key=_record_order)
    found: dict[str, R] = {}
    used: set[int] = set()
    for message in sorted(messages, key=lambda m: (m.submitted, m.id)):
        candidates = buckets.get(bucket(message.sendto, message.body, message.customerid), [])
        chosen = _first_free(candidates, message, window, used)
        if chosen is not None:
            used.add(chosen.id)
            found[message.id] = chosen
    return found


def _first_free(
    candidates: Sequence[R], message: Submitted, window: float, used: set[int]
) -> R | None:
    """The oldest of ``candidates`` (sorted by created) that is ``message`` and not used."""
    start = bisect_left(candidates, message.submitted - window, key=lambda r: created_ts(r) or 0.0)
    for record in candidates[start:]:
        created = created_ts(record) or 0.0
        if created > message.submitted + window:
            return None
        if record.id not in used and is_same(message, record, window):
            return record
    return None


def windows_for(times: Iterable[float], margin: float) -> list[tuple[float, float]]:
    """The time windows covering ``margin`` seconds around each of ``times``, merged."""
    windows: list[tuple[float, float]] = []
    for t in sorted(times):
        if windows and t - margin <= windows[-1][1]:
            windows[-1] = (windows[-1][0], t + margin)
        else:
            windows.append((t - margin, t + margin))
    return windows


class StatusRecord(GatewayRecord, Protocol):
    """A gateway record with its status (``relay.gateway.models.SmsRecord`` has it)."""

    @property
    def status(self) -> int: ...

    @property
    def statustitle(self) -> str | None: ...


@dataclass(frozen=True)
class Observation:
    """What the gateway says of one message: its ``sms_id``, status code and title."""

    sms_id: int
    status: int
    title: str

    @classmethod
    def of(cls, record: StatusRecord) -> Observation:
        return cls(
            record.id, record.status, record.statustitle or STATUS_TITLES.get(record.status, "")
        )
