"""``Idempotency-Key`` requests in flight in this process (a second one with the same key gets 409)."""

from __future__ import annotations


class IdempotencyKeys:
    """Requests in flight per ``(owner, key)`` in this process (a second one gets 409).

    ``in_flight`` holds ``(owner key id, Idempotency-Key)`` pairs while their request is being
    stored; the stored answers themselves live in the ``idempotency_key`` table.
    """

    def __init__(self) -> None:
        self.in_flight: set[tuple[str, str]] = set()
