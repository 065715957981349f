"""``relay bench``: relay measured beside plain RQ, on a real Redis and the simulator.

:func:`relay.bench.suite.run` makes the measurements a :class:`~relay.bench.config.BenchConfig`
names, one module each (``enqueue``, ``memory``, ``endtoend``, ``latency``, ``calls``,
``scaleout``, ``reconcile``), and returns :class:`~relay.bench.report.Results`, which
:mod:`relay.bench.report` prints as a table and writes as JSON. Every measurement runs on
a key prefix of its own and deletes its keys afterwards.

This package imports nothing heavy itself, so ``relay --help`` stays quick.
"""
