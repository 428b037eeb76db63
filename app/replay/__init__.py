"""Replays of real operational logs through the HTTP API (CONTRACT §1, §5)."""
