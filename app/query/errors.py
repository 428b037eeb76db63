"""The error of a read that cannot be answered (shared by the KPI, time-weighted, drill-down
and tile reads; the HTTP layer maps it to 422)."""

from __future__ import annotations


class QueryError(ValueError):
    """A read asked for something that cannot be answered (names the parameter)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
