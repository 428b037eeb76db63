"""End-of-day and month-end snapshots, reconciliation and scorecards.

- ``schedule``: when a cut fires (local wall time, DST-safe) and which period it covers.
- ``cut``: compute and store an immutable, versioned snapshot; restatements.
- ``reconcile``: the product checks its own numbers (raw vs rollups, month vs days,
  live tiles vs the day's snapshot).
- ``scorecard``: monthly scorecards, commentary, publishing, review agenda.
- ``service``: the scheduler that runs cuts (with catch-up) and restatements.

Exception tree (each maps to one problem+json answer, ``app.api.problems``)::

    SnapshotError
     ├── NotCut              404  no such dashboard, or the period has no snapshot yet
     │    └── NoSuchPeriod   404  the label names no period of the grain (also a ValueError)
     ├── PeriodOutOfRange    422  a valid date outside the supported calendar (before 1900, from 9000 on)
     ├── PeriodNotClosed     409  the period has not ended yet; it cannot be cut
     ├── ScorecardLocked     409  the scorecard is published (notes are locked)
     │                       422  ... or cannot be published yet: ``missing`` lists the red KPIs without a note
     └── InvalidNote         422  a note that is blank or too long (also a ValueError)
"""


class SnapshotError(Exception):
    """Base of snapshot errors."""


class NotCut(SnapshotError):
    """No snapshot exists for that dashboard, grain and period."""


class NoSuchPeriod(NotCut, ValueError):
    """The period label is not one of its grain (``YYYY-MM-DD`` for days, ``YYYY-MM`` for months)."""


class PeriodOutOfRange(SnapshotError, ValueError):
    """A well-formed period label outside the supported calendar (``app.metrics.calendar``:
    1900 to 9000), such as year 1 or year 9999, whose instants cannot be computed in every zone."""


class PeriodNotClosed(SnapshotError):
    """The period has not ended yet."""


class ScorecardLocked(SnapshotError):
    """A published scorecard cannot change; or publishing is refused (``missing`` lists why)."""

    def __init__(self, message: str, missing: list[str] | None = None, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.reasons = reasons or {}  # KPI -> why it blocks (default: "is red and has no note")


class InvalidNote(SnapshotError, ValueError):
    """A commentary note that is blank (once stripped) or longer than allowed."""
