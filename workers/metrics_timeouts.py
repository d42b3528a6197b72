"""Metrics of handlers that pass ``engine.handler_timeout`` (``projections/handler_timeout.py``).

A handler blocked outside Python (a socket read without a timeout) cannot be interrupted:
its lane waits until it returns or the worker restarts, which only the lag and a log line
showed. Each worker process records, in the multiprocess directory like its other figures:

- ``readmodel_handler_timeouts_total{projection}``: handlers that passed the bound;
- ``readmodel_handlers_overdue{projection}``: handlers running past it now (being
  interrupted, or stuck). A ``livesum`` gauge: the sum over the processes alive, so a
  worker killed (or restarted) with a stuck handler stops counting it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from projections.handler_timeout import TimeoutHooks


@cache
def _metrics() -> dict[str, Any]:
    """Created once per process (prometheus_client imported here, after the multiprocess
    directory is set: :func:`workers.metrics.instrument`)."""
    from prometheus_client import Counter, Gauge

    return {
        "timeouts": Counter(
            "readmodel_handler_timeouts",
            "Event handlers that ran past engine.handler_timeout.",
            ["projection"],
        ),
        "overdue": Gauge(
            "readmodel_handlers_overdue",
            "Event handlers running past engine.handler_timeout now (being interrupted, or "
            "blocked where they cannot be: their lane waits).",
            ["projection"],
            multiprocess_mode="livesum",
        ),
    }


class TimeoutMetrics(TimeoutHooks):
    """The engine hooks recording them (a base of :class:`workers.metrics.EngineMetrics`)."""

    def handler_overdue(self, projection: str, thread: int) -> None:
        m = _metrics()
        m["timeouts"].labels(projection).inc()
        m["overdue"].labels(projection).inc()

    def handler_back(self, projection: str, thread: int) -> None:
        _metrics()["overdue"].labels(projection).dec()
