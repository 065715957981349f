"""Simulated phones: their settings (:class:`SimDevice`) and lazy timelines (:class:`Phone`).

No thread runs a phone. Each :class:`Phone` replays, on demand, what the real one would
have done up to a moment: it polls every ``delaybetweenrequest`` seconds (phase from its
creation or last reconfiguration), takes every New message that is due, and sends from
its local queue one message every ``delaybetweeneachsms`` seconds, urgent ones first,
then in storage order. Messages taken at a later poll still jump ahead of bulk ones
waiting in the local queue when urgent.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from zoneinfo import ZoneInfo

from relay.simulator.dates import date_object, human
from relay.simulator.messages import Message
from relay.simulator.outcomes import TAKEN, OutcomeRule

SLOTS = frozenset(range(6))
"""0 and 1 SMS, 2 WhatsApp Business, 3 WhatsApp Personal, 4 and 5 RCS."""


@dataclass(frozen=True)
class SimDevice:
    """A phone registered on the simulated gateway.

    ``delaybetweeneachsms`` None shows as null in ``getalldevices`` and the phone then
    waits the simulator's ``default_each`` (1 s unless set). ``sims`` lists the slots it
    accepts messages for; ``online=False`` means it never polls. ``created`` (epoch
    seconds) defaults to the moment the simulator learns of the device.
    """

    id: int
    title: str = "Simulated phone"
    delaybetweenrequest: float = 1.0
    delaybetweeneachsms: float | None = None
    sims: tuple[int, ...] = (0, 1)
    online: bool = True
    number: str | None = None
    imei: str | None = None
    appversion: str = "12.1.21"
    subscription: bool = True
    created: float | None = None

    def __post_init__(self) -> None:
        if self.delaybetweenrequest <= 0:
            raise ValueError("delaybetweenrequest must be positive")
        if self.delaybetweeneachsms is not None and self.delaybetweeneachsms < 0:
            raise ValueError("delaybetweeneachsms must not be negative")
        sims = tuple(int(s) for s in self.sims)
        if not sims or not set(sims) <= SLOTS:
            raise ValueError(f"sims must be slots among 0-5, not {self.sims!r}")
        object.__setattr__(self, "sims", sims)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (admin answers)."""
        data = asdict(self)
        data["sims"] = list(self.sims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimDevice:
        """A device from JSON; ``ValueError`` on unknown or invalid fields."""
        return cls(**_device_kwargs(data))

    def updated(self, changes: Mapping[str, Any]) -> SimDevice:
        """A copy with ``changes`` applied (validated like a new device); ``id`` cannot change."""
        kwargs = _device_kwargs(changes)
        if kwargs.get("id", self.id) != self.id:
            raise ValueError("a device's id cannot change; add a new device instead")
        return replace(self, **kwargs)


def _device_kwargs(data: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(SimDevice)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown device fields: {sorted(unknown)}")
    kwargs = dict(data)
    if "sims" in kwargs:
        kwargs["sims"] = tuple(kwargs["sims"])
    return kwargs


class Phone:
    """One device's timeline: pending New messages, the local send queue, the poll phase.

    Callers hold the simulator's lock and call :meth:`advance` up to "now" before
    adding a message or reading a status, so a poll never takes a message stored after it.
    """

    def __init__(self, device: SimDevice, created: float, default_each: float) -> None:
        self.device = device
        self.created = created
        self._default_each = default_each
        self._origin = created
        self._poll_k = 1
        self._offline_since = created
        self._pending: list[Message] = []
        self._first_due = math.inf
        self._queue: list[tuple[int, int, Message]] = []
        self._free_at = created

    @property
    def each(self) -> float:
        """Seconds between two sends of this phone."""
        each = self.device.delaybetweeneachsms
        return self._default_each if each is None else each

    @property
    def backlog(self) -> tuple[int, int]:
        """(messages still New, messages taken but not yet sent)."""
        return len(self._pending), len(self._queue)

    def add(self, message: Message) -> None:
        """Queue a freshly stored message (status New) for the phone's next polls."""
        self._pending.append(message)
        self._first_due = min(self._first_due, message.due)

    def advance(self, now: float, outcome: OutcomeRule) -> None:
        """Replay every poll and send up to ``now`` (a poll first when both fall together)."""
        while True:
            poll_at = self._next_poll()
            send_at = self._free_at if self._queue and self.device.online else math.inf
            if min(poll_at, send_at) > now:
                return
            if poll_at <= send_at:
                self._poll(poll_at)
            else:
                self._send(send_at, outcome)

    def reconfigure(self, device: SimDevice, now: float) -> None:
        """Apply new settings at ``now`` (after :meth:`advance` to ``now``).

        A change of ``delaybetweenrequest`` or coming online restarts the poll phase at
        ``now``; going offline freezes ``lastseen`` at the last poll and stops the phone
        sending what it had already taken (a dead phone sends nothing) until it is back.
        """
        old = self.device
        if old.online and not device.online:
            self._offline_since = self.lastseen(now)
        same_timing = old.delaybetweenrequest == device.delaybetweenrequest
        if device.online and not (same_timing and old.online):
            self._origin = now
            self._poll_k = 1
        if device.online and not old.online:
            self._free_at = max(self._free_at, now)
        self.device = device

    def lastseen(self, now: float) -> float:
        """The phone's last contact: its last poll by ``now`` (or when it went offline)."""
        if not self.device.online:
            return self._offline_since
        polls = math.floor((now - self._origin) / self.device.delaybetweenrequest)
        return self._origin + max(0, polls) * self.device.delaybetweenrequest

    def _next_poll(self) -> float:
        """The first poll that will take something, or inf; skips the idle polls before it."""
        if not self.device.online or not self._pending:
            return math.inf
        period, origin = self.device.delaybetweenrequest, self._origin
        k = max(self._poll_k, math.ceil((self._first_due - origin) / period))
        while origin + k * period < self._first_due:
            k += 1
        while k - 1 >= self._poll_k and origin + (k - 1) * period >= self._first_due:
            k -= 1
        self._poll_k = k
        return origin + k * period

    def _poll(self, at: float) -> None:
        taken = [m for m in self._pending if m.due <= at]
        self._pending = [m for m in self._pending if m.due > at]
        self._first_due = min((m.due for m in self._pending), default=math.inf)
        for message in taken:
            message.history.append((TAKEN, at))
            heapq.heappush(self._queue, (0 if message.urgent else 1, message.sms_id, message))
        self._free_at = max(self._free_at, at)
        self._poll_k += 1

    def _send(self, at: float, outcome: OutcomeRule) -> None:
        _, _, message = heapq.heappop(self._queue)
        message.history.extend(outcome.after_send(message.sms_id, message.sendto, at))
        self._free_at = at + self.each


def _number(value: float | None) -> float | int | None:
    """Whole seconds as an int (``1``, like the real answers), fractions as they are."""
    if value is None or not float(value).is_integer():
        return value
    return int(value)


def _sim_info(device: SimDevice, slot: int) -> dict[str, str]:
    return {
        "Slot": str(slot),
        "IccId": f"8949226{device.id:011d}{slot}",
        "Number": device.number or f"+49157{device.id:07d}{slot}",
        "Roaming": "0",
        "CountryIso": "de",
        "CarrierName": "Simulated carrier",
    }


def device_record(phone: Phone, now: float, tz: ZoneInfo) -> dict[str, Any]:
    """The device as ``getalldevices`` shows it, dates in ``tz``."""
    device, lastseen = phone.device, phone.lastseen(now)
    return {
        "id": device.id,
        "title": device.title,
        "number": device.number,
        "imei": device.imei or f"35824005{device.id:07d}",
        "created": date_object(phone.created, tz),
        "createdhumanformat": human(phone.created, tz),
        "lastseen": date_object(lastseen, tz),
        "lastseenhumanformat": human(lastseen, tz),
        "serialnumber": f"SIMULATED{device.id:06d}",
        "siminfo": [_sim_info(device, slot) for slot in device.sims if slot in (0, 1)],
        "appversion": device.appversion,
        "isappversionactual": True,
        "delaybetweeneachsms": _number(device.delaybetweeneachsms),
        "delaybetweenrequest": _number(device.delaybetweenrequest),
        "subscription": device.subscription,
    }
