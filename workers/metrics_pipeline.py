"""The figures ``readmodel metrics`` reads from the pipeline at each scrape (lag, parked
events, outbox backlog, queue depth), beside the counters of :mod:`workers.metrics`.

:class:`PipelineCollector` is registered by :func:`workers.metrics.serve`; prometheus_client is
imported per scrape, once :func:`workers.metrics.enable_recording` has decided where it
writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from workers.parts import Running
from workers.runtime import Runtime

logger = structlog.get_logger("readmodel.metrics")

__all__ = ["PipelineCollector"]


class PipelineCollector:
    """Lag, parked events, outbox backlog and queue depth, read from the pipeline per scrape."""

    def __init__(
        self, runtime: Runtime, timeout: float = 5.0, schema: Callable[[], bool] | None = None
    ) -> None:
        self.runtime = runtime
        self.timeout = timeout
        self.schema = schema  # checks the stores' revision until they answer (metrics_schema)
        self._lock = threading.Lock()
        self._running = Running()  # reads a hung store keeps going: awaited by the next scrape

    def describe(self) -> list[Any]:
        return []  # figures depend on the configuration; don't collect at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from outbox.errors import ReadmodelError
        from workers.status import collect
        from workers.status_report import StoreStatus

        def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=list(labels))

        store_up = gauge(
            "readmodel_store_up", "1 when the read store answered this scrape.", "store"
        )
        with self._lock:
            if self.schema is not None:
                self.schema()
            try:
                # not the overdue board: readmodel_handlers_overdue is the workers' own gauge
                report = collect(
                    self.runtime, timeout=self.timeout, overdue=False, running=self._running
                )
            except ReadmodelError as exc:  # a store that answers with an error (no table)
                logger.warning("metrics: cannot read the pipeline", error=str(exc))
                store_up.add_metric(["default"], 0)
                yield store_up
                return
        for store in report.stores or [StoreStatus("default", "", [])]:
            store_up.add_metric([store.store], 0 if store.error else 1)
            if store.error:
                logger.warning("metrics: cannot read a store", error=store.error)
        yield store_up

        source_up = gauge("readmodel_source_up", "1 when the source answered.", "source")
        undelivered = gauge(
            "readmodel_outbox_undelivered", "Outbox rows not yet relayed.", "source"
        )
        oldest = gauge(
            "readmodel_outbox_oldest_age_seconds",
            "Age of the oldest undelivered row (0: none waits; no sample while rows without "
            "a time wait).",
            "source",
        )
        head = gauge("readmodel_log_head", "Position of the last event in the log.", "source")
        rows_parked = gauge("readmodel_outbox_parked", "Malformed outbox rows parked.", "source")
        for s in report.sources:
            source_up.add_metric([s.source], 0 if s.error else 1)
            if s.log_head is not None:  # neither is known when the log cannot be read
                head.add_metric([s.source], s.log_head)
            if s.parked is not None:
                rows_parked.add_metric([s.source], s.parked)
            if s.undelivered is not None:  # not known when the source did not answer
                undelivered.add_metric([s.source], s.undelivered)
            age = s.oldest_undelivered_age_seconds
            if age is not None or s.undelivered == 0:  # rows without a time: not known
                oldest.add_metric([s.source], age or 0.0)
        yield from (source_up, undelivered, oldest, head, rows_parked)

        lag_events = gauge(
            "readmodel_projection_lag_events",
            "Events of the source the projection has still to apply (its partitions' own, of "
            "the types it reads, past their checkpoints).",
            "projection",
            "source",
        )
        lag_seconds = gauge(
            "readmodel_projection_lag_seconds",
            "Age of the oldest log event the projection has not applied (0 when caught up).",
            "projection",
            "source",
        )
        parked = gauge(
            "readmodel_projection_parked_events", "Events parked by failing handlers.", "projection"
        )
        for p in report.projections:
            for source, (events, seconds) in sorted(p.by_source().items()):
                lag_events.add_metric([p.projection, source], events)
                lag_seconds.add_metric([p.projection, source], seconds or 0.0)
            parked.add_metric([p.projection], p.parked)
        yield from (lag_events, lag_seconds, parked)

        broker = report.broker
        if broker.broker != "memory":
            up = gauge("readmodel_broker_up", "1 when the broker answered.", "queue")
            up.add_metric([broker.queue], 0 if broker.error else 1)
            yield up
            depth = gauge(
                "readmodel_broker_queue_messages",
                "Messages of the queue by state (in_progress: fetched by a worker, not acked).",
                "queue",
                "state",
            )
            for state in ("ready", "in_progress", "delayed", "dead"):
                value = getattr(broker, state)
                if value is not None:
                    depth.add_metric([broker.queue, state], value)
            yield depth
