"""Scale-out: several processes and instances on PostgreSQL + Redis, one leader.

* ``app.cluster.lease``: the leader lease (a Redis key with an expiry and a fencing token).
* ``app.cluster.link``: the Redis side of one process: tile updates published by the leader
  (fenced by its token), mirrored and fanned out by every process to its own screens; a bounded
  Redis stream per dashboard for resume; which dashboards are watched anywhere in the cluster.

No home-made broker or cluster protocol: Redis carries the updates and the lease, PostgreSQL
keeps the events and makes cuts idempotent (``app.snapshots.cut``).  Without
``PULSEBOARD_REDIS_URL`` none of this runs: one process, ``InMemoryBroker``, always the leader.
"""
