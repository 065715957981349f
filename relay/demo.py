"""``relay demo``: the whole pipeline on one machine, with no Redis server and no account.

What runs: a Redis-compatible server (the embedded Valkey server of :mod:`relay.embedded`,
its data in a temporary directory, stopped on exit; or the real server named by
``RELAY_REDIS_URL`` in the environment, under a key prefix of the demo's own, removed
afterwards), the gateway simulator over HTTP with three phones of
different speeds, real ``relay worker`` processes and a ``relay reconciler`` process (the
:class:`relay.run.supervisor.Runner`, logging to a file), and a load: a bulk campaign spread over
the phones by speed, urgent OTPs arriving while it drains, a few messages scheduled seconds
ahead, and a few recipients the simulator fails by rule; then a campaign to the pool the
phones form, during which one phone goes offline (:mod:`relay.demopool`). A live view
(``relay stats``) follows until every message is final; :class:`DemoSummary` closes it:
final states, urgent latency from ``send`` to stored at the gateway (the simulator's
ledger), messages per ``addalotofsms`` call, the pool's messages per phone (in all, and
while one was off), elapsed time.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from relay.clock import SYSTEM_CLOCK, Clock
from relay.connection import safe_url
from relay.demopool import Outage, PoolSummary, demo_pools, pool_campaign, pool_summary
from relay.demoserver import delete_keys, embedded_redis
from relay.log import get_logger
from relay.settings import Settings, load_settings
from relay.simulator import LedgerEntry, OutcomeRule, SimDevice, Simulator

if TYPE_CHECKING:
    from relay.core import Relay
    from relay.results.stats import Stats

OnUpdate = Callable[["Stats", float], None]
"""Called with the current numbers and the seconds since the load started."""

log = get_logger(__name__)


PHONES = (
    SimDevice(id=501, title="fast phone", delaybetweeneachsms=0.05, delaybetweenrequest=0.5),
    SimDevice(id=502, title="steady phone", delaybetweeneachsms=0.2, delaybetweenrequest=1.0),
    SimDevice(id=503, title="slow phone", delaybetweeneachsms=0.5, delaybetweenrequest=0.75),
)
"""The simulated phones: seconds between two SMS, and between two polls of the gateway."""
UPDATE_EVERY_S = 0.25
READY_TIMEOUT = 30.0
"""Seconds to wait for the worker and reconciler processes to start before sending."""
FAIL_CODES = (9, 10, 8)
"""Final codes given, in turn, to the failing recipients (not sent, no service, not delivered)."""


@dataclass(frozen=True)
class DemoConfig:
    """The size and shape of the demo load."""

    bulk: int = 300
    urgent: int = 12
    scheduled: int = 6
    failing: int = 5
    workers: int = 2
    timeout: float = 120.0
    urgent_every: float = 0.4
    """Seconds between two urgent OTPs (they start once the campaign is queued)."""
    report_delay: float = 0.3
    no_report_rate: float = 0.03
    """Share of messages the simulator sends without a delivery report (they end ``sent``)."""
    pooled: int = 300
    """Messages to the phones' pool, sent with the campaign."""
    outage_for: float = 10.0
    """Most seconds the second phone stays offline (it returns once the pool has drained)."""


@dataclass
class DemoSummary:
    """How the demo ended. Latencies and elapsed time in seconds."""

    total: int
    states: dict[str, int]
    complete: bool
    elapsed: float
    urgent_latency_p50: float | None
    urgent_latency_p99: float | None
    gateway_calls: int
    stored: int
    redis: str
    log_path: str
    per_device: dict[int, int] = field(default_factory=dict)
    api_url: str = ""
    """Where the demo's ``relay serve`` answered (only while the demo ran)."""
    pool: PoolSummary | None = None

    @property
    def per_call(self) -> float:
        """Messages per ``addalotofsms`` call."""
        return self.stored / self.gateway_calls if self.gateway_calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``relay demo --json``)."""
        data = asdict(self)
        data["per_device"] = {str(k): v for k, v in sorted(self.per_device.items())}
        data["messages_per_call"] = round(self.per_call, 2)
        data["pool"] = self.pool.to_dict() if self.pool else None
        return data


# --- the pieces ---------------------------------------------------------------------------


def failing_numbers(config: DemoConfig) -> dict[str, int]:
    """The recipients the simulator fails, each with its final code."""
    return {
        _number(config.bulk - 1 - i): FAIL_CODES[i % len(FAIL_CODES)]
        for i in range(min(config.failing, config.bulk))
    }


def _number(i: int) -> str:
    return f"+49157{i:07d}"


def start_simulator(config: DemoConfig) -> Simulator:
    """The gateway simulator with the demo's phones and outcome rule, started."""
    rule = OutcomeRule(
        by_recipient=failing_numbers(config),
        no_report_rate=config.no_report_rate,
        report_delay=config.report_delay,
        seed=7,
    )
    return Simulator(PHONES, outcome=rule, token=uuid.uuid4().hex).start()


def demo_settings(redis_url: str, sim: Simulator, prefix: str) -> Settings:
    """Settings for a quick run: the simulator as gateway, fast reconciling, short waits."""
    return load_settings(
        redis_url=redis_url,
        key_prefix=prefix,
        gateway_url=sim.url,
        gateway_token=sim.token,
        gateway_timeout=10.0,
        batch_max=100,
        reconcile_interval=0.5,
        reconcile_urgent_interval=0.2,
        delivery_report_wait=2.0,
        match_window=120.0,
        inflight_timeout=15.0,
        device_refresh=1.0,
        device_offline_after=2.0,
        pools=demo_pools(PHONES),
        log_level="WARNING",
        log_json=True,
        metrics_port=None,
        webhook_url=None,
    )


def campaign(config: DemoConfig, now: float) -> list[dict[str, Any]]:
    """The bulk campaign (spread over the phones by speed) and the scheduled messages."""
    speed = [1 / (p.delaybetweeneachsms or 1.0) for p in PHONES]
    shares = [round(config.bulk * s / sum(speed)) for s in speed]
    shares[0] += config.bulk - sum(shares)
    phones = [p.id for p, n in zip(PHONES, shares, strict=True) for _ in range(n)]
    items: list[dict[str, Any]] = [
        {
            "sendto": _number(i),
            "body": f"Spring sale: 20% off with code SPRING{i:04d}",
            "device_id": dev,
            "customerid": i + 1,
        }
        for i, dev in enumerate(phones)
    ]
    for i in range(config.scheduled):
        items.append(
            {
                "sendto": _number(500_000 + i),
                "body": f"Reminder {i + 1}: your appointment is today",
                "device_id": PHONES[i % len(PHONES)].id,
                "timetosend": now + 2.0 + i,
            }
        )
    return items


class UrgentFeed(threading.Thread):
    """Sends the urgent OTPs one by one while the campaign drains."""

    def __init__(self, relay: Relay, config: DemoConfig, clock: Clock) -> None:
        super().__init__(name="demo-urgent", daemon=True)
        self.relay, self.config, self.clock = relay, config, clock
        self.ids: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.config.urgent):
                phone = PHONES[i % len(PHONES)]
                self.ids.append(
                    self.relay.send(
                        _number(900_000 + i),
                        f"Your login code is {100000 + 7919 * i % 900000}",
                        phone.id,
                        urgent=True,
                    )
                )
                self.clock.sleep(self.config.urgent_every)
        except BaseException as exc:  # reported by run_demo, never lost in the thread
            self.error = exc


# --- the run ------------------------------------------------------------------------------


def run_demo(
    config: DemoConfig | None = None,
    *,
    on_update: OnUpdate | None = None,
    on_api: Callable[[str, str], None] | None = None,
    redis_url: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> DemoSummary:
    """Run the demo, calling ``on_update(stats, elapsed)`` about 4 times a second (the live
    view); returns the summary. ``on_api(url, key)`` is told, before the load starts, where
    the demo's HTTP API answers and an admin key for it.

    ``redis_url`` (else ``RELAY_REDIS_URL`` from the environment) uses that server under a
    fresh key prefix, deleted afterwards; without either, an embedded server.
    """
    with Demo(config, redis_url=redis_url, clock=clock) as demo:
        if on_api is not None:
            on_api(demo.api_url, demo.api_key)
        return demo.run(on_update)


class Demo:
    """The demo's pieces, started on enter and stopped on exit; :meth:`run` plays the load.

    While open, :attr:`sim` (the simulator, with its ledger), :attr:`relay` and :attr:`ids`
    (every message sent, in order) can be inspected.
    """

    def __init__(
        self,
        config: DemoConfig | None = None,
        *,
        redis_url: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config or DemoConfig()
        self.redis_url = redis_url or os.environ.get("RELAY_REDIS_URL")
        self.clock = clock
        self.ids: list[str] = []
        self.urgent_ids: list[str] = []
        self.api_url = ""
        self.api_key = ""
        self._stack = ExitStack()

    def __enter__(self) -> Demo:
        from relay.core import Relay
        from relay.run.supervisor import Runner

        stack = self._stack.__enter__()
        try:
            if self.redis_url:
                url, self.redis_name = self.redis_url, safe_url(self.redis_url)
            else:
                url, self.redis_name = stack.enter_context(embedded_redis())
            self.sim = stack.enter_context(start_simulator(self.config))
            self.settings = demo_settings(url, self.sim, f"relay-demo-{uuid.uuid4().hex[:8]}")
            if self.redis_url:
                stack.callback(delete_keys, self.settings)
            self.relay = stack.enter_context(Relay(self.settings, clock=self.clock))
            self.logfile: IO[bytes] = stack.enter_context(
                tempfile.NamedTemporaryFile(prefix="relay-demo-", suffix=".log", delete=False)
            )
            self.runner = Runner(
                self.settings, workers=self.config.workers, clock=self.clock, output=self.logfile
            )
            self.runner.start()
            stack.callback(self.runner.stop)
            self._serve_api(stack)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _serve_api(self, stack: ExitStack) -> None:
        """``relay serve``'s app on a free local port, with an admin key named ``demo``."""
        from relay.api.server import ServerThread
        from relay.apikeys import ApiKeys

        _, self.api_key = ApiKeys(self.relay.ctx).create("demo", "admin")
        api = ServerThread(self.settings).start()
        stack.callback(api.stop)
        self.api_url = api.url

    def run(self, on_update: OnUpdate | None = None) -> DemoSummary:
        """Send the load, follow it until every message is final (or the timeout), summarise."""
        if not self.runner.wait_ready(self.relay.ctx, READY_TIMEOUT):
            log.warning("demo_processes_slow", timeout=READY_TIMEOUT)
        started = self.clock.now()
        self.ids = self.relay.send_many(campaign(self.config, started))
        self.ids += self.relay.send_many(pool_campaign(self.config.pooled))
        feed = UrgentFeed(self.relay, self.config, self.clock)
        outage = Outage(
            self.relay.ctx,
            self.sim,
            PHONES[1].id,
            self.config.pooled,
            self.config.outage_for,
            self.clock,
        )
        feed.start()
        outage.start()
        complete = self._follow((feed, outage), on_update, started)
        outage.stop.set()
        for thread in (feed, outage):
            thread.join()
            if thread.error is not None:
                raise thread.error
        self.urgent_ids = feed.ids
        self.ids += feed.ids
        summary = summarize(self.relay, self.sim, self.ids, self.urgent_ids)
        summary.complete = complete and summary.complete
        summary.elapsed = self.clock.now() - started
        summary.redis, summary.log_path = self.redis_name, self.logfile.name
        summary.api_url = self.api_url
        summary.pool = pool_summary(self.sim.ledger(), self.config.pooled, outage)
        return summary

    def _follow(
        self, threads: tuple[UrgentFeed, Outage], on_update: OnUpdate | None, started: float
    ) -> bool:
        """Wait until every message is final (False on timeout), reporting the numbers."""
        from relay.results.stats import collect

        deadline = started + self.config.timeout
        while True:
            self.runner.supervise()
            stats = collect(self.relay.ctx)
            if on_update is not None:
                on_update(stats, self.clock.now() - started)
            if stats.idle and not any(t.is_alive() for t in threads):
                return True
            if self.clock.now() >= deadline:
                log.warning("demo_timeout", timeout=self.config.timeout)
                return False
            self.clock.sleep(UPDATE_EVERY_S)


def summarize(relay: Relay, sim: Simulator, ids: list[str], urgent_ids: list[str]) -> DemoSummary:
    """Final states from the records, latency and batching from the simulator's ledger.

    ``complete`` says every message is final; ``elapsed``, ``redis`` and ``log_path`` are
    left for the caller.
    """
    records = dict(zip(ids, relay.ctx.store.get_many(ids), strict=True))
    states: dict[str, int] = {}
    for msg in records.values():
        name = msg.state.value if msg is not None else "missing"
        states[name] = states.get(name, 0) + 1
    ledger = {e.sms_id: e for e in sim.ledger()}
    bulk_calls = {
        e.request.request_id for e in ledger.values() if e.request.endpoint == "addalotofsms"
    }
    latencies = sorted(
        lat for lat in (_latency(records.get(i), ledger) for i in urgent_ids) if lat is not None
    )
    per_device: dict[int, int] = {}
    for entry in ledger.values():
        per_device[entry.device_id] = per_device.get(entry.device_id, 0) + 1
    return DemoSummary(
        total=len(ids),
        states=dict(sorted(states.items())),
        complete=all(m is not None and m.final for m in records.values()),
        elapsed=0.0,
        urgent_latency_p50=_percentile(latencies, 50),
        urgent_latency_p99=_percentile(latencies, 99),
        gateway_calls=len(bulk_calls),
        stored=sum(1 for e in ledger.values() if e.request.endpoint == "addalotofsms"),
        redis="",
        log_path="",
        per_device=per_device,
    )


def _latency(msg: Any, ledger: dict[int, LedgerEntry]) -> float | None:
    """Seconds from ``send`` (``t_queued``) to stored at the gateway, when both are known."""
    if msg is None or msg.sms_id is None or msg.sms_id not in ledger:
        return None
    queued = msg.times.get("queued")
    return None if queued is None else max(0.0, ledger[msg.sms_id].stored_at - queued.timestamp())


def _percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, -(-len(values) * pct // 100))
    return round(values[int(rank) - 1], 4)
