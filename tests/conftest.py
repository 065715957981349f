"""Shared fixtures live in tests/fixtures/, one module per thing they provide."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.simulator",
    "tests.fixtures.workers",
    "tests.fixtures.context",
    "tests.fixtures.http",
]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults and the root logger as it was:
    a command run in-process (``relay.log.configure``) must not filter the next test's logs."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
