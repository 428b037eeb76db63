"""Reads that join the pure engine (``app.metrics``) to the store: KPI values and series
(``kpis``), live dashboard tiles (``tiles``).

Exception tree (answered by ``app.api.problems``)::

    QueryError (a ValueError)   422  a read asked for something that cannot be answered (names the parameter)
"""
