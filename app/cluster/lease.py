"""The leader lease: one process of the cluster does the work that must happen once.

A Redis key ``<prefix>:leader`` holds the leader's fencing token (a number from ``INCR
<prefix>:fence``, so every new leader's token is greater than any before it) and expires
``lease_s`` after its last renewal (``SET NX PX`` to take it, a compare-and-``PEXPIRE`` script to
renew it, every third of the lease).  A leader that dies stops renewing: another process takes the
key within ``lease_s`` plus a third of it.  A leader that cannot reach Redis steps down by itself
once ``0.9 × lease_s`` have passed since its last renewal was sent, before anyone else may hold
the key; everything it publishes is checked against its token inside Redis
(``app.cluster.link``), so a leader that was paused past its lease publishes nothing.

This is the single-instance Redis lock pattern (Redis docs "Distributed Locks with Redis",
the single-instance case) with a fencing token as Kleppmann recommends; cuts and restatements are
also idempotent in the database (``app.snapshots.cut``), so work a dead leader had started is
redone by the next one, never stored twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """Leadership of one process, by an expiring Redis key holding a fencing token.

    Args:
        redis: the process's Redis client.
        prefix: key prefix (``PULSEBOARD_REDIS_PREFIX``).
        lease_s: the lease (``PULSEBOARD_LEADER_LEASE_S``).
        on_gain: awaited when this process becomes the leader.
        on_lose: awaited when it stops being the leader (lost, expired or stopped).

    Attributes:
        token: the fencing token while leading, else ``None``.
        transitions: how many times leadership was gained (metrics, tests).
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        lease_s: float,
        on_gain: Callable[[], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self.key = f"{prefix}:leader"
        self._fence_key = f"{prefix}:fence"
        self._lease_ms = int(lease_s * 1000)
        self._lease_s = lease_s
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self.token: str | None = None
        self._renewed_at_s = 0.0
        self.transitions = 0

    @property
    def leading(self) -> bool:
        """Whether this process holds the lease now (and its last renewal is recent enough)."""
        return self.token is not None and time.monotonic() - self._renewed_at_s < 0.9 * self._lease_s

    async def run(self) -> None:
        """Forever: take the lease when free, renew it while held, every third of the lease."""
        period_s = self._lease_s / 3
        while True:
            await self.step()
            await asyncio.sleep(period_s)

    async def step(self) -> None:
        """One round: renew (leader) or try to take (follower); steps down on loss or expiry."""
        sent_s = time.monotonic()
        try:
            if self.token is not None:
                if await self._renew(keys=[self.key], args=[self.token, self._lease_ms]):
                    self._renewed_at_s = sent_s
                else:
                    log.warning("leader lease lost (token %s): stepping down", self.token)
                    await self._lost()
            else:
                token = str(await self._redis.incr(self._fence_key))
                if await self._redis.set(self.key, token, nx=True, px=self._lease_ms):
                    self.token = token
                    self._renewed_at_s = sent_s
                    self.transitions += 1
                    log.info("became the leader (fencing token %s)", token)
                    await self._on_gain()
        except (RedisError, OSError) as exc:
            if self.token is not None and time.monotonic() - self._renewed_at_s >= 0.9 * self._lease_s:
                log.warning("leader lease not renewed for %.1f s (%s): stepping down", 0.9 * self._lease_s, exc)
                await self._lost()
            else:
                log.debug("lease round failed: %s", exc)

    async def _lost(self) -> None:
        if self.token is None:
            return
        self.token = None
        await self._on_lose()

    async def release(self) -> None:
        """Give the lease up now (clean shutdown): another process takes over at its next round."""
        token = self.token
        if token is None:
            return
        await self._lost()
        try:
            await self._release(keys=[self.key], args=[token])
        except (RedisError, OSError) as exc:
            log.info("could not release the leader lease (%s); it expires by itself", exc)
