"""Shared fixtures live in tests/fixtures/, one module per thing they provide."""

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.simulator",
    "tests.fixtures.workers",
]
