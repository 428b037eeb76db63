"""Reads that join the pure engine (``app.metrics``) to the store: KPI values and series
(``kpis``), live dashboard tiles (``tiles``)."""
