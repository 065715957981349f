"""Fault injection per endpoint, deterministic by count (``times``) or by seeded ``rate``.

Kinds (what the client sees; whether the request was processed):

- ``http_500`` (any ``http_5xx``): that status with an HTML body; nothing stored unless
  ``store=True``.
- ``slow``: the answer comes after ``delay`` seconds (default 1); processed normally, so
  a client that times out first leaves the messages stored.
- ``drop_before``: the connection closes without an answer; nothing processed.
- ``drop_after``: the request is processed (messages stored) and then the connection
  closes without an answer: the client cannot tell whether it worked.
- ``malformed``: HTTP 200 with a cut-off JSON body; ``malformed_html``: HTTP 200 (or
  ``status``) with an HTML error page. Nothing stored unless ``store=True``.
- ``token_expired``: the current token is invalidated first (``gettoken`` then hands out
  a new one), so this request is refused for its token.
- ``busy``: HTTP 200 ``{"error":1,"message":BUSY}``: refused with words that name nothing
  wrong with the request (a refusal that trying again later may cure); nothing stored.

``delay`` applies before any kind. A rule with neither ``times`` nor ``rate`` fires once.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SIMPLE_KINDS = frozenset(
    {"slow", "drop_before", "drop_after", "malformed", "malformed_html", "token_expired", "busy"}
)
BUSY = "Server is busy, try again later"
"""The words of a ``busy`` refusal."""
_HTTP_KIND = re.compile(r"^http_(5\d\d)$")
ANY_ENDPOINT = "*"


@dataclass(frozen=True)
class Fault:
    """One injected fault, as the HTTP layer applies it."""

    endpoint: str
    kind: str
    delay: float = 0.0
    status: int = 200
    store: bool = False

    @property
    def drops(self) -> bool:
        """The connection closes without an answer."""
        return self.kind in ("drop_before", "drop_after")

    @property
    def processes(self) -> bool:
        """The request is handled (and messages stored) despite the fault."""
        return self.kind in ("slow", "drop_after", "token_expired") or self.store


@dataclass
class FaultRule:
    """A configured fault: which endpoint (``*`` = any), which kind, how often.

    ``times`` counts the next matching requests it still fires on; ``rate`` is a
    probability per matching request drawn from its own seeded generator (``times``
    then caps how often it fires).
    """

    fault: Fault
    times: int | None = None
    rate: float | None = None
    seed: int = 0
    fired: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        f = self.fault
        self._rng = random.Random(f"{self.seed}:{f.endpoint}:{f.kind}")

    def matches(self, endpoint: str) -> bool:
        """Whether this rule applies to ``endpoint``."""
        return self.fault.endpoint in (ANY_ENDPOINT, endpoint)

    @property
    def spent(self) -> bool:
        """No firing left."""
        return self.times is not None and self.fired >= self.times

    def fires(self) -> bool:
        """Decide this request (consumes one draw of the rate generator)."""
        if self.spent:
            return False
        if self.rate is not None and self._rng.random() >= self.rate:
            return False
        self.fired += 1
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``GET /_sim/faults``)."""
        f = self.fault
        return {
            "endpoint": f.endpoint,
            "kind": f.kind,
            "times": self.times,
            "rate": self.rate,
            "delay": f.delay,
            "status": f.status,
            "store": f.store,
            "fired": self.fired,
        }


def make_fault(
    endpoint: str, kind: str, *, delay: float | None, status: int | None, store: bool
) -> Fault:
    """Validate a fault description; ``ValueError`` naming what is wrong."""
    http = _HTTP_KIND.match(kind)
    if not http and kind not in SIMPLE_KINDS:
        choices = ", ".join(sorted(SIMPLE_KINDS))
        raise ValueError(f"unknown fault kind {kind!r}: use http_5xx or one of {choices}")
    if delay is not None and delay < 0:
        raise ValueError("delay must not be negative")
    default_status = int(http.group(1)) if http else 200
    default_delay = 1.0 if kind == "slow" else 0.0
    return Fault(
        endpoint=endpoint,
        kind=kind,
        delay=default_delay if delay is None else delay,
        status=status or default_status,
        store=store,
    )


class FaultInjector:
    """The fault rules of one simulator and the count of faults injected.

    Thread-safe; rules are tried in the order they were added and the first that fires
    wins. Spent rules are dropped.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rules: list[FaultRule] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int | None = None,
        rate: float | None = None,
        delay: float | None = None,
        status: int | None = None,
        store: bool = False,
    ) -> FaultRule:
        """Inject ``kind`` into the next ``times`` requests of ``endpoint`` (``*`` = any),
        or into each with probability ``rate``; once when neither is given."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        fault = make_fault(endpoint, kind, delay=delay, status=status, store=store)
        rule = FaultRule(
            fault, times=1 if times is None and rate is None else times, rate=rate, seed=self.seed
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self, endpoint: str | None = None) -> int:
        """Remove every rule (or those of ``endpoint``); returns how many went."""
        with self._lock:
            keep = [r for r in self._rules if endpoint is not None and r.fault.endpoint != endpoint]
            removed = len(self._rules) - len(keep)
            self._rules = keep
            return removed

    def pick(self, endpoint: str) -> Fault | None:
        """The fault to inject into this request of ``endpoint``, counted; None for none."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(endpoint) and rule.fires():
                    self._counts[f"{endpoint}:{rule.fault.kind}"] += 1
                    self._rules = [r for r in self._rules if not r.spent]
                    return rule.fault
            return None

    def counts(self) -> dict[str, int]:
        """Faults injected so far, keyed ``"<endpoint>:<kind>"``."""
        with self._lock:
            return dict(self._counts)

    def count(self, endpoint: str | None = None, kind: str | None = None) -> int:
        """How many faults were injected, optionally only of one endpoint and/or kind."""
        total = 0
        for key, n in self.counts().items():
            ep, k = key.split(":", 1)
            if endpoint in (None, ep) and kind in (None, k):
                total += n
        return total

    def rules(self) -> list[dict[str, Any]]:
        """The active rules."""
        with self._lock:
            return [r.to_dict() for r in self._rules]
