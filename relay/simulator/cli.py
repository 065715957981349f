"""Running the simulator as its own process: ``relay simulator`` / ``python -m relay.simulator``.

:func:`run_forever` is what the CLI calls; :func:`main` is a stand-alone argparse front
end with the same options.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, TextIO

from relay.simulator.devices import SimDevice
from relay.simulator.outcomes import OutcomeRule
from relay.simulator.simulator import Simulator

DEFAULT_DEVICES = (
    SimDevice(id=260, title="Simulated phone 260", delaybetweeneachsms=0.5),
    SimDevice(id=261, title="Simulated phone 261", delaybetweeneachsms=None),
)


def parse_device(spec: str) -> SimDevice:
    """A device from ``ID[:REQUEST[:EACH[:SIMS]]]``, e.g. ``260:1:0.5:0,1`` or ``261:2:-``.

    REQUEST is ``delaybetweenrequest``, EACH ``delaybetweeneachsms`` (``-`` = null),
    SIMS a comma list of slots. ``ValueError`` on a bad spec.
    """
    parts = spec.split(":")
    if not 1 <= len(parts) <= 4 or not parts[0].strip().isdigit():
        raise ValueError(f"device spec {spec!r} is not ID[:REQUEST[:EACH[:SIMS]]]")
    kwargs: dict[str, Any] = {"id": int(parts[0]), "title": f"Simulated phone {parts[0]}"}
    if len(parts) > 1 and parts[1]:
        kwargs["delaybetweenrequest"] = float(parts[1])
    if len(parts) > 2 and parts[2] not in ("", "-"):
        kwargs["delaybetweeneachsms"] = float(parts[2])
    if len(parts) > 3 and parts[3]:
        kwargs["sims"] = tuple(int(s) for s in parts[3].split(","))
    return SimDevice(**kwargs)


def banner(sim: Simulator, *, as_json: bool = False) -> str:
    """The one line announcing a running simulator: URL, credentials, devices."""
    info = sim.info()
    if as_json:
        return json.dumps(info, separators=(",", ":"))
    devices = ",".join(
        f"{d.id}(request={d.delaybetweenrequest}s,each="
        f"{'null' if d.delaybetweeneachsms is None else f'{d.delaybetweeneachsms}s'})"
        for d in sim.devices()
    )
    return (
        f"relay simulator listening url={info['url']} token={info['token']} "
        f"email={info['email']} password={info['password']} devices={devices or 'none'}"
    )


def run_forever(
    host: str,
    port: int,
    devices: list[SimDevice],
    *,
    json_line: bool = False,
    out: TextIO | None = None,
    stop_event: threading.Event | None = None,
    **options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop_event``), then stop cleanly.

    ``options`` go to :class:`Simulator` (``email``, ``password``, ``token``, ``timezone``,
    ``max_records``, ``outcome``, ``seed``, ...). One line with the URL, token, email,
    password and devices is printed to ``out`` (stdout) once listening; ``json_line``
    prints it as a JSON object instead. Signal handlers are installed only when called
    from the main thread. ``OSError`` when the port cannot be listened on.
    """
    stop = stop_event or threading.Event()
    sim = Simulator(devices, **options)
    previous = _install_handlers(stop)
    try:
        sim.start(host, port)
        print(banner(sim, as_json=json_line), file=out or sys.stdout, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        _restore_handlers(previous)


def _install_handlers(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m relay.simulator``."""
    p = argparse.ArgumentParser(
        prog="relay simulator", description="Run a local SMSGateway24 simulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port (printed)")
    p.add_argument(
        "--device",
        action="append",
        type=parse_device,
        metavar="ID[:REQ[:EACH[:SIMS]]]",
        help="a phone; repeatable (default 260:1:0.5 and 261:1:-)",
    )
    p.add_argument("--email", default="demo@example.com")
    p.add_argument("--password", default="demo-pass")
    p.add_argument("--token", default=None, help="initial token (random when omitted)")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--no-report-rate", type=float, default=0.0)
    p.add_argument("--report-delay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the banner as one JSON line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    outcome = OutcomeRule(
        fail_rate=args.fail_rate,
        no_report_rate=args.no_report_rate,
        report_delay=args.report_delay,
        seed=args.seed,
    )
    run_forever(
        args.host,
        args.port,
        list(args.device or DEFAULT_DEVICES),
        json_line=args.json,
        email=args.email,
        password=args.password,
        token=args.token,
        timezone=args.timezone,
        max_records=args.max_records,
        outcome=outcome,
        seed=args.seed,
    )
    return 0
