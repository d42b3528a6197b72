"""Prometheus metrics: counters recorded by every process, figures read at scrape time.

Relay and workers are separate processes, so what they count (events relayed and applied,
batch sizes, apply latency, cache hits, Dramatiq messages) goes through prometheus_client's
multiprocess mode: each process writes its values to files in one directory
(``metrics.dir``, or ``PROMETHEUS_MULTIPROC_DIR``) and ``readmodel metrics`` adds them up.
Lags, parked events and queue depths are instead read from the store, the sources and the
broker when Prometheus scrapes (:mod:`workers.metrics_pipeline`), so they are right even
without that directory.

prometheus_client decides at import time whether it writes to that directory: call
:func:`instrument` (or :func:`enable_recording`) before anything imports it. This module
imports it lazily for that reason.
"""

from __future__ import annotations

import atexit
import glob
import os
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import dramatiq
import structlog

from config import ConfigError, Settings
from outbox.log import AppendResult
from outbox.relay import RelayHooks
from projections.cache import CacheHooks
from projections.engine import EngineHooks
from projections.store import BatchResult, Lane
from workers.metrics_pipeline import PipelineCollector
from workers.metrics_timeouts import TimeoutMetrics
from workers.runtime import Runtime
from workers.signals import started

logger = structlog.get_logger("readmodel.metrics")

BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MS_BUCKETS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000, 60000)


def multiprocess_dir(settings: Settings) -> str | None:
    return settings.metrics.dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def enable_recording(settings: Settings) -> bool:
    """Point prometheus_client at the shared directory; False when none is configured."""
    directory = multiprocess_dir(settings)
    if not directory:
        return False
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration:\n  {_set_by(settings)}: metrics.dir: {directory!r} "
            f"cannot be the metrics directory: {exc.strerror or exc}"
        ) from None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.abspath(directory)
    return True


def _set_by(settings: Settings) -> str:
    """Where the metrics directory was set: a variable, else the config file."""
    if not settings.metrics.dir:
        return "environment variable PROMETHEUS_MULTIPROC_DIR"
    variable = settings.variable_for("metrics", "dir")
    if variable is not None:
        return f"environment variable {variable}"
    return settings.config_file or "settings"


@cache
def _metrics() -> dict[str, Any]:
    """The recorded metrics, created once per process (prometheus_client imported here)."""
    from prometheus_client import Counter, Gauge, Histogram

    def counter(name: str, doc: str, *labels: str) -> Any:
        return Counter(name, doc, list(labels))

    return {
        "relayed": counter("readmodel_events_relayed", "Events appended to the log.", "source"),
        "duplicates": counter(
            "readmodel_events_duplicate", "Outbox rows the log already had.", "source"
        ),
        "rows_parked": counter(
            "readmodel_outbox_rows_parked", "Outbox rows parked as malformed.", "source"
        ),
        "relay_batch": Histogram(
            "readmodel_relay_batch_size",
            "Outbox rows per relay batch.",
            ["source"],
            buckets=BATCH_BUCKETS,
        ),
        "applied": counter(
            "readmodel_events_applied", "Events applied to read models.", "projection", "source"
        ),
        "held": counter(
            "readmodel_events_held",
            "Events parked behind an earlier parked event of their aggregate.",
            "projection",
            "source",
        ),
        "apply_batch": Histogram(
            "readmodel_apply_batch_size",
            "Events per apply transaction.",
            ["projection"],
            buckets=BATCH_BUCKETS,
        ),
        "apply_seconds": Histogram(
            "readmodel_apply_seconds",
            "Time of one apply transaction (read, handle, commit).",
            ["projection"],
            buckets=SECONDS_BUCKETS,
        ),
        "cache_hits": counter("readmodel_cache_hits", "Cache hits.", "projection"),
        "cache_misses": counter("readmodel_cache_misses", "Cache misses.", "projection"),
        "cache_invalidations": counter(
            "readmodel_cache_invalidated_tags", "Cache tags invalidated.", "projection"
        ),
        "cache_fallbacks": counter(
            "readmodel_cache_fallbacks",
            "Reads served from the read model because the cache was unreachable.",
            "projection",
        ),
        "messages": counter("dramatiq_messages", "Messages processed.", "queue_name", "actor_name"),
        "message_errors": counter(
            "dramatiq_message_errors", "Messages that raised.", "queue_name", "actor_name"
        ),
        "message_retries": counter(
            "dramatiq_message_retries", "Messages retried.", "queue_name", "actor_name"
        ),
        "message_rejects": counter(
            "dramatiq_message_rejects", "Messages dead-lettered.", "queue_name", "actor_name"
        ),
        "inprogress": Gauge(
            "dramatiq_messages_inprogress",
            "Messages being processed.",
            ["queue_name", "actor_name"],
            multiprocess_mode="livesum",
        ),
        "message_ms": Histogram(
            "dramatiq_message_duration_milliseconds",
            "Time spent processing messages.",
            ["queue_name", "actor_name"],
            buckets=MS_BUCKETS,
        ),
    }


class RelayMetrics(RelayHooks):
    def __init__(self) -> None:
        self.m = _metrics()

    def after_append(self, source: str, result: AppendResult) -> None:
        self.m["relayed"].labels(source).inc(result.appended)
        if result.duplicates:
            self.m["duplicates"].labels(source).inc(result.duplicates)
        if result.parked:
            self.m["rows_parked"].labels(source).inc(result.parked)
        self.m["relay_batch"].labels(source).observe(
            result.appended + result.duplicates + result.parked
        )


class EngineMetrics(TimeoutMetrics, EngineHooks):
    def __init__(self) -> None:
        self.m = _metrics()

    def after_batch(self, lane: Lane, result: BatchResult, seconds: float) -> None:
        m = self.m
        m["applied"].labels(lane.projection, lane.source).inc(result.applied)
        if result.parked:
            m["held"].labels(lane.projection, lane.source).inc(result.parked)
        m["apply_batch"].labels(lane.projection).observe(result.applied + result.parked)
        m["apply_seconds"].labels(lane.projection).observe(seconds)


class CacheMetrics(CacheHooks):
    def __init__(self) -> None:
        self.m = _metrics()

    def hit(self, projection: str) -> None:
        self.m["cache_hits"].labels(projection).inc()

    def miss(self, projection: str) -> None:
        self.m["cache_misses"].labels(projection).inc()

    def invalidated(self, projection: str, tags: int) -> None:
        self.m["cache_invalidations"].labels(projection).inc(tags)

    def fallback(self, projection: str, error: BaseException) -> None:
        self.m["cache_fallbacks"].labels(projection).inc()


class DramatiqMetrics(dramatiq.Middleware):
    """Dramatiq's message metrics (the names of its Prometheus middleware), recorded into
    readmodel's multiprocess directory instead of Dramatiq's own exposition server."""

    def __init__(self) -> None:
        self.m = _metrics()
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.m["inprogress"].labels(message.queue_name, message.actor_name).inc()
        self._started[message.message_id] = time.monotonic()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, None)
        if started is not None:
            self.m["message_ms"].labels(*labels).observe((time.monotonic() - started) * 1000)
            self.m["inprogress"].labels(*labels).dec()
        self.m["messages"].labels(*labels).inc()
        if exception is not None:
            self.m["message_errors"].labels(*labels).inc()

    after_skip_message = after_process_message

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        self.m["message_rejects"].labels(message.queue_name, message.actor_name).inc()

    def after_enqueue(self, broker: dramatiq.Broker, message: Any, delay: Any) -> None:
        if "retries" in message.options:
            self.m["message_retries"].labels(message.queue_name, message.actor_name).inc()


def instrument(
    settings: Settings, *, runtime: Runtime | None = None, broker: dramatiq.Broker | None = None
) -> list[RelayHooks]:
    """Record this process's metrics when a multiprocess directory is configured: engine and
    cache hooks on ``runtime``, message metrics on ``broker``. Returns the relay hooks to add."""
    if not enable_recording(settings):
        return []
    if runtime is not None:
        runtime.engine.hooks = EngineMetrics()
        if runtime.cache is not None:
            runtime.cache.hooks = CacheMetrics()
    if broker is not None:
        broker.add_middleware(DramatiqMetrics())
    atexit.register(_mark_dead, os.getpid())
    return [RelayMetrics()]


def _mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        multiprocess.mark_process_dead(pid, directory)


# -- exposition ----------------------------------------------------------------------


class LiveMultiprocessFigures:
    """The counters, histograms and gauges of the multiprocess directory, without the live
    gauges (messages in progress) of processes that died without cleaning up (SIGKILL, the
    OOM killer): prometheus_client drops a process's live gauges only at its normal exit."""

    def __init__(self, directory: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        self._figures = MultiProcessCollector(None, path=directory)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        forget_dead_processes(self.directory)
        return self._figures.collect()


def forget_dead_processes(directory: str) -> list[int]:
    """Remove the live-gauge files of processes no longer running on this machine (every
    process sharing ``metrics.dir`` runs on one machine); returns their pids."""
    from prometheus_client import multiprocess

    dead = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = os.path.basename(path)[: -len(".db")].rpartition("_")[2]
        if pid.isdigit() and not _running(int(pid)):
            dead.add(int(pid))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, directory)
    return sorted(dead)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def serve(
    runtime: Runtime,
    host: str,
    port: int,
    stop: threading.Event,
    schema: Callable[[], bool] | None = None,
    timeout: float = 5.0,
) -> None:
    """Serve ``/metrics`` on ``host:port`` until ``stop`` is set; ``schema`` is called
    before each scrape (:class:`workers.metrics_schema.SchemaGate`), which reads each part
    of the pipeline within ``timeout`` seconds."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    directory = multiprocess_dir(runtime.settings)
    if directory:
        registry.register(LiveMultiprocessFigures(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    registry.register(PipelineCollector(runtime, timeout, schema=schema))
    server, thread = start_http_server(port, addr=host, registry=registry)
    started()  # serves from here on: a signal now is a graceful stop
    logger.info("serving metrics", host=host, port=port, multiprocess_dir=directory)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        logger.info("metrics server stopped")
