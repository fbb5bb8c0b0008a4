"""Benchmarks for aiooss_resume (``python -m benchmarks <name>``; ``nox -s bench``).

Never part of the test gate. Every benchmark talks only to 127.0.0.1, keeps its big files in a
temporary directory that it removes, and saves what it measured under ``benchmarks/results/``.
See ``docs/benchmarks.md`` for the method and the measured figures.
"""
