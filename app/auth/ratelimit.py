"""Per-key request rate limit (token bucket): past it, ingest answers 429 with Retry-After.

Each key may make ``rate_per_s`` requests a second on average, in bursts of ``burst``.
State is per process (one bucket per key id; idle buckets are dropped).
"""

from __future__ import annotations

import math
import time


class RateLimiter:
    """Token buckets by key id.

    Args:
        rate_per_s: sustained requests per second per key.
        burst: bucket size (requests allowed at once).
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}

    def try_acquire(self, key_id: str, now: float | None = None) -> float:
        """Take one token for ``key_id``; return 0.0, or the seconds to wait when none is left."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            if len(self._buckets) > 100_000:  # forget idle keys (their buckets are full anyway)
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate_per_s

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """A ``Retry-After`` value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait_s)))
