"""Pulseboard: a real-time operations dashboard server.

Data flows one way (see DESIGN.md): ``app.ingest`` parses and validates events,
``app.store`` writes raw events and 1-minute rollup partials in one transaction,
``app.metrics`` (pure, no I/O) defines KPIs and merges partials into windows,
``app.ws`` pushes live tiles, ``app.api`` serves REST reads.
"""

__version__ = "0.1.0"
