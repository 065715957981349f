"""The ``/_sim/`` admin endpoints: JSON mirrors of the :class:`Simulator` helpers.

So a simulator started as its own process (``relay simulator``) can be configured and
inspected by tests and the demo:

- ``GET  /_sim/info``          url, token, email, password, timezone, devices
- ``GET  /_sim/ledger``        every stored message with its request and status history
- ``GET  /_sim/messages``      every message as ``getallsms`` shows it now, plus history
- ``GET  /_sim/stats``         requests, refusals, faults injected, messages by status
- ``GET  /_sim/faults``        active fault rules and counts
- ``POST /_sim/faults``        ``{"action":"add","endpoint":..,"kind":..,"times"|"rate":..,
                               "delay":..,"status":..,"store":..}`` or
                               ``{"action":"clear"[,"endpoint":..]}``
- ``POST /_sim/devices``       ``{"id":260, ...SimDevice fields}``: add, or change the given fields
- ``POST /_sim/offline``       ``{"id":260}``: the phone stops polling (lastseen freezes,
                               its messages stay pending) until ``POST /_sim/online``
- ``POST /_sim/online``        ``{"id":260}``: the phone polls again and sends what waited
- ``POST /_sim/expire-token``  invalidate the token; answers the new one
- ``POST /_sim/outcome``       replace the :class:`OutcomeRule` (its fields as JSON)

Admin requests are never subject to faults. Errors answer HTTP 400 ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from relay.simulator.devices import SimDevice
from relay.simulator.outcomes import OutcomeRule

if TYPE_CHECKING:
    from relay.simulator.simulator import Simulator

Args = Mapping[str, Any]
Handler = Callable[[Args], dict[str, Any]]


class AdminError(ValueError):
    """An admin request that cannot be done; answered with HTTP 400."""


class AdminApi:
    """Routes ``(method, name)`` of ``/_sim/<name>`` to the simulator's helpers."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "info"): lambda _: sim.info(),
            ("GET", "ledger"): lambda _: _listing("entries", [e.to_dict() for e in sim.ledger()]),
            ("GET", "messages"): lambda _: _listing("messages", sim.messages()),
            ("GET", "stats"): lambda _: sim.stats(),
            ("GET", "faults"): self.get_faults,
            ("POST", "faults"): self.post_faults,
            ("POST", "devices"): self.post_devices,
            ("GET", "devices"): lambda _: {"devices": [d.to_dict() for d in sim.devices()]},
            ("POST", "offline"): lambda args: self.post_online(args, online=False),
            ("POST", "online"): lambda args: self.post_online(args, online=True),
            ("POST", "expire-token"): lambda _: {"ok": True, "token": sim.expire_token()},
            ("POST", "outcome"): self.post_outcome,
        }

    def handle(self, method: str, name: str, args: Args) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of one admin request."""
        route = self.routes.get((method, name))
        if route is None:
            return 404, {"error": f"no admin endpoint {method} /_sim/{name}"}
        try:
            return 200, route(args)
        except (AdminError, ValueError, TypeError, KeyError) as exc:
            return 400, {"error": str(exc) or type(exc).__name__}

    def get_faults(self, _: Args) -> dict[str, Any]:
        """Active rules and the counts of faults injected."""
        return {"rules": self.sim.faults.rules(), "counts": self.sim.faults.counts()}

    def post_faults(self, args: Args) -> dict[str, Any]:
        """Add one fault rule, or clear rules."""
        action = args.get("action", "add")
        if action == "clear":
            removed = self.sim.faults.clear(args.get("endpoint"))
            return {"ok": True, "removed": removed, **self.get_faults(args)}
        if action != "add":
            raise AdminError(f"unknown action {action!r}: use add or clear")
        if "endpoint" not in args or "kind" not in args:
            raise AdminError("endpoint and kind are required")
        self.sim.faults.add(
            str(args["endpoint"]),
            str(args["kind"]),
            times=_opt(int, args.get("times")),
            rate=_opt(float, args.get("rate")),
            delay=_opt(float, args.get("delay")),
            status=_opt(int, args.get("status")),
            store=str(args.get("store", False)).lower() in ("true", "1"),
        )
        return {"ok": True, **self.get_faults(args)}

    def post_devices(self, args: Args) -> dict[str, Any]:
        """Add a device, or change the fields given of a known one."""
        if "id" not in args:
            raise AdminError("id is required")
        device_id = int(args["id"])
        changes = {k: v for k, v in args.items() if k != "id"}
        known = {d.id for d in self.sim.devices()}
        if device_id in known:
            device = self.sim.update_device(device_id, **changes)
        else:
            device = self.sim.add_device(SimDevice.from_dict({"id": device_id, **changes}))
        return {"ok": True, "device": device.to_dict()}

    def post_online(self, args: Args, *, online: bool) -> dict[str, Any]:
        """Switch a known device offline or back online."""
        if "id" not in args:
            raise AdminError("id is required")
        device_id = int(args["id"])
        if device_id not in {d.id for d in self.sim.devices()}:
            raise AdminError(f"unknown device {device_id}")
        device = self.sim.set_online(device_id, online)
        return {"ok": True, "device": device.to_dict()}

    def post_outcome(self, args: Args) -> dict[str, Any]:
        """Replace the outcome rule (applies to messages sent from now on)."""
        rule = OutcomeRule.from_dict(args)
        self.sim.set_outcome(rule)
        return {"ok": True, "outcome": rule.to_dict()}


def _listing(key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(items), key: items}


def _opt(kind: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None or value == "" else kind(value)
