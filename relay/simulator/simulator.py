"""The :class:`Simulator`: a local SMSGateway24 over real HTTP, for tests and the demo."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from relay.clock import SYSTEM_CLOCK, Clock
from relay.simulator.admin import AdminApi
from relay.simulator.api import GatewayApi
from relay.simulator.dates import zone
from relay.simulator.devices import SimDevice
from relay.simulator.engine import Account, Engine
from relay.simulator.faults import FaultInjector
from relay.simulator.messages import LedgerEntry
from relay.simulator.outcomes import OutcomeRule
from relay.simulator.query import sms_record
from relay.simulator.server import Router, SimServer


class Simulator:
    """A fake SMSGateway24 cloud with simulated phones, served on a local port.

    Build it, :meth:`start` it (a daemon thread serves HTTP/1.1 with keep-alive), point a
    client at :attr:`url` with :attr:`token` (or :attr:`email` / :attr:`password`), and
    read back what it stored with :meth:`ledger`. Statuses progress lazily from ``clock``
    (inject a :class:`relay.clock.FakeClock` to move time by hand). ``max_records`` caps
    the records of one ``getallsms`` answer while its ``count`` stays the true total.
    """

    def __init__(
        self,
        devices: Iterable[SimDevice] = (),
        *,
        email: str = "demo@example.com",
        password: str = "demo-pass",
        token: str | None = None,
        timezone: str = "UTC",
        max_records: int | None = None,
        outcome: OutcomeRule | None = None,
        clock: Clock = SYSTEM_CLOCK,
        seed: int = 0,
        default_each: float = 1.0,
        first_sms_id: int = 62_800_001,
    ) -> None:
        if max_records is not None and max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.timezone = timezone
        self.engine = Engine(
            devices,
            account=Account(email, password, token),
            outcome=outcome or OutcomeRule(seed=seed),
            clock=clock,
            default_each=default_each,
            first_sms_id=first_sms_id,
        )
        self.faults = FaultInjector(seed)
        self.api = GatewayApi(self.engine, zone(timezone), max_records)
        self.admin = AdminApi(self)
        self.router = Router(self.engine, self.api, self.faults, self.admin)
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle --------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Simulator:
        """Listen on ``host:port`` (0 = a free port) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = SimServer((host, port), self.router)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"relay-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses and credentials -----------------------------------------------------

    @property
    def host(self) -> str:
        """The address listened on."""
        return str(self._running().server_address[0])

    @property
    def port(self) -> int:
        """The port listened on (the real one when started with port 0)."""
        return int(self._running().server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def url(self) -> str:
        """The gateway base URL, ending in ``/getdata/`` (like the real one)."""
        return f"{self.base_url}getdata/"

    @property
    def admin_url(self) -> str:
        """The admin base URL, ending in ``/_sim/``."""
        return f"{self.base_url}_sim/"

    @property
    def open_connections(self) -> int:
        """Client connections open right now (one per pooled keep-alive connection)."""
        return self._running().open_connections

    @property
    def token(self) -> str:
        """The currently valid token."""
        return self.engine.account.token

    @property
    def email(self) -> str:
        """The account login."""
        return self.engine.account.email

    @property
    def password(self) -> str:
        """The account password."""
        return self.engine.account.password

    @property
    def outcome(self) -> OutcomeRule:
        """The rule deciding final codes."""
        return self.engine.outcome

    def _running(self) -> SimServer:
        if self._server is None:
            raise RuntimeError("simulator not started: call start() first")
        return self._server

    # --- helpers mirrored by /_sim/ ----------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Where and how to reach this simulator, and its devices."""
        return {
            "url": self.url,
            "token": self.token,
            "email": self.email,
            "password": self.password,
            "timezone": self.timezone,
            "devices": [d.to_dict() for d in self.devices()],
        }

    def ledger(self) -> list[LedgerEntry]:
        """Every stored message, its request and its status history so far."""
        return self.engine.ledger()

    def entry(self, sms_id: int) -> LedgerEntry:
        """The ledger entry of one message (``KeyError`` when unknown)."""
        with self.engine.lock:
            now = self.engine.now()
            return self.engine.messages[sms_id].ledger_entry(now)

    def status(self, sms_id: int) -> int:
        """The status code of one message now."""
        return self.entry(sms_id).status

    def messages(self) -> list[dict[str, Any]]:
        """Every message as ``getallsms`` shows it now, with ``history`` and ``request_id``."""
        tz = self.api.tz
        with self.engine.lock:
            now = self.engine.now()
            return [
                {
                    **sms_record(m, now, tz),
                    "history": [list(p) for p in m.history_at(now)],
                    "request_id": m.request.request_id,
                }
                for m in self.engine.messages.values()
            ]

    def stats(self) -> dict[str, Any]:
        """Counters: requests received and answered, refusals, faults, messages by status."""
        return {
            "requests": self.router.received_counts(),
            "answered": dict(self.api.requests),
            "refused": dict(self.api.refusals),
            "faults": self.faults.counts(),
            "messages": len(self.engine.messages),
            "by_status": {str(k): v for k, v in sorted(self.engine.status_counts().items())},
            "backlog": {str(k): v for k, v in self.engine.backlog().items()},
        }

    def devices(self) -> list[SimDevice]:
        """Every device, in id order."""
        return self.engine.devices()

    def add_device(self, device: SimDevice) -> SimDevice:
        """Add a device (or replace the settings of one with the same id)."""
        return self.engine.put_device(device)

    def update_device(self, device_id: int, **changes: Any) -> SimDevice:
        """Change some settings of a device from now on (e.g. ``online=False``)."""
        return self.engine.update_device(device_id, changes)

    def set_online(self, device_id: int, online: bool) -> SimDevice:
        """Switch a device offline (it stops polling: ``lastseen`` freezes, its messages
        stay New and what it had taken is not sent) or back online (it polls again from
        now and catches up). ``KeyError`` when unknown."""
        return self.engine.update_device(device_id, {"online": online})

    def expire_token(self) -> str:
        """Invalidate the current token; returns the new one ``gettoken`` will give."""
        with self.engine.lock:
            return self.engine.account.expire()

    def set_outcome(self, rule: OutcomeRule) -> None:
        """Use ``rule`` for every message sent from now on."""
        with self.engine.lock:
            self.engine.now()
            self.engine.outcome = rule
