"""Live tiles over WebSocket (CONTRACT §4).

``hub.TileHub`` recomputes each watched dashboard at most once per
``tile_interval_ms`` when its data changed, diffs tiles, and publishes one
update per dashboard through a ``broker.Broker``.  The update's WebSocket frame
is encoded once and written straight to every screen's socket
(``transport.DirectWebSocketProtocol``); a screen whose socket is full is held
to one merged, latest-value-wins update and closed (4008) if it stays full, so a
slow or dead screen never delays the others.
"""
