"""The plain-RQ side of the comparisons: a one-message job, an RQ worker process, cleanup.

The job :func:`add_one` does what a straightforward RQ app does for one message: one
``addsms`` call to the gateway. Its gateway client is made once per worker process from
``RELAY_GATEWAY_URL`` / ``RELAY_GATEWAY_TOKEN`` (never from the job's arguments: no secret
goes into a payload), before the worker starts, so a forking worker's children inherit a
warm client instead of paying a connection per job.

``python -m relay.bench.rqside --queue NAME --worker simple|fork`` runs one burst RQ worker
(JSON serializer) on ``RELAY_REDIS_URL`` and exits when the queue is empty.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from relay.log import configure

if TYPE_CHECKING:
    from relay.gateway import GatewayClient

#: The dotted path RQ jobs name (a module-level function, as RQ apps write them).
JOB_FUNC = "relay.bench.rqside.add_one"

_client: GatewayClient | None = None


def gateway() -> GatewayClient:
    """This process's gateway client (made from the ``RELAY_*`` environment once)."""
    global _client
    if _client is None:
        from relay.gateway import GatewayClient
        from relay.settings import load_settings

        _client = GatewayClient.from_settings(load_settings())
    return _client


def add_one(sendto: str, body: str, device_id: int, sim: int = 0) -> int:
    """The RQ job: store one message at the gateway with ``addsms``; returns its sms_id."""
    return gateway().add_sms(sendto, body, int(device_id), int(sim))


def queue(conn: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def job_args(item: dict[str, Any]) -> tuple[str, str, int, int]:
    """The job arguments of a send_many item."""
    return item["sendto"], item["body"], int(item["device_id"]), int(item.get("sim") or 0)


def cleanup(conn: redis.Redis, name: str) -> int:
    """Delete the RQ keys of queue ``name``: its jobs (from the queue and every registry)
    and the queue's own keys. Returns how many keys went."""
    registries = [
        f"rq:{kind}:{name}"
        for kind in ("finished", "failed", "started", "deferred", "scheduled", "canceled")
    ]
    ids: set[Any] = set(conn.lrange(f"rq:queue:{name}", 0, -1))
    for registry in registries:
        ids.update(conn.zrange(registry, 0, -1))
    keys: list[bytes | str] = []
    for job_id in ids:
        text = job_id.decode()
        keys += [f"rq:job:{text}", f"rq:results:{text}", f"rq:job:{text}:dependents"]
    keys += list(conn.scan_iter(match=f"rq:*{name}*", count=5000))
    deleted = 0
    for i in range(0, len(keys), 2000):
        deleted += int(conn.unlink(*keys[i : i + 2000]))
    conn.srem("rq:queues", f"rq:queue:{name}")
    return deleted


def cleanup_workers(conn: redis.Redis, name: str) -> None:
    """Forget RQ worker registrations left for queue ``name``."""
    for worker in Worker.all(connection=conn, queue=queue(conn, name)):
        conn.srem("rq:workers", worker.key)
        conn.unlink(worker.key)


def main(argv: list[str] | None = None) -> int:
    """Run one burst RQ worker on ``--queue`` until it is empty."""
    parser = argparse.ArgumentParser(prog="python -m relay.bench.rqside")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--worker", choices=("simple", "fork"), default="simple")
    args = parser.parse_args(argv)
    configure("WARNING", json=True)
    conn = redis.Redis.from_url(os.environ.get("RELAY_REDIS_URL", "redis://127.0.0.1:6379/0"))
    gateway().get_all_devices()  # warm before forking: children inherit a live connection
    kind = SimpleWorker if args.worker == "simple" else Worker
    worker = kind([queue(conn, args.queue)], connection=conn, serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
