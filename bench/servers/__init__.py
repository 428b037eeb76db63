"""Baseline servers started by the suite as subprocesses (``python -m bench.servers.<name> --port P``)."""
