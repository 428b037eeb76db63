"""End-of-day and month-end snapshots, reconciliation and scorecards.

- ``schedule``: when a cut fires (local wall time, DST-safe) and which period it covers.
- ``cut``: compute and store an immutable, versioned snapshot; restatements.
- ``reconcile``: the product checks its own numbers (raw vs rollups, month vs days,
  live tiles vs the day's snapshot).
- ``scorecard``: monthly scorecards, commentary, publishing, review agenda.
- ``service``: the scheduler that runs cuts (with catch-up) and restatements.

Exception tree::

    SnapshotError
     ├── NotCut              the period has no snapshot yet (-> 404)
     ├── PeriodNotClosed     the period has not ended yet; it cannot be cut
     └── ScorecardLocked     the scorecard is published, or cannot be yet (-> 409 / 422)
"""


class SnapshotError(Exception):
    """Base of snapshot errors."""


class NotCut(SnapshotError):
    """No snapshot exists for that dashboard, grain and period."""


class PeriodNotClosed(SnapshotError):
    """The period has not ended yet."""


class ScorecardLocked(SnapshotError):
    """A published scorecard cannot change; or publishing is refused (``missing`` lists why)."""

    def __init__(self, message: str, missing: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = missing or []
