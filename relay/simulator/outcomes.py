"""Gateway status codes and the deterministic rule that picks each message's final code.

A simulated message goes New (1) → Taken (2) → Sent (6) → a final code. Which final code
is decided by :class:`OutcomeRule` from the recipient and a seeded hash of the ``sms_id``,
so the same run always gives the same answer, whatever the order of requests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.states import GATEWAY_DESCRIPTIONS

NEW = 1
TAKEN = 2
QUEUED = 3
INCOMING = 5
SENT = 6
DELIVERED = 7
NOT_DELIVERED = 8

NOT_SENT_CODES = frozenset({9, 10, 11, 12, 100, 101})
"""Codes a phone reports instead of 6: the message never left it."""

FAILURE_CODES: tuple[int, ...] = (8, 9, 10, 11, 12, 100, 101)
FINAL_CODES = frozenset({DELIVERED, NOT_DELIVERED, *NOT_SENT_CODES})
ALLOWED_OUTCOMES = frozenset({SENT, *FINAL_CODES})
"""What a rule may answer; 6 means "sent, and no delivery report ever comes"."""

STATUS_TITLES: dict[int, str] = {
    NEW: "new",
    TAKEN: "sending",
    QUEUED: "queued",
    INCOMING: "incoming",
    SENT: "sent",
    DELIVERED: "delivered",
    NOT_DELIVERED: "not delivered",
    9: "not sent",
    10: "not sent: no service",
    11: "not sent: null pdu",
    12: "not sent: radio off",
    100: "not sent: not allowed",
    101: "not sent: not allowed at all",
}
"""``statustitle`` in ``getallsms`` records (lower case, as the public examples show)."""

STATUS_DESCRIPTIONS: dict[int, str] = GATEWAY_DESCRIPTIONS
"""``status_description`` in ``getsmsstatus`` answers."""

_NON_DIGITS = re.compile(r"\D+")


def normalise_phone(value: str) -> str:
    """Digits only: ``+49 157 52982212`` and ``+4915752982212`` both give ``4915752982212``."""
    return _NON_DIGITS.sub("", value)


def recipients(sendto: str) -> tuple[str, ...]:
    """The normalised numbers of a ``sendto`` that may list several, separated by commas."""
    parts = (normalise_phone(part) for part in sendto.split(","))
    return tuple(part for part in parts if part)


def _draw(seed: int, sms_id: int, purpose: str) -> float:
    """A number in [0, 1) fixed by (seed, sms_id, purpose): the same run draws the same."""
    digest = hashlib.blake2b(f"{seed}:{sms_id}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class OutcomeRule:
    """Decides the final code of a message once its phone sends it.

    ``by_recipient`` maps a number (normalised to digits) to a fixed final code and wins
    over everything else; otherwise a message fails with probability ``fail_rate`` (its
    code drawn from ``failure_codes``), or is sent but never reported with probability
    ``no_report_rate`` (stays 6), or is delivered (7). The report (7 or 8) comes
    ``report_delay`` seconds after the send; "not sent" codes replace the 6 at the send.
    """

    by_recipient: Mapping[str, int] = field(default_factory=dict)
    fail_rate: float = 0.0
    no_report_rate: float = 0.0
    seed: int = 0
    report_delay: float = 0.0
    failure_codes: tuple[int, ...] = FAILURE_CODES

    def __post_init__(self) -> None:
        normalised = {normalise_phone(k): int(v) for k, v in self.by_recipient.items()}
        bad = sorted({*normalised.values(), *self.failure_codes} - ALLOWED_OUTCOMES)
        if bad:
            raise ValueError(f"not a final status code: {bad}")
        for name in ("fail_rate", "no_report_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.report_delay < 0:
            raise ValueError("report_delay must not be negative")
        if not self.failure_codes:
            raise ValueError("failure_codes must not be empty")
        object.__setattr__(self, "by_recipient", normalised)

    def final_code(self, sms_id: int, sendto: str) -> int:
        """The code this message ends with (6 = sent, no report ever)."""
        for number in recipients(sendto):
            if number in self.by_recipient:
                return self.by_recipient[number]
        if _draw(self.seed, sms_id, "fail") < self.fail_rate:
            pick = int(_draw(self.seed, sms_id, "code") * len(self.failure_codes))
            return self.failure_codes[pick]
        if _draw(self.seed, sms_id, "report") < self.no_report_rate:
            return SENT
        return DELIVERED

    def after_send(self, sms_id: int, sendto: str, at: float) -> list[tuple[int, float]]:
        """The status changes from the send moment ``at`` on, as (code, time) pairs."""
        final = self.final_code(sms_id, sendto)
        if final in NOT_SENT_CODES:
            return [(final, at)]
        if final == SENT:
            return [(SENT, at)]
        return [(SENT, at), (final, at + self.report_delay)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, the inverse of :meth:`from_dict`."""
        return {
            "by_recipient": dict(self.by_recipient),
            "fail_rate": self.fail_rate,
            "no_report_rate": self.no_report_rate,
            "seed": self.seed,
            "report_delay": self.report_delay,
            "failure_codes": list(self.failure_codes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutcomeRule:
        """Build a rule from JSON (the ``/_sim/outcome`` admin call); unknown keys are refused."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown outcome fields: {sorted(unknown)}")
        kwargs = dict(data)
        if "failure_codes" in kwargs:
            kwargs["failure_codes"] = tuple(int(c) for c in kwargs["failure_codes"])
        return cls(**kwargs)
