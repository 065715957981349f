"""The simulated gateway's state: account, devices, stored messages, tags, newsletters.

One lock guards everything; every operation first brings each phone's lazy timeline up
to the clock's "now", so statuses are always those of that moment and no background
thread is needed. The ledger is read from the same messages.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.clock import SYSTEM_CLOCK, Clock
from relay.simulator.devices import Phone, SimDevice
from relay.simulator.messages import LedgerEntry, Message, RequestInfo
from relay.simulator.outcomes import OutcomeRule


class AuthError(Exception):
    """The token or the login was refused; the text is the gateway's message."""


@dataclass(frozen=True)
class Draft:
    """A validated message not yet stored, with the request fields it came from."""

    device_id: int
    sim: int
    sendto: str
    body: str
    customerid: int | None
    urgent: int | None
    timetosend: float | None
    fields: Mapping[str, Any]


class Account:
    """The one login of the simulated gateway and its current token.

    Expiring the token remembers the old one (so it is told apart from a wrong token)
    and mints a new one, which ``gettoken`` then hands out.
    """

    def __init__(self, email: str, password: str, token: str | None) -> None:
        self.email = email
        self.password = password
        self.token = token or secrets.token_hex(16)
        self._expired: set[str] = set()

    def login(self, email: str, password: str) -> str:
        """The current token for a correct login; :class:`AuthError` otherwise."""
        if email.strip().lower() != self.email.lower() or password != self.password:
            raise AuthError("Login or password incorrect")
        return self.token

    def check(self, token: str) -> None:
        """Accept the current token; :class:`AuthError` for a missing, expired or wrong one."""
        if not token:
            raise AuthError("Token is required")
        if token in self._expired:
            raise AuthError("Token expired, get a new token")
        if not secrets.compare_digest(token, self.token):
            raise AuthError("Wrong token")

    def expire(self) -> str:
        """Invalidate the current token and return its successor."""
        self._expired.add(self.token)
        self.token = secrets.token_hex(16)
        return self.token


class Engine:
    """Devices, messages and the rest of the gateway's state, behind one lock."""

    def __init__(
        self,
        devices: Iterable[SimDevice],
        *,
        account: Account,
        outcome: OutcomeRule,
        clock: Clock = SYSTEM_CLOCK,
        default_each: float = 1.0,
        first_sms_id: int = 62_800_001,
    ) -> None:
        self.account = account
        self.outcome = outcome
        self.clock = clock
        self.default_each = default_each
        self.lock = threading.RLock()
        self.phones: dict[int, Phone] = {}
        self.messages: dict[int, Message] = {}
        self.tags: dict[int, str] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.pakets: dict[int, dict[str, Any]] = {}
        self._next_sms_id = first_sms_id
        self._next_ids = {"request": 1, "tag": 1001, "contact": 566_701, "paket": 9001}
        for device in devices:
            self.put_device(device)

    def now(self) -> float:
        """The clock's time, after replaying every phone up to it."""
        with self.lock:
            now = self.clock.now()
            for phone in self.phones.values():
                phone.advance(now, self.outcome)
            return now

    def next_id(self, kind: str) -> int:
        """The next id of a ``request``, ``tag``, ``contact`` or ``paket``."""
        with self.lock:
            value = self._next_ids[kind]
            self._next_ids[kind] = value + 1
            return value

    # --- devices -----------------------------------------------------------------------

    def put_device(self, device: SimDevice) -> SimDevice:
        """Add ``device`` or, when its id is known, replace its settings from now on."""
        with self.lock:
            now = self.now()
            phone = self.phones.get(device.id)
            if phone is None:
                created = device.created if device.created is not None else now
                self.phones[device.id] = Phone(device, created, self.default_each)
            else:
                phone.reconfigure(device, now)
            return device

    def update_device(self, device_id: int, changes: Mapping[str, Any]) -> SimDevice:
        """Change some settings of a known device; ``KeyError`` when unknown."""
        with self.lock:
            return self.put_device(self.phones[device_id].device.updated(changes))

    def devices(self) -> list[SimDevice]:
        """Every device, in id order."""
        with self.lock:
            return [self.phones[i].device for i in sorted(self.phones)]

    # --- messages ----------------------------------------------------------------------

    def store(self, drafts: list[Draft], *, endpoint: str, fault: str | None = None) -> list[int]:
        """Store ``drafts`` in order under consecutive sms_ids, all from one request."""
        with self.lock:
            now = self.now()
            request_id = self.next_id("request")
            ids = []
            for draft in drafts:
                sms_id = self._next_sms_id
                self._next_sms_id += 1
                request = RequestInfo(request_id, endpoint, draft.fields, fault)
                message = Message(
                    sms_id=sms_id,
                    device_id=draft.device_id,
                    sim=draft.sim,
                    sendto=draft.sendto,
                    body=draft.body,
                    customerid=draft.customerid,
                    urgent=draft.urgent,
                    timetosend=draft.timetosend,
                    created=now,
                    request=request,
                )
                self.messages[sms_id] = message
                self.phones[draft.device_id].add(message)
                ids.append(sms_id)
            return ids

    def ledger(self) -> list[LedgerEntry]:
        """Every stored message with its request and status history, in sms_id order."""
        with self.lock:
            now = self.now()
            return [m.ledger_entry(now) for m in self.messages.values()]

    def status_counts(self) -> dict[int, int]:
        """How many messages are in each status now."""
        with self.lock:
            now = self.now()
            return dict(Counter(m.status_at(now) for m in self.messages.values()))

    def backlog(self) -> dict[int, dict[str, int]]:
        """Per device: messages still New and messages taken but not yet sent."""
        with self.lock:
            self.now()
            return {
                i: dict(zip(("new", "taken"), p.backlog, strict=True))
                for i, p in sorted(self.phones.items())
            }
