"""What one reconciler pass does with what it learned: the moves of state.

:func:`load_tracked` reads a device's pending messages; :func:`apply_observations` records
new matches and moves messages by status code (6 → ``sent``, 7 → ``delivered``, 8-12/100/101
→ ``failed``); :func:`apply_timeouts` ends ``sent`` once no report came within
``RELAY_DELIVERY_REPORT_WAIT`` and ``expired`` a message with no final code within
``RELAY_STATUS_TTL``; :func:`settle` takes final messages off the pending set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relay import scripts
from relay.clock import to_ms
from relay.context import Context
from relay.reconcile.lookup import record_matches, submitted_of
from relay.reconcile.matching import Observation, Submitted
from relay.states import FINAL_STATES, State, state_for_code
from relay.store import Message, read_fields, read_records


@dataclass
class PassReport:
    """What one pass did."""

    devices: int = 0
    busy: int = 0
    requests: int = 0
    matched: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    settled: int = 0
    stragglers: int = 0
    errors: int = 0

    def count(self, state: str, n: int = 1) -> None:
        if n:
            self.changes[state] = self.changes.get(state, 0) + n


@dataclass(frozen=True)
class Tracked:
    """A pending message as one pass sees it (``message`` None: its record is gone)."""

    id: str
    submitted_ms: int
    message: Message | None
    checked_ms: int = 0

    @property
    def submitted(self) -> float:
        return self.submitted_ms / 1000

    @property
    def done(self) -> bool:
        """Final (or gone): nothing left to follow."""
        return self.message is None or self.message.final

    @property
    def state(self) -> State | None:
        return self.message.state if self.message else None

    @property
    def sms_id(self) -> int | None:
        return self.message.sms_id if self.message else None

    def sent_ms(self) -> int | None:
        sent = self.message.times.get("sent") if self.message else None
        return to_ms(sent.timestamp()) if sent else None

    def as_submitted(self) -> Submitted:
        assert self.message is not None
        return submitted_of(self.message, self.submitted_ms)


def load_tracked(ctx: Context, rows: Sequence[tuple[str, int]]) -> list[Tracked]:
    """The records of pending ``rows`` (id, submitted ms), in one round trip."""
    records = read_records(ctx.conn, ctx.keys, [i for i, _ in rows])
    return [
        Tracked(i, ms, Message.from_hash(i, raw) if raw else None, int(raw.get("checked", 0)))
        for (i, ms), raw in zip(rows, records, strict=True)
    ]


_FROM = {State.SENT: [State.SUBMITTED]}
"""Narrower than ``ALLOWED_FROM`` where it must be: a message seen ``sent`` again is no
change (``sent → sent`` is only the move that makes it final)."""


def apply_observations(
    ctx: Context,
    dev: int,
    live: Sequence[Tracked],
    observed: dict[str, Observation],
    report: PassReport,
) -> dict[str, State]:
    """Record new matches and status codes, then move states; returns id → new state."""
    fresh = [
        (t.id, o)
        for t in live
        if (o := observed.get(t.id))
        and t.message
        and (t.sms_id, t.message.status) != (o.sms_id, o.status)
    ]
    recorded = record_matches(ctx, dev, fresh, [State.SUBMITTED, State.SENT])
    report.matched += sum(1 for t in live if t.id in recorded and t.sms_id is None)
    targets: dict[State, list[tuple[str, Observation]]] = {}
    for t in live:
        obs = observed.get(t.id)
        ours = obs is not None and (t.sms_id == obs.sms_id or t.id in recorded)
        target = state_for_code(obs.status) if obs is not None and ours else None
        if obs is not None and target is not None and t.state != target:
            targets.setdefault(target, []).append((t.id, obs))
    changed: dict[str, State] = {}
    for target, items in targets.items():
        per = [
            {"sms_id": o.sms_id, "status": o.status, "statustitle": o.title}
            | ({"error": o.title} if target == State.FAILED else {})
            for _, o in items
        ]
        ids = ctx.store.transition(
            [i for i, _ in items],
            target,
            _FROM.get(target),
            per_message=per,
            final=target in FINAL_STATES,
        )
        changed.update(dict.fromkeys(ids, target))
        report.count(target.value, len(ids))
    return changed


def apply_timeouts(
    ctx: Context,
    live: Sequence[Tracked],
    changed: dict[str, State],
    now_ms: int,
    report: PassReport,
) -> None:
    """``sent`` → final after the report wait; ``submitted`` → ``expired`` after the TTL."""
    s = ctx.settings
    wait_ms, ttl_ms = int(s.delivery_report_wait * 1000), int(s.status_ttl * 1000)
    finish, expire = [], []
    for t in live:
        state = changed.get(t.id, t.state)
        sent_ms = now_ms if changed.get(t.id) == State.SENT else t.sent_ms()
        too_old = now_ms - t.submitted_ms >= ttl_ms
        if state == State.SENT and (too_old or now_ms - (sent_ms or now_ms) >= wait_ms):
            finish.append(t.id)
        elif state == State.SUBMITTED and too_old:
            expire.append(t.id)
    # only a record not yet marked final: a sent message is made final once and only once
    done = ctx.store.transition(finish, State.SENT, [State.SENT], final=True, open_only=True)
    report.count("sent_final", len(done))
    error = {"error": "no final status within the status TTL"}
    report.count(
        State.EXPIRED.value,
        len(ctx.store.transition(expire, State.EXPIRED, [State.SUBMITTED], fields=error)),
    )


def settle(ctx: Context, dev: int, ids: Sequence[str]) -> int:
    """Final (or gone) messages leave pending; sent urgent ones leave urgent-waiting."""
    if not ids:
        return 0
    leave, sent = [], []
    states = read_fields(ctx.conn, ctx.keys, ids, ["state", "final"])
    for msg_id, (state, final) in zip(ids, states, strict=True):
        if state is None or state in FINAL_STATES or final == "1":
            leave.append(msg_id)
        elif state == "sent":
            sent.append(msg_id)
    return unpend(ctx, dev, leave, sent)


def unpend(ctx: Context, dev: int, leave: Sequence[str], sent: Sequence[str]) -> int:
    """``lua/unpend.lua``: ``leave`` ids go from ``dev``'s pending set and urgent-waiting,
    ``sent`` ones from urgent-waiting; the device leaves pending-devices once none is left.
    Returns how many left pending."""
    keys = [ctx.keys.pending(dev), ctx.keys.pending_devices, ctx.keys.urgent_waiting]
    args: list[scripts.Arg] = [dev, len(leave), *leave, *sent]
    return int(scripts.call(ctx.conn, "unpend", keys, args))
