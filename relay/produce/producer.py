"""Producing messages: ``send``, ``send_many`` and ``cancel``.

``send_many`` validates its whole input first (the first bad item raises, naming its
index, and nothing is stored), then stores it chunk by chunk, each chunk in ONE call of
``lua/enqueue.lua`` (records, lanes or schedules, counts, events, idempotency keys and
the lanes' ticket keys, atomically). Only when that call newly set a ticket key does a
second round trip enqueue the ticket's RQ job (:func:`relay.dispatch.tickets.enqueue_tickets`).
``send`` is the same for one message, without the chunk machinery.

``cancel`` takes a waiting message out of its lane or schedule (``lua/cancel.lua``) and
moves it to ``cancelled`` in the same MULTI, so a crash never leaves it half-cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from relay import durability, pools, scripts
from relay.connection import text
from relay.context import Context
from relay.dispatch.tickets import Arm, enqueue_tickets
from relay.errors import ConflictError, NotFoundError, RelayError
from relay.ids import new_id, new_ids
from relay.lanes import LaneId, PoolLane, kind_of
from relay.log import get_logger
from relay.produce.times import TimeToSend
from relay.produce.validation import ValidMessage, check, validate
from relay.states import WAITING_STATES, State
from relay.store import BODY_CHUNK, Message

log = get_logger(__name__)

#: Attempts at storing a chunk whose fresh ids collide with existing records.
ID_ATTEMPTS = 8
DEFAULT_CHUNK = 1000
#: Separates a message's values in enqueue.lua's ARGV (ASCII unit separator).
SEP = "\x1f"


@dataclass(frozen=True)
class EnqueueAnswer:
    """What ``lua/enqueue.lua`` answered: the ids (one per message: its own, or the first
    id of its idempotency key), the positions (1-based) whose lane ticket it set; or, when
    ``stored`` is False, the positions whose fresh id was already taken."""

    stored: bool
    ids: list[str]
    positions: list[int]

    @classmethod
    def of(cls, answer: list[Any], n: int) -> EnqueueAnswer:
        if int(answer[0]) != 1:
            return cls(False, [], [int(pos) for pos in answer[1]])
        return cls(True, [text(i) for i in answer[1 : n + 1]], [int(p) for p in answer[n + 1 :]])


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One message handed to :meth:`Producer.enqueue`: its id, and whether that call stored
    it (False: an idempotency key seen before answered with the first id)."""

    id: str
    created: bool


class Producer:
    """Stores send requests in Redis and arms the dispatch tickets of the lanes they join."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.settings = ctx.settings

    # --- send ----------------------------------------------------------------------

    def send(
        self,
        sendto: str,
        body: str,
        device_id: int | None = None,
        sim: int = 0,
        urgent: bool = False,
        customerid: int | None = None,
        timetosend: TimeToSend = None,
        key: str | None = None,
        ttl: float | None = None,
        pool: str | None = None,
    ) -> str:
        """Validate and store one message; return its id (the first id when ``key`` was seen).

        Raises :class:`relay.errors.ValidationError` (nothing stored) on bad input.
        """
        now = self.ctx.clock.now()
        msg = check(
            sendto,
            body,
            device_id,
            sim,
            urgent,
            customerid,
            timetosend,
            key,
            ttl,
            pool,
            settings=self.settings,
            now=now,
        )
        return self._store([msg], round(now * 1000))[0]

    def send_many(
        self, items: Iterable[Mapping[str, Any]], *, chunk_size: int = DEFAULT_CHUNK
    ) -> list[str]:
        """Validate every item, then store them in chunks of ``chunk_size``; one id per item.

        Items are mappings of the message fields (``sendto``, ``body``, ``device_id``, ...).
        An item whose ``key`` was seen before (or earlier in ``items``) gets the first id.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        now = self.ctx.clock.now()
        msgs = [validate(item, self.settings, now, index=i) for i, item in enumerate(items)]
        ids: list[str] = []
        for start in range(0, len(msgs), chunk_size):
            ids += self._store(msgs[start : start + chunk_size], self.ctx.now_ms())
        log.info("send_many.stored", messages=len(msgs), chunks=-(-len(msgs) // chunk_size))
        return ids

    def enqueue(
        self, msgs: Sequence[ValidMessage], *, chunk_size: int = DEFAULT_CHUNK
    ) -> list[Enqueued]:
        """Store messages already validated (:func:`relay.produce.validation.validate`), in
        chunks of ``chunk_size``; per message its id and whether this call stored it
        (``created`` False: its ``key`` was seen before and the id is the first one).

        What ``send``/``send_many`` do after validating; the HTTP API uses it to answer a
        repeated idempotency key with 200 instead of 202.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        out: list[Enqueued] = []
        for start in range(0, len(msgs), chunk_size):
            chunk = msgs[start : start + chunk_size]
            fresh: list[str] = []
            ids = self._store(chunk, self.ctx.now_ms(), fresh_ids=fresh)
            out += [Enqueued(i, i == f) for i, f in zip(ids, fresh, strict=True)]
        return out

    def _store(
        self, msgs: Sequence[ValidMessage], now_ms: int, *, fresh_ids: list[str] | None = None
    ) -> list[str]:
        """One chunk: one enqueue.lua call (again only if a fresh id was taken), then tickets.

        ``fresh_ids``, when given, receives the ids this call offered: an answered id equal
        to its offered one is a message stored now, any other was stored before (its key).
        """
        ids = [new_id(now_ms)] if len(msgs) == 1 else new_ids(now_ms, len(msgs))
        lanes = self._lanes(msgs)
        member_arms = self._member_tickets(lanes)
        for _ in range(ID_ATTEMPTS):
            answer = self._enqueue(msgs, ids, lanes, member_arms, now_ms)
            if answer.stored:
                if fresh_ids is not None:
                    fresh_ids[:] = ids
                if answer.positions:  # a second round trip only for tickets this call set
                    self._arm([_armed(msgs, lanes, member_arms, p) for p in answer.positions])
                return answer.ids
            _renew(ids, [pos - 1 for pos in answer.positions], now_ms)
        raise RuntimeError(f"could not find free message ids in {ID_ATTEMPTS} attempts")

    def _lanes(self, msgs: Sequence[ValidMessage]) -> _Lanes:
        """What enqueue.lua needs of each lane of ``msgs``, worked out once per lane."""
        lanes: _Lanes = {}
        k = self.keys
        for msg in msgs:
            at = _lane_of(msg)
            if at in lanes:
                continue
            pool = msg.pool_lane
            if pool is not None:
                lanes[at] = _Lane(
                    None,
                    k.pool_lane(pool),
                    "",
                    "",
                    SEP + SEP + pool.member + SEP + SEP + pool.name,
                    "",
                )
            else:
                lane = msg.lane
                arm = Arm.new(k, lane)
                lanes[at] = _Lane(
                    arm,
                    k.lane(lane),
                    k.ticket(lane),
                    k.sched(lane),
                    SEP + arm.job_id + SEP + lane.member + SEP + lane.pair.member + SEP,
                    SEP + SEP + lane.member + SEP + lane.pair.member + SEP,
                )
        return lanes

    def _member_tickets(self, lanes: _Lanes) -> list[tuple[str, Arm]]:
        """(pool lane member, ticket) of every member of the pools of ``lanes``, of the pool
        lane's kind: enqueue.lua arms those of the pool lanes it pushed to."""
        arms: list[tuple[str, Arm]] = []
        for urgent, _, _, name in sorted(at for at in lanes if at[3]):
            kind = kind_of(urgent)
            member = PoolLane(kind, name).member
            for pair in pools.members(self.settings.pools, name):
                arms.append((member, Arm.new(self.keys, pair.lane(kind))))
        return arms

    def _enqueue(
        self,
        msgs: Sequence[ValidMessage],
        ids: Sequence[str],
        lanes: _Lanes,
        member_arms: Sequence[tuple[str, Arm]],
        now_ms: int,
    ) -> EnqueueAnswer:
        """``lua/enqueue.lua`` for ``msgs`` under ``ids`` (layout in the script's header)."""
        k = self.keys
        keys = [k.counts, k.events, k.lanes, k.sched_due, k.deadlines]
        args: list[scripts.Arg] = [
            now_ms,
            self.settings.events_maxlen,
            self.settings.idempotency_ttl,
            State.QUEUED.value,
            State.SCHEDULED.value,
            BODY_CHUNK,
            len(member_arms),
        ]
        for msg, msg_id in zip(msgs, ids, strict=True):
            lane = lanes[_lane_of(msg)]
            record = k.msg(msg_id)
            # never "" in KEYS: an ACL user limited to ~<prefix>:* may not name it
            idem = k.idem(msg.key) if msg.key is not None else record
            if msg.pool is not None:
                keys += (record, lane.lane_key, record, idem)
                args.append(_packed(msg, msg_id, now_ms) + lane.queued_tail)
            elif msg.timetosend is None:
                keys += (record, lane.lane_key, lane.ticket_key, idem)
                args.append(_packed(msg, msg_id, now_ms) + lane.queued_tail)
            else:
                keys += (record, lane.sched_key, record, idem)
                args.append(_packed(msg, msg_id, now_ms) + lane.scheduled_tail)
        keys += (k.ticket(arm.lane) for _, arm in member_arms)
        args += (arm.job_id + SEP + member for member, arm in member_arms)
        answer = durability.run_script(self.ctx, "enqueue", keys, args, what="send")
        return EnqueueAnswer.of(answer, len(msgs))

    def _arm(self, armed: Sequence[Arm]) -> None:
        """Enqueue the RQ jobs of the tickets the enqueue script set."""
        lanes = [a.lane.member for a in armed]
        try:
            enqueue_tickets(self.ctx, armed)
        except redis.RedisError as exc:
            # The messages are stored (the script ran): answering an error now would make a
            # caller resend them. A ticket key without its job is re-armed by the sweep
            # (relay.run.sweep.rearm_lost_tickets).
            log.warning("tickets.enqueue_failed", lanes=lanes, error=str(exc))
            return
        log.debug("tickets.armed", lanes=lanes)

    # --- cancel --------------------------------------------------------------------

    def cancel(self, msg_id: str) -> Message:
        """Cancel a ``scheduled`` or ``queued`` message that no worker has claimed yet.

        Raises :class:`NotFoundError` for an unknown id and :class:`ConflictError` (naming
        the state) for a message claimed by a worker or past waiting.
        """
        msg = self._waiting(msg_id)
        lane = LaneId(msg.kind, msg.device_id, msg.sim)
        lane_key, sched = self.keys.lane(lane), self.keys.sched(lane)
        if msg.pool is not None and msg.device_id == 0:  # not yet taken by a member
            lane_key = self.keys.pool_lane(PoolLane(msg.kind, msg.pool))  # sched: none (dev 0)
        if not self._in_lane_or_schedule(msg_id, lane_key, sched):
            raise self._conflict(msg_id, claimed=True)
        with durability.pipeline(self.ctx, what=f"cancel {msg_id}") as pipe:
            taken = scripts.queue(pipe, "cancel", [lane_key, sched], [msg_id], bool)
            moved = self.ctx.store.queue_transition(pipe, [msg_id], State.CANCELLED)
            answers = pipe.execute()
        if not moved.result(answers):
            raise self._conflict(msg_id, claimed=False)
        if not taken.result(answers):
            # Claimed between the check and the MULTI: the worker's queued -> submitting
            # transition now fails for it, so it is not sent.
            log.warning("cancel.claimed_meanwhile", id=msg_id)
        log.info("message.cancelled", id=msg_id, was=msg.state.value)
        cancelled = self.ctx.store.get(msg_id)
        if cancelled is None:
            raise NotFoundError(f"message {msg_id} vanished while being cancelled")
        return cancelled

    def _waiting(self, msg_id: str) -> Message:
        msg = self.ctx.store.get(msg_id)
        if msg is None:
            raise NotFoundError(f"no message {msg_id}")
        if msg.state not in WAITING_STATES:
            raise ConflictError(_not_waiting(msg_id, msg.state))
        return msg

    def _in_lane_or_schedule(self, msg_id: str, lane: str, sched: str) -> bool:
        with self.ctx.conn.pipeline(transaction=True) as pipe:
            pipe.lpos(lane, msg_id, rank=-1)
            pipe.zscore(sched, msg_id)
            pos, due = pipe.execute()
        return pos is not None or due is not None

    def _conflict(self, msg_id: str, *, claimed: bool) -> RelayError:
        msg = self.ctx.store.get(msg_id)
        if msg is None:
            return NotFoundError(f"no message {msg_id}")
        if msg.state in WAITING_STATES and claimed:
            return ConflictError(
                f"message {msg_id} is {msg.state.value} but already claimed by a "
                "worker (about to become submitting); it can no longer be cancelled"
            )
        return ConflictError(_not_waiting(msg_id, msg.state))


def _not_waiting(msg_id: str, state: State) -> str:
    return f"message {msg_id} is {state.value}; only scheduled or queued messages can be cancelled"


def _packed(msg: ValidMessage, msg_id: str, now_ms: int) -> str:
    """The first ten of a message's values in enqueue.lua's ARGV, joined by the unit
    separator (validation keeps control characters out of every field, so it cannot occur in
    one); its lane's part (:class:`_Lane`) follows."""
    deadline = msg.deadline_ms(now_ms)
    return SEP.join(
        (
            msg_id,
            msg.sendto,
            msg.body,
            str(msg.device_id),
            str(msg.sim),
            "1" if msg.urgent else "0",
            "" if msg.customerid is None else str(msg.customerid),
            "" if msg.timetosend is None else str(msg.timetosend),
            msg.key or "",
            "" if deadline is None else str(deadline),
        )
    )


_LaneAt = tuple[bool, int, int, str]


def _lane_of(msg: ValidMessage) -> _LaneAt:
    """A cheap key of a message's lane (a tuple hashes faster than a :class:`LaneId`):
    urgent, device, SIM, pool ("" for a message to a device)."""
    return msg.urgent, msg.device_id, msg.sim, msg.pool or ""


def _armed(
    msgs: Sequence[ValidMessage],
    lanes: Mapping[_LaneAt, _Lane],
    member_arms: Sequence[tuple[str, Arm]],
    pos: int,
) -> Arm:
    """The ticket enqueue.lua set at answer position ``pos`` (negative: a pool member's)."""
    if pos < 0:
        return member_arms[-pos - 1][1]
    arm = lanes[_lane_of(msgs[pos - 1])].arm
    assert arm is not None, "enqueue.lua never sets the ticket of a pooled message's lane"
    return arm


@dataclass(frozen=True, slots=True)
class _Lane:
    """One lane of a chunk: its ticket's arm (none for a pool lane: its members' tickets are
    armed), key names, and the tail of a message's packed values (the job id, or none when
    scheduled or pooled; the lane's member; the device/SIM's; the pool's)."""

    arm: Arm | None
    lane_key: str
    ticket_key: str
    sched_key: str
    queued_tail: str
    scheduled_tail: str


_Lanes = dict[_LaneAt, _Lane]


def _renew(ids: list[str], positions: Iterable[int], now_ms: int) -> None:
    """Give ``ids`` at ``positions`` fresh values, distinct from every id in the list."""
    seen = set(ids)
    for pos in positions:
        fresh = new_id(now_ms)
        while fresh in seen:
            fresh = new_id(now_ms)
        seen.add(fresh)
        ids[pos] = fresh
