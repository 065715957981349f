"""Message records: reading them, and the one way their state changes (``lua/transition.lua``).

A record is a small hash at ``Keys.msg(id)`` with the gateway's field names:
``sendto``, ``body`` (in chunks: ``body``, ``body1``, ``body2``, ... of at most
:data:`BODY_CHUNK` bytes), ``device_id``, ``sim``, ``urgent`` (1), ``customerid``,
``timetosend`` (ms), ``key``; relay's own: ``state``, ``final`` (1), ``t_<state>`` (ms of
each step; ``t_queued`` the first queueing), ``t_requeued`` (ms of the last return to a
lane), ``sms_id``, ``status``, ``statustitle``, ``error``, ``attempts``, ``batch``,
``checked`` (ms of the last ``getsmsstatus``), ``dropin_id`` (the integer id the
``/getdata/`` front answered for it, if it came that way), ``exp`` (ms: the deadline of its
``ttl``; not submitted by then, it ends ``expired``; absent without a ttl).

Nothing is stored that is empty or derivable: ``sim`` 0, ``urgent`` 0, ``final`` 0,
``attempts`` 0 and the creation time (``t_queued`` or ``t_scheduled``: the id's own time,
:func:`relay.ids.id_time_ms`) are what a reader assumes when the field is missing. So a
queued message's hash stays a listpack — Redis's compact encoding, kept while every value is
at most ``hash-max-listpack-value`` (64) bytes — and costs about a fifth of a hash table.
Records written by relay 0.1 (the body in one field, every field written) read the same.
Times are integer milliseconds since the epoch inside Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from relay import scripts
from relay.clock import SYSTEM_CLOCK, Clock, from_ms
from relay.connection import text
from relay.ids import ID_LENGTH, id_time_ms
from relay.keys import Keys
from relay.lanes import LaneKind, kind_of
from relay.states import ALLOWED_FROM, FINAL_STATES, State

BODY_CHUNK = 64
"""Most bytes of the body in one field: Redis's default ``hash-max-listpack-value``."""
AGAIN_FIELD = {State.QUEUED: ("t_requeued", State.SCHEDULED)}
"""A state whose time field differs on a return: (that field, the one state the first move
comes from). ``queued`` is first reached from ``scheduled`` (or at creation); any other move
to it is a return to the lane."""
DEADLINE_FIELD = "exp"
"""The record field holding a message's ttl deadline (ms), when it has one."""
READ_CHUNK = 1000
"""Records read per script call (``lua/hashes.lua``, ``lua/records.lua``): Redis is never
held long by one call, and all the calls of one read go in one round trip."""


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
    expires: datetime | None = None

    @classmethod
    def from_hash(cls, msg_id: str, raw: Mapping[Any, Any]) -> Message:
        h = {text(k): text(v) for k, v in raw.items()}

        def opt_int(name: str) -> int | None:
            value = h.get(name)
            return int(value) if value not in (None, "") else None

        times = {k[2:]: from_ms(v) for k, v in h.items() if k and k.startswith("t_") and v}
        tts = opt_int("timetosend")
        born = created_ms(msg_id, h)
        if born is not None:
            times.setdefault(creation_state(h).value, from_ms(born))
        return cls(
            id=msg_id,
            sendto=h.get("sendto") or "",
            body=joined_body(h),
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
            expires=from_ms(deadline) if (deadline := opt_int(DEADLINE_FIELD)) else None,
        )

    @property
    def kind(self) -> LaneKind:
        """The kind of lane it waits on (or waited on): urgent or bulk."""
        return kind_of(self.urgent)

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
            "expires": self.expires.isoformat() if self.expires else None,
            "times": {
                k: v.isoformat() for k, v in sorted(self.times.items(), key=lambda kv: kv[1])
            },
        }


def joined_body(record: Mapping[str, str]) -> str:
    """The body of a record: its chunks ``body``, ``body1``, ... joined (one field in 0.1)."""
    parts = [record.get("body") or ""]
    n = 1
    while (part := record.get(f"body{n}")) is not None:
        parts.append(part)
        n += 1
    return "".join(parts)


def creation_state(record: Mapping[str, str]) -> State:
    """The state a message was created in: ``scheduled`` when it had a ``timetosend``."""
    return State.SCHEDULED if record.get("timetosend") else State.QUEUED


def created_ms(msg_id: str, record: Mapping[str, str]) -> int | None:
    """When the message was created (ms): its creation time field when written (0.1), else
    the time in its id; None for an id relay did not make."""
    written = record.get(f"t_{creation_state(record).value}")
    if written:
        return int(written)
    try:
        return id_time_ms(msg_id) if len(msg_id) == ID_LENGTH else None
    except ValueError:
        return None


def waiting_since_ms(msg_id: str, record: Mapping[str, str]) -> int:
    """When the message last started waiting in relay: its last return to a lane, else its
    first queueing, else its creation (0 when none is known)."""
    for name in ("t_requeued", "t_queued"):
        if record.get(name):
            return int(record[name])
    return created_ms(msg_id, record) or 0


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

    def get(self, msg_id: str) -> Message | None:
        raw = self.conn.hgetall(self.keys.msg(msg_id))
        return Message.from_hash(msg_id, raw) if raw else None

    def get_many(self, ids: Sequence[str]) -> list[Message | None]:
        """The records of ``ids`` (None where gone), in one round trip."""
        rows = read_records(self.conn, self.keys, ids)
        return [
            Message.from_hash(i, raw) if raw else None for i, raw in zip(ids, rows, strict=True)
        ]

    def transition(
        self,
        ids: Sequence[str],
        to: State,
        allowed: Iterable[State] | None = None,
        *,
        fields: Mapping[str, Any] | None = None,
        per_message: Sequence[Mapping[str, Any]] | None = None,
        add_index: str = "",
        rem_index: str = "",
        final: bool | None = None,
        open_only: bool = False,
        due_only: bool = False,
    ) -> list[str]:
        """Move ``ids`` whose state is in ``allowed`` to ``to``; returns the ids that changed.

        ``allowed`` defaults to every state :data:`relay.states.ALLOWED_FROM` allows, and
        must be a part of them; with ``open_only`` a record already marked final is left
        alone. Each change sets ``t_<to>`` (a return to ``queued`` keeps the first
        ``t_queued`` and sets ``t_requeued``), ``fields`` and the message's ``per_message``
        entry, moves the state counts and adds one event to the stream, atomically.
        ``add_index`` / ``rem_index`` name sorted sets each changed id joins (score now)
        or leaves. With ``due_only`` only messages on ``Keys.deadlines`` whose ttl deadline
        has passed move, and they leave it (``rem_index``).
        """
        if not ids:
            return []
        keys, args = self._transition_call(
            ids, to, allowed, fields, per_message, add_index, rem_index, final, open_only, due_only
        )
        return changed_ids(ids, scripts.call(self.conn, "transition", keys, args))

    def queue_transition(
        self,
        pipe: redis.client.Pipeline,
        ids: Sequence[str],
        to: State,
        allowed: Iterable[State] | None = None,
        *,
        fields: Mapping[str, Any] | None = None,
        per_message: Sequence[Mapping[str, Any]] | None = None,
        add_index: str = "",
        rem_index: str = "",
        final: bool | None = None,
        due_only: bool = False,
    ) -> scripts.Pending[list[str]]:
        """:meth:`transition` queued on ``pipe`` (a MULTI with other changes)."""
        keys, args = self._transition_call(
            ids, to, allowed, fields, per_message, add_index, rem_index, final, False, due_only
        )
        ids = list(ids)
        if not ids:  # nothing to queue: an empty answer
            return scripts.Pending(None, lambda _: [])
        return scripts.queue(pipe, "transition", keys, args, lambda a: changed_ids(ids, a))

    def _transition_call(
        self,
        ids: Sequence[str],
        to: State,
        allowed: Iterable[State] | None,
        fields: Mapping[str, Any] | None,
        per_message: Sequence[Mapping[str, Any]] | None,
        add_index: str,
        rem_index: str,
        final: bool | None,
        open_only: bool,
        due_only: bool = False,
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of ``lua/transition.lua`` (layout in its header)."""
        permitted = ALLOWED_FROM[to]
        states = permitted if allowed is None else frozenset(allowed)
        if not states <= permitted:
            wrong = ", ".join(sorted(s.value for s in states - permitted))
            raise ValueError(f"no message may move from {wrong} to {to.value}")
        if per_message is not None and len(per_message) != len(ids):
            raise ValueError("per_message must have one entry per id")
        is_final = (to in FINAL_STATES) if final is None else final
        now = self.clock.now_ms()
        args: list[Any] = [
            to.value,
            ",".join(sorted(s.value for s in states)),
            now,
            1 if is_final else 0,
            self.events_maxlen,
            self.record_ttl,
            json.dumps(dict(fields or {})),
            json.dumps([dict(m) for m in per_message]) if per_message is not None else "",
            1 if open_only else 0,
            *again_args(to),
            DEADLINE_FIELD if due_only else "",
            *ids,
        ]
        if due_only:
            rem_index = self.keys.deadlines
        # "no index" is the events key again, never "": ACL key patterns must allow every key
        none = self.keys.events
        keys = [self.keys.counts, none, add_index or none, rem_index or none]
        keys += [self.keys.msg(i) for i in ids]
        keys.append(self.keys.history(now // 60_000))  # the minute's counts (/v1/history)
        return keys, args


def again_args(to: State) -> tuple[str, str]:
    """ARGV[10] and ARGV[11] of ``lua/transition.lua`` for a move to ``to``."""
    field, first_from = AGAIN_FIELD.get(to, ("", None))
    return field, first_from.value if first_from is not None else ""


def changed_ids(ids: Sequence[str], answer: Sequence[Any]) -> list[str]:
    """The ids a ``transition`` call changed, from its answer (one 0/1 per id)."""
    return [i for i, changed in zip(ids, answer, strict=True) if int(changed)]


def read_records(conn: redis.Redis, keys: Keys, ids: Sequence[str]) -> list[dict[str, str]]:
    """The whole records of ``ids`` as dicts (``{}`` when gone), in one round trip
    (``lua/hashes.lua``: one JSON reply per chunk instead of an HGETALL answer per id)."""
    return _read(conn, keys, ids, "hashes", [])


def read_fields(
    conn: redis.Redis, keys: Keys, ids: Sequence[str], fields: Sequence[str]
) -> list[list[str | None]]:
    """``fields`` of each record of ``ids`` (None when missing), in one round trip
    (``lua/records.lua``)."""
    return _read(conn, keys, ids, "records", fields)


def queue_read_fields(
    pipe: redis.client.Pipeline, keys: Keys, ids: Sequence[str], fields: Sequence[str]
) -> scripts.Pending[list[list[str | None]]]:
    """:func:`read_fields` queued on ``pipe`` (one call for all ``ids``: keep them few)."""
    if not ids:
        return scripts.Pending(None, lambda _: [])
    names = [keys.msg(i) for i in ids]
    return scripts.queue(pipe, "records", names, list(fields), json.loads)


def _read(
    conn: redis.Redis, keys: Keys, ids: Sequence[str], script: str, fields: Sequence[str]
) -> list[Any]:
    if not ids:
        return []
    names = [keys.msg(i) for i in ids]
    pipe = conn.pipeline(transaction=False)
    for start in range(0, len(names), READ_CHUNK):
        scripts.queue(pipe, script, names[start : start + READ_CHUNK], list(fields), json.loads)
    return [row for answer in pipe.execute() for row in json.loads(answer)]
