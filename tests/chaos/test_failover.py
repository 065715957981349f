"""Chaos: a Sentinel failover (the primary cut off from its replicas, then SIGKILLed) while
sends and dispatch go on, with ``RELAY_REDIS_MIN_REPLICAS=1``: nothing acknowledged is lost,
nothing is stored at the gateway twice, and no relay process needs a restart.

Size: ``RELAY_CHAOS_SIZE`` messages (CI: 300; ``RELAY_CHAOS_SIZE=20000`` for the long run).
The scenario is :mod:`tests.chaos.failover`; without ``MIN_REPLICAS`` it is run by hand
(``python -m tests.chaos.failover --min-replicas 0``), since what is lost then depends on
timing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.failover import run_failover
from tests.fixtures.replication import require_redis_server

SIZE = int(os.environ.get("RELAY_CHAOS_SIZE", "300"))
SEED = int(os.environ.get("RELAY_CHAOS_SEED", "20261205"))

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(max(600, SIZE // 5))]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RELAY_SKIP_CHAOS") == "1", reason="RELAY_SKIP_CHAOS=1")
def test_a_failover_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    require_redis_server()
    report = run_failover(tmp_path, size=SIZE, min_replicas=1, isolate_s=1.0, seed=SEED)
    print(report.line(), dict(report.errors))
    assert report.kills == 1
    assert report.gave_up == 0, report
    assert report.acknowledged == SIZE, report
    assert report.lost == 0, report
    assert report.duplicated == 0, report
    assert report.mismatched == 0, report
    assert report.processes_exited == 0, report  # followed the new primary, no restart
