"""The readiness check of the store behind ``GET /readyz``: one ``SELECT 1`` shared by concurrent polls."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def _retrieve(task: asyncio.Task[None]) -> None:
    """Retrieve a finished check's exception, so asyncio never logs it as never retrieved."""
    if not task.cancelled():
        task.exception()


class ReadinessProbe:
    """Whether the store answers, checked by one ``SELECT 1`` at a time.

    Concurrent callers share the check in flight; a check that outlives a caller's wait goes on
    in the background (the next caller joins it, or starts a new one once it has ended), so a
    database that hangs costs one connection attempt, not one per poll.

    Args:
        engine: the store.

    Lifecycle: ``check()`` any number of times, then ``aclose()`` (the lifespan's shutdown),
    which cancels a check still in flight.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._task: asyncio.Task[None] | None = None

    async def _ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def check(self, timeout_s: float) -> str | None:
        """Wait up to ``timeout_s`` seconds for the store to answer.

        Returns:
            ``None`` when it answered; else the reason it is not ready: ``"Timeout"``, or the class
            name of the error the check raised (e.g. ``"OperationalError"``).
        """
        task = self._task
        if task is None or task.done():
            task = self._task = asyncio.create_task(self._ping(), name="readiness-probe")
            task.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            return "Timeout"
        if task.cancelled():
            return "Cancelled"
        failure = task.exception()
        return None if failure is None else type(failure).__name__

    async def aclose(self) -> None:
        """Cancel a check still in flight and wait for it to end."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
