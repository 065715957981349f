"""Prometheus metrics: the numbers of ``relay stats``, read from Redis on every scrape.

A custom collector calls :func:`relay.results.stats.collect` when Prometheus scrapes, so every
process that serves metrics shows the same, current, relay-wide numbers (they live in
Redis, not in the process). Served by ``relay worker --metrics-port P`` and ``relay
reconciler --metrics-port P``.

Gauges (all relay-wide):

- ``relay_lane_depth{device,sim,lane}`` messages waiting, ``lane`` = urgent, bulk, scheduled
- ``relay_inflight{device,sim}`` messages in batches being submitted
- ``relay_verifying{device,sim}`` messages of outcome-unknown batches awaiting verification
- ``relay_awaiting_status{device}`` submitted messages without a final status yet
- ``relay_oldest_queued_seconds{device,sim}`` age of the oldest queued message (0 when none)
- ``relay_messages{state}`` messages per state (final states count every message that ended there)
- ``relay_device_online{device}`` 1 when the phone is online, 0 when the last device sync
  found it offline (``lastseen`` older than ``RELAY_DEVICE_OFFLINE_AFTER``)
- ``relay_device_lastseen_seconds{device}`` when the phone last polled (epoch seconds)
- ``relay_stats_up`` 1 when the last scrape could read Redis, else 0 (and nothing else is shown)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from threading import Thread
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.errors import RelayError
from relay.log import get_logger
from relay.results.stats import Stats, collect

if TYPE_CHECKING:
    from relay.context import Context

log = get_logger(__name__)


class RelayCollector(Collector):
    """Turns one :func:`relay.results.stats.collect` per scrape into gauges."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("relay_stats_up", "1 when the last scrape could read relay's Redis.")
        try:
            stats = collect(self.ctx)
        except (redis.RedisError, RelayError) as exc:
            log.warning("metrics_scrape_failed", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from gauges(stats)


def gauges(stats: Stats) -> Iterator[Metric]:
    """The metric families of one :class:`~relay.results.stats.Stats`."""
    depth = GaugeMetricFamily(
        "relay_lane_depth",
        "Messages waiting per device/SIM and lane.",
        labels=["device", "sim", "lane"],
    )
    inflight = GaugeMetricFamily(
        "relay_inflight", "Messages in batches being submitted.", labels=["device", "sim"]
    )
    verifying = GaugeMetricFamily(
        "relay_verifying",
        "Messages of outcome-unknown batches awaiting verification.",
        labels=["device", "sim"],
    )
    oldest = GaugeMetricFamily(
        "relay_oldest_queued_seconds", "Age of the oldest queued message.", labels=["device", "sim"]
    )
    for lane in stats.lanes:
        dev, sim = str(lane.device_id), str(lane.sim)
        depth.add_metric([dev, sim, "urgent"], lane.urgent)
        depth.add_metric([dev, sim, "bulk"], lane.bulk)
        depth.add_metric([dev, sim, "scheduled"], lane.scheduled)
        inflight.add_metric([dev, sim], lane.inflight)
        verifying.add_metric([dev, sim], lane.verifying)
        oldest.add_metric([dev, sim], lane.oldest_queued_s or 0.0)
    awaiting = GaugeMetricFamily(
        "relay_awaiting_status", "Submitted messages without a final status yet.", labels=["device"]
    )
    for dev_id, count in sorted(stats.awaiting_by_device.items()):
        awaiting.add_metric([str(dev_id)], count)
    messages = GaugeMetricFamily("relay_messages", "Messages per state.", labels=["state"])
    for state, count in stats.states.items():
        messages.add_metric([state], count)
    online = GaugeMetricFamily(
        "relay_device_online",
        "1 when the phone polled within RELAY_DEVICE_OFFLINE_AFTER, 0 when offline.",
        labels=["device"],
    )
    for dev_id, is_online in sorted(stats.devices_online.items()):
        if is_online is not None:
            online.add_metric([str(dev_id)], 1 if is_online else 0)
    seen = GaugeMetricFamily(
        "relay_device_lastseen_seconds",
        "When the phone last polled the gateway (epoch seconds), as of the last sync.",
        labels=["device"],
    )
    for dev_id, at in sorted(stats.devices_lastseen.items()):
        seen.add_metric([str(dev_id)], at)
    yield from (depth, inflight, verifying, oldest, awaiting, messages, online, seen)


@dataclass
class MetricsServer:
    """A running metrics endpoint; :meth:`stop` shuts it down."""

    port: int
    server: Any
    thread: Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def registry_for(ctx: Context) -> CollectorRegistry:
    """A registry holding only relay's collector (so several can live in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(ctx))
    return registry


def serve(ctx: Context, port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve relay's metrics on ``http://addr:port/metrics`` from a daemon thread.

    ``port`` 0 picks a free port (the returned server's ``port`` says which).
    """
    server, thread = start_http_server(port, addr=addr, registry=registry_for(ctx))
    bound = int(server.server_address[1])
    log.info("metrics_serving", port=bound, addr=addr)
    return MetricsServer(port=bound, server=server, thread=thread)
