"""Token buckets: the one rate limit used for ingest requests per key (past it: 429 with
``Retry-After``) and for the messages a wall screen sends (past it: closed with 1008).

A bucket holds at most ``burst`` tokens and refills at ``rate_per_s`` tokens a second; each
request (or message) takes one.  Instants are seconds on a monotonic clock, passed in by the
caller (``time.monotonic()``, the event loop's ``time()``, or a test's own numbers).
State is per process.
"""

from __future__ import annotations

import time

IDLE_BUCKETS_KEPT = 100_000
"""Buckets kept by a ``RateLimiter`` before those idle for ``IDLE_FORGET_S`` are dropped."""
IDLE_FORGET_S = 60.0


class TokenBucket:
    """One token bucket.

    Args:
        rate_per_s: tokens added a second (the sustained rate); > 0.
        burst: most tokens held (taken at once); at least 1.
        now: the instant the bucket starts full (s, monotonic).
    """

    __slots__ = ("burst", "last", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.last = now

    def take(self, now: float, amount: float = 1.0) -> float:
        """Take ``amount`` tokens (default one) at ``now`` (s, monotonic).

        Returns:
            0.0 when they were taken, else the seconds until they will be there (nothing taken).
        """
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate_per_s)
        self.last = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate_per_s


class RateLimiter:
    """Token buckets by key id (ingest requests per key).

    Args:
        rate_per_s: sustained requests per second per key.
        burst: bucket size (requests allowed at once).
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, TokenBucket] = {}

    def try_acquire(self, key_id: str, now: float | None = None) -> float:
        """Take one token for ``key_id`` at ``now`` (s, monotonic; default: ``time.monotonic()``).

        Returns:
            0.0, or the seconds to wait when none is left.
        """
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = TokenBucket(self.rate_per_s, self.burst, now)
            if len(self._buckets) > IDLE_BUCKETS_KEPT:  # forget idle keys (their buckets are full anyway)
                self._buckets = {k: b for k, b in self._buckets.items() if now - b.last < IDLE_FORGET_S}
        return bucket.take(now)
