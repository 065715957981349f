"""``getallsms``: its filters, its ordering and cap, and the records it answers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from relay.simulator.dates import date_object
from relay.simulator.messages import Message
from relay.simulator.outcomes import STATUS_TITLES, normalise_phone


@dataclass(frozen=True)
class SmsQuery:
    """The filters of one ``getallsms`` request, already parsed.

    ``begin``/``end`` are epoch seconds compared with ``created`` to the second (as the
    answer shows it), both ends included; ``phone`` is normalised to digits and matches
    any recipient of a ``sendto``; ``tz`` is the zone the answer's dates are shown in.
    """

    tz: ZoneInfo
    device_id: int | None = None
    sim: int | None = None
    status: int | None = None
    customerid: int | None = None
    phone: str | None = None
    begin: float | None = None
    end: float | None = None
    desc: bool = False
    onlycount: bool = False

    def matches(self, message: Message, now: float) -> bool:
        """Whether ``message`` passes every filter given (status taken at ``now``)."""
        created = message.created // 1
        checks = (
            self.device_id is None or message.device_id == self.device_id,
            self.sim is None or message.sim == self.sim,
            self.customerid is None or message.customerid == self.customerid,
            self.begin is None or created >= self.begin,
            self.end is None or created <= self.end,
            self.phone is None or normalise_phone(self.phone) in message.numbers,
            self.status is None or message.status_at(now) == self.status,
        )
        return all(checks)

    def select(self, messages: Iterable[Message], now: float) -> list[Message]:
        """The matching messages ordered by id (descending when ``desc``)."""
        found = [m for m in messages if self.matches(m, now)]
        found.sort(key=lambda m: m.sms_id, reverse=self.desc)
        return found


def sms_record(message: Message, now: float, tz: ZoneInfo) -> dict[str, Any]:
    """One record of ``getallsms.smss``, as the gateway shows it at ``now``."""
    status = message.status_at(now)
    return {
        "id": message.sms_id,
        "sendto": message.sendto,
        "body": message.body,
        "customerid": message.customerid,
        "status": status,
        "statustitle": STATUS_TITLES.get(status, "unknown"),
        "deviceid": message.device_id,
        "urgent": message.urgent,
        "created": date_object(message.created, tz),
        "senttime": date_object(message.senttime_at(now), tz),
        "timetosend": date_object(message.timetosend, tz),
        "sim": message.sim,
        "paketid": None,
        "pakettitle": None,
        "paketbody": None,
    }


def getallsms_answer(
    query: SmsQuery, messages: Iterable[Message], now: float, max_records: int | None
) -> dict[str, Any]:
    """The whole answer: the true ``count``, at most ``max_records`` records.

    ``smss`` is ``[]`` when it holds nothing, as PHP's ``json_encode`` of an empty array
    gives (the real service is PHP); clients must accept an empty list or object.
    """
    found = query.select(messages, now)
    shown = [] if query.onlycount else found[:max_records]
    smss: dict[str, Any] | list[Any] = {
        str(m.sms_id): sms_record(m, now, query.tz) for m in shown
    } or []
    return {"error": 0, "smss": smss, "count": len(found), "message": "Ok"}
