"""Pulseboard benchmark suite (issue 5): every figure with an in-run baseline.

Run it with ``.venv/bin/python -m bench`` (see ``bench/README.md``).  Benchmarks
are not tests: nothing here asserts a timing; the suite measures and reports.
"""
