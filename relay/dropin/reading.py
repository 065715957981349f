"""The drop-in's reading endpoints, answered from relay's own records and device sync.

- ``getsmsstatus``: the record behind an integer id, as the gateway's code and words.
- ``getallsms``: the drop-in messages (those with an integer id) in relay's index, with
  every filter of the gateway: ``device_id``, ``status`` (the code ``getsmsstatus`` would
  answer), ``begindate``/``enddate`` (creation time, both ends included, a bare ``enddate``
  takes its whole day), ``sim``, ``customerid``, ``phone`` (same number however written),
  ``onlycount``, ``orderbydesc`` (creation time) and ``timezone`` (of the request's dates and
  the answer's; default ``RELAY_DROPIN_TIMEZONE``). ``count`` is every match; ``smss`` holds
  at most :data:`GETALLSMS_MAX` of them (ask narrower windows for more, as at the gateway).
- ``getalldevices`` / ``getdevicestatus``: the devices as relay's last ``getalldevices`` sync
  stored them (``relay/devices.py``; workers refresh it every ``RELAY_DEVICE_REFRESH``).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from relay.context import Context
from relay.devices import refresh_if_stale
from relay.dropin.answers import Answer, device_record, device_status, sms_record, sms_status
from relay.dropin.dates import parse_wall, zone
from relay.dropin.ids import DropinIds, Entry
from relay.dropin.params import Params
from relay.dropin.statuses import gateway_status
from relay.errors import DropinRefused, ValidationError
from relay.produce.validation import to_e164
from relay.store import Message

#: Most records one getallsms answer holds (``count`` still counts every match).
GETALLSMS_MAX = 1000
#: Records read per round trip while filtering.
READ_PAGE = 500
_NON_DIGITS = re.compile(r"\D+")


@dataclass(frozen=True)
class SmsFilter:
    """The record filters of one ``getallsms`` request (None: not given)."""

    status: int | None = None
    sim: int | None = None
    customerid: int | None = None
    phones: frozenset[str] | None = None

    def matches(self, msg: Message) -> bool:
        return (
            (self.sim is None or msg.sim == self.sim)
            and (self.customerid is None or msg.customerid == self.customerid)
            and (self.phones is None or _digits(msg.sendto) in self.phones)
            and (self.status is None or gateway_status(msg)[0] == self.status)
        )


def _digits(number: str) -> str:
    return _NON_DIGITS.sub("", number)


class Reader:
    """The reading endpoints on one :class:`Context`."""

    def __init__(self, ctx: Context, ids: DropinIds, tz: ZoneInfo) -> None:
        self.ctx = ctx
        self.ids = ids
        self.tz = tz

    def getsmsstatus(self, params: Params) -> Answer:
        number = params.integer("sms_id", required=True)
        assert number is not None
        msg_id = self.ids.lookup(number)
        msg = self.ctx.store.get(msg_id) if msg_id is not None else None
        if msg is None:
            raise DropinRefused(f"Sms {number} not found")
        return sms_status(number, msg)

    def getallsms(self, params: Params) -> Answer:
        tz = self._zone(params)
        begin = self._when(params, "begindate", tz, end_of_day=False)
        end = self._when(params, "enddate", tz, end_of_day=True)
        dev = params.integer("device_id")
        match = SmsFilter(
            status=params.integer("status"),
            sim=params.integer("sim"),
            customerid=params.integer("customerid"),
            phones=self._phones(params.text("phone")),
        )
        desc = params.flag("orderbydesc")
        devices = [dev] if dev is not None else self.ids.devices()
        streams = [self.ids.entries(d, begin, end, desc) for d in devices]
        entries = heapq.merge(*streams, key=lambda e: e.created_ms, reverse=desc)
        count, shown = 0, dict[str, Any]()
        limit = 0 if params.flag("onlycount") else GETALLSMS_MAX
        for entry, msg in self._records(entries):
            if not match.matches(msg):
                continue
            count += 1
            if len(shown) < limit:
                shown[str(entry.number)] = sms_record(entry.number, msg, tz)
        smss: dict[str, Any] | list[Any] = shown or []  # PHP's json_encode of an empty array
        # "sms" beside "smss": the gateway's npm package reads that name
        return {"error": 0, "smss": smss, "count": count, "message": "Ok", "sms": smss}

    def getalldevices(self, params: Params) -> Answer:
        stored = self._devices()
        device = {str(d["id"]): device_record(d, self.tz) for d in stored}
        return {"count": len(device), "device": device or []}

    def getdevicestatus(self, params: Params) -> Answer:
        dev = params.integer("device_id", required=True)
        for stored in self._devices():
            if stored.get("id") == dev:
                return device_status(stored, self.ctx.now_ms(), self.tz)
        raise DropinRefused(f"Device {dev} not found")

    # --- helpers -------------------------------------------------------------------------

    def _zone(self, params: Params) -> ZoneInfo:
        name = params.text("timezone")
        if not name:
            return self.tz
        try:
            return zone(name)
        except ValueError:
            raise DropinRefused(f"Field 'timezone': unknown time zone {name!r}") from None

    @staticmethod
    def _when(params: Params, name: str, tz: ZoneInfo, *, end_of_day: bool) -> int | None:
        text = params.text(name)
        if not text:
            return None
        moment = parse_wall(text, tz, end_of_day=end_of_day)
        if moment is None:
            raise DropinRefused(f"Field '{name}' must be YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")
        return round(moment.timestamp() * 1000) + (999 if end_of_day else 0)

    def _phones(self, phone: str) -> frozenset[str] | None:
        """The digit strings a ``phone`` filter matches: as written, and in E.164 when
        ``RELAY_DEFAULT_REGION`` reads a national number."""
        if not phone:
            return None
        forms = {_digits(phone)}
        region = self.ctx.settings.default_region
        if region is not None:
            with contextlib.suppress(ValidationError):
                forms.add(_digits(to_e164(phone, region)))
        return frozenset(forms)

    def _records(self, entries: Iterable[Entry]) -> Iterator[tuple[Entry, Message]]:
        """Each entry with its record, read a page per round trip (expired records skipped)."""
        page: list[Entry] = []
        for entry in entries:
            page.append(entry)
            if len(page) == READ_PAGE:
                yield from self._read(page)
                page = []
        if page:
            yield from self._read(page)

    def _read(self, page: list[Entry]) -> Iterator[tuple[Entry, Message]]:
        for entry, msg in zip(page, self.ctx.store.get_many([e.msg_id for e in page]), strict=True):
            if msg is not None:
                yield entry, msg

    def _devices(self) -> list[dict[str, Any]]:
        """The devices of relay's last sync (one sync first if none ever happened)."""
        conn, keys = self.ctx.conn, self.ctx.keys
        if conn.get(keys.devices_synced) is None:
            refresh_if_stale(self.ctx)
        devices = []
        for raw in conn.hvals(keys.devices):
            data = json.loads(raw)
            if isinstance(data, dict) and isinstance(data.get("id"), int):
                devices.append(data)
        return sorted(devices, key=lambda d: int(d["id"]))
