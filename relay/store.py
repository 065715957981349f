"""Message records and the one way their state changes (``lua/transition.lua``).

A record is a small hash at ``Keys.msg(id)`` with the gateway's field names:
``sendto``, ``body``, ``device_id``, ``sim``, ``urgent`` (0/1), ``customerid``, ``timetosend``
(ms), ``key``; relay's own: ``state``, ``final`` (0/1), ``t_<state>`` (ms of each step),
``sms_id``, ``status``, ``statustitle``, ``error``, ``attempts``, ``batch``; ``dropin_id`` (the
integer id the ``/getdata/`` front answered for it, if it came that way). Empty fields are
not stored. Times are integer milliseconds since the epoch inside Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from relay import scripts
from relay.clock import SYSTEM_CLOCK, Clock
from relay.keys import Keys
from relay.states import FINAL_STATES, State

ANY_OPEN = "*"


def to_ms(seconds: float) -> int:
    return round(seconds * 1000)


def from_ms(ms: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Message:
    """A message record as read from Redis."""

    id: str
    sendto: str
    body: str
    device_id: int
    sim: int
    urgent: bool
    state: State
    final: bool
    customerid: int | None = None
    timetosend: datetime | None = None
    key: str | None = None
    sms_id: int | None = None
    status: int | None = None
    statustitle: str | None = None
    error: str | None = None
    attempts: int = 0
    times: dict[str, datetime] = field(default_factory=dict)
    dropin_id: int | None = None

    @classmethod
    def from_hash(cls, msg_id: str, raw: Mapping[bytes | str, bytes | str]) -> Message:
        h = {_s(k): _s(v) for k, v in raw.items()}

        def opt_int(name: str) -> int | None:
            value = h.get(name)
            return int(value) if value not in (None, "") else None

        times = {k[2:]: from_ms(v) for k, v in h.items() if k and k.startswith("t_") and v}
        tts = opt_int("timetosend")
        return cls(
            id=msg_id,
            sendto=h.get("sendto") or "",
            body=h.get("body") or "",
            device_id=int(h.get("device_id") or 0),
            sim=int(h.get("sim") or 0),
            urgent=h.get("urgent") == "1",
            state=State(h.get("state") or State.QUEUED),
            final=h.get("final") == "1" or h.get("state") in FINAL_STATES,
            customerid=opt_int("customerid"),
            timetosend=from_ms(tts) if tts is not None else None,
            key=h.get("key") or None,
            sms_id=opt_int("sms_id"),
            status=opt_int("status"),
            statustitle=h.get("statustitle") or None,
            error=h.get("error") or None,
            attempts=opt_int("attempts") or 0,
            times=times,
            dropin_id=opt_int("dropin_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        return {
            "id": self.id,
            "dropin_id": self.dropin_id,
            "state": self.state.value,
            "final": self.final,
            "sendto": self.sendto,
            "body": self.body,
            "device_id": self.device_id,
            "sim": self.sim,
            "urgent": self.urgent,
            "customerid": self.customerid,
            "timetosend": self.timetosend.isoformat() if self.timetosend else None,
            "key": self.key,
            "sms_id": self.sms_id,
            "status": self.status,
            "statustitle": self.statustitle,
            "error": self.error,
            "attempts": self.attempts,
            "times": {
                k: v.isoformat() for k, v in sorted(self.times.items(), key=lambda kv: kv[1])
            },
        }


class Store:
    """Reads message records and changes their state atomically, recording each change once."""

    def __init__(
        self,
        conn: redis.Redis,
        keys: Keys,
        *,
        clock: Clock = SYSTEM_CLOCK,
        events_maxlen: int = 1_000_000,
        record_ttl: int = 604800,
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.clock = clock
        self.events_maxlen = events_maxlen
        self.record_ttl = record_ttl

    def now_ms(self) -> int:
        return to_ms(self.clock.now())

    def get(self, msg_id: str) -> Message | None:
        raw = self.conn.hgetall(self.keys.msg(msg_id))
        return Message.from_hash(msg_id, raw) if raw else None

    def get_many(self, ids: Sequence[str]) -> list[Message | None]:
        pipe = self.conn.pipeline(transaction=False)
        for msg_id in ids:
            pipe.hgetall(self.keys.msg(msg_id))
        return [
            Message.from_hash(i, raw) if raw else None
            for i, raw in zip(ids, pipe.execute(), strict=True)
        ]

    def transition(
        self,
        ids: Sequence[str],
        to: State,
        allowed: Iterable[State] | str,
        *,
        fields: Mapping[str, Any] | None = None,
        per_message: Sequence[Mapping[str, Any]] | None = None,
        add_index: str = "",
        rem_index: str = "",
        final: bool | None = None,
        client: redis.Redis | redis.client.Pipeline | None = None,
    ) -> list[str]:
        """Move ``ids`` whose state is in ``allowed`` (``"*"``: any non-final one) to ``to``.

        Each change sets ``t_<to>``, ``fields`` and the message's ``per_message`` entry,
        moves the state counts and adds one event to the stream, atomically. ``add_index``
        / ``rem_index`` name sorted sets each changed id joins (score now) or leaves.
        Returns the ids that changed (with a pipeline ``client``: queues it, returns []).
        """
        if not ids:
            return []
        allowed_arg = allowed if isinstance(allowed, str) else ",".join(s.value for s in allowed)
        is_final = (to in FINAL_STATES) if final is None else final
        if per_message is not None and len(per_message) != len(ids):
            raise ValueError("per_message must have one entry per id")
        now = self.now_ms()
        args: list[Any] = [
            to.value,
            allowed_arg,
            now,
            1 if is_final else 0,
            self.events_maxlen,
            self.record_ttl,
            json.dumps(dict(fields or {})),
            json.dumps([dict(m) for m in per_message]) if per_message is not None else "",
            *ids,
        ]
        # "no index" is the events key again, never "": ACL key patterns must allow every key
        none = self.keys.events
        keys = [self.keys.counts, none, add_index or none, rem_index or none]
        keys += [self.keys.msg(i) for i in ids]
        keys.append(self.keys.history(now // 60_000))  # the minute's counts (/v1/history)
        target = client if client is not None else self.conn
        result = scripts.run(target, "transition", keys, args)
        if client is not None and client is not self.conn:
            return []
        return [i for i, changed in zip(ids, result, strict=True) if changed]
