"""A faithful SMSGateway24 simulator over real HTTP, for tests and the demo.

>>> from relay.simulator import Simulator, SimDevice
>>> with Simulator([SimDevice(id=260, delaybetweenrequest=0.05)]) as sim:
...     sim.url  # doctest: +SKIP
'http://127.0.0.1:54321/getdata/'

Every endpoint of docs/gateway-api.md answers at ``/getdata/<endpoint>``; admin
calls live under ``/_sim/`` (see :mod:`relay.simulator.admin`); faults are injected with
``sim.faults.add(endpoint, kind, times=N | rate=p, delay=s)`` (see
:mod:`relay.simulator.faults`).
"""

from __future__ import annotations

from relay.simulator.cli import DEFAULT_DEVICES, main, parse_device, run_forever
from relay.simulator.devices import SimDevice
from relay.simulator.faults import Fault, FaultInjector
from relay.simulator.messages import LedgerEntry, RequestInfo
from relay.simulator.outcomes import (
    FAILURE_CODES,
    FINAL_CODES,
    NOT_SENT_CODES,
    STATUS_DESCRIPTIONS,
    STATUS_TITLES,
    OutcomeRule,
    normalise_phone,
)
from relay.simulator.simulator import Simulator

__all__ = [
    "DEFAULT_DEVICES",
    "FAILURE_CODES",
    "FINAL_CODES",
    "NOT_SENT_CODES",
    "STATUS_DESCRIPTIONS",
    "STATUS_TITLES",
    "Fault",
    "FaultInjector",
    "LedgerEntry",
    "OutcomeRule",
    "RequestInfo",
    "SimDevice",
    "Simulator",
    "main",
    "normalise_phone",
    "parse_device",
    "run_forever",
]
