"""A stored message, its status history, and the ledger entry tests read back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from relay.simulator.outcomes import NEW, SENT, recipients


@dataclass(frozen=True)
class RequestInfo:
    """The request that stored a message: endpoint, its fields without secrets, any fault."""

    request_id: int
    endpoint: str
    fields: Mapping[str, Any]
    fault: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """What the simulator stored for one message, and every status it went through.

    ``history`` holds ``(code, time)`` pairs up to the moment the entry was read;
    ``request`` is the request that stored it (``fields`` never contain the token,
    email or password; for ``addalotofsms`` they are the message's ``smsdata`` item).
    """

    sms_id: int
    request: RequestInfo
    stored_at: float
    device_id: int
    sim: int
    sendto: str
    body: str
    customerid: int | None
    urgent: int | None
    timetosend: float | None
    history: tuple[tuple[int, float], ...]

    @property
    def status(self) -> int:
        """The last status reached."""
        return self.history[-1][0]

    def time_of(self, code: int) -> float | None:
        """When the message reached ``code``, or None if it has not."""
        return next((t for c, t in self.history if c == code), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``/_sim/ledger``)."""
        data = asdict(self)
        data["request"]["fields"] = dict(self.request.fields)
        data["history"] = [list(pair) for pair in self.history]
        data["status"] = self.status
        return data


@dataclass
class Message:
    """One message stored on the simulated gateway.

    ``history`` is append-only; entries may lie in the future (a delivery report due
    ``report_delay`` after the send), so every read asks for the state *at* a moment.
    """

    sms_id: int
    device_id: int
    sim: int
    sendto: str
    body: str
    customerid: int | None
    urgent: int | None
    timetosend: float | None
    created: float
    request: RequestInfo
    history: list[tuple[int, float]] = field(default_factory=list)
    _numbers: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.history:
            self.history.append((NEW, self.created))

    @property
    def numbers(self) -> tuple[str, ...]:
        """The normalised recipients (digits only), computed on first use."""
        if self._numbers is None:
            self._numbers = recipients(self.sendto)
        return self._numbers

    @property
    def due(self) -> float:
        """The first moment a poll may take it: stored, and its ``timetosend`` reached."""
        if self.timetosend is None:
            return self.created
        return max(self.created, self.timetosend)

    def history_at(self, now: float) -> tuple[tuple[int, float], ...]:
        """The status changes that happened by ``now``."""
        return tuple(pair for pair in self.history if pair[1] <= now)

    def status_at(self, now: float) -> int:
        """The status code at ``now``."""
        for code, at in reversed(self.history):
            if at <= now:
                return code
        return NEW

    def senttime_at(self, now: float) -> float | None:
        """When the phone sent it, if it had by ``now`` (None for a "not sent" failure)."""
        return next((t for c, t in self.history if c == SENT and t <= now), None)

    def ledger_entry(self, now: float) -> LedgerEntry:
        """A snapshot for the ledger, history up to ``now``."""
        return LedgerEntry(
            sms_id=self.sms_id,
            request=self.request,
            stored_at=self.created,
            device_id=self.device_id,
            sim=self.sim,
            sendto=self.sendto,
            body=self.body,
            customerid=self.customerid,
            urgent=self.urgent,
            timetosend=self.timetosend,
            history=self.history_at(now),
        )
