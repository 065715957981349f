"""Dispatch tickets: the RQ jobs that drain one device/SIM's lanes.

A ticket key (``Keys.ticket(kind, dev, sim)``) is set while a ticket of that kind is
queued in RQ, running, or waiting on a timer; its value is the RQ job id (or ``timer``).
Whoever sets the key (atomically, in a Lua script, with ``SET NX``) must then enqueue the
job with :func:`enqueue_tickets`. If the process dies in between, the periodic sweep
(``relay.dispatch.recovery``) finds the ticket whose job does not exist and re-arms it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from relay.keys import Keys, LaneKind

#: The job function every ticket runs (``relay.dispatch.run_ticket(kind, dev, sim)``).
TICKET_FUNC = "relay.dispatch.run_ticket"
TICKET_TIMEOUT = 300
FAILURE_TTL = 86400


@dataclass(frozen=True)
class Arm:
    """A ticket to enqueue: lane ``kind`` of ``dev``/``sim`` under RQ job id ``job_id``."""

    kind: LaneKind
    dev: int
    sim: int
    job_id: str

    @classmethod
    def new(cls, kind: LaneKind, dev: int, sim: int) -> Arm:
        return cls(kind, dev, sim, new_job_id(kind, dev, sim))


def new_job_id(kind: LaneKind, dev: int, sim: int) -> str:
    """A fresh RQ job id naming the lane it drains (readable in ``rq info``)."""
    return f"ticket-{kind}-{dev}-{sim}-{uuid.uuid4().hex[:12]}"


def queue(conn: redis.Redis, keys: Keys, kind: LaneKind) -> Queue:
    """The RQ queue tickets of ``kind`` go to (JSON serializer, never pickle)."""
    return Queue(keys.queue_for(kind), connection=conn, serializer=JSONSerializer)


def enqueue_tickets(conn: redis.Redis, keys: Keys, arms: Sequence[Arm]) -> None:
    """Enqueue one RQ job per arm, all in one pipeline."""
    if not arms:
        return
    with conn.pipeline() as pipe:
        for kind in ("u", "b"):
            mine = [a for a in arms if a.kind == kind]
            if not mine:
                continue
            q = queue(conn, keys, kind)
            datas = [
                Queue.prepare_data(
                    TICKET_FUNC,
                    args=(a.kind, a.dev, a.sim),
                    job_id=a.job_id,
                    timeout=TICKET_TIMEOUT,
                    result_ttl=0,
                    failure_ttl=FAILURE_TTL,
                    description=f"dispatch {'urgent' if a.kind == 'u' else 'bulk'} {a.dev}/{a.sim}",
                )
                for a in mine
            ]
            q.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
