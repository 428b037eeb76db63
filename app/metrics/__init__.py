"""The KPI model and rollup engine: pure functions, no I/O.

- ``calendar``: UTC microsecond instants and local calendar periods.
- ``sketch``: a mergeable quantile sketch with a stated error bound.
- ``partials``: additive 1-minute partial aggregates and their merge.
- ``pack``: KPI packs (measures, KPIs, dashboards) loaded from YAML.
- ``rollup``: events -> partials, keyed by (measure, dim_key, bucket).
- ``evaluate``: KPI value, components and RAG status from merged partials.

Exception tree::

    MetricsError
     └── PackError          a KPI pack is malformed (names the file and key)
"""


class MetricsError(Exception):
    """Base of every error raised by ``app.metrics``."""


class PackError(MetricsError):
    """A KPI pack is malformed; the message names the pack, the key and why."""
