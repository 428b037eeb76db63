"""Live tiles over WebSocket (CONTRACT §4).

``hub.TileHub`` recomputes each watched dashboard at most once per
``tile_interval_ms`` when its data changed, diffs tiles, and publishes one
pre-encoded update per dashboard through a ``broker.Broker``.  Each screen has
its own bounded, latest-value-wins ``broker.Subscription`` and its own sender
task, so a slow or dead screen never delays the others.
"""
