"""Worker loops: the Dramatiq worker with its sweeper, and the in-process pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import dramatiq
import structlog

from config import ConfigError
from outbox.error_text import describe_error
from outbox.errors import ReadmodelError, SourceError
from outbox.relay import Relay
from outbox.source_relay import RelayHooks
from outbox.status import source_statuses
from projections.stuck_events import park_stuck
from workers.actors import Actors, Publisher, sweep
from workers.broker_log import describe_broker_error, tame_consumer_errors
from workers.runtime import Runtime
from workers.signals import started
from workers.stuck_exit import HandlerStuck, StuckExit

logger = structlog.get_logger("readmodel.worker")


def run_worker(
    runtime: Runtime,
    broker: dramatiq.Broker,
    stop: threading.Event,
    *,
    threads: int = 8,
    sweep_every: float | None = None,
    actors: Actors | None = None,
) -> None:
    """Consume projection work until ``stop`` is set; re-trigger lagging lanes periodically."""
    actors = actors or Actors(broker, runtime)
    settings = runtime.settings
    grace = settings.shutdown.grace.total_seconds()
    stuck = StuckExit(stop, grace)
    runtime.engine.on_stuck = stuck
    worker = dramatiq.Worker(
        broker,
        queues={settings.broker.queue},
        worker_threads=threads,
        worker_timeout=max(1, int(settings.broker.worker_timeout.total_seconds() * 1000)),
    )
    try:
        park_stuck(runtime.engine)  # events a handler got stuck on at every attempt
    except Exception as exc:
        logger.warning("parking events stuck at every attempt failed", error=describe_error(exc))
    try:
        runtime.engine.redo_invalidations()  # what a crashed worker left undone
    except Exception as exc:
        logger.warning("redoing cache invalidations failed", error=describe_error(exc))
    risk = runtime.cache.eviction_risk() if runtime.cache is not None else None
    if risk is not None:
        logger.warning("cached reads may go stale", reason=risk)
    tame_consumer_errors(settings.broker.url, [settings.broker.queue])
    started()  # takes messages from here on: a signal now is a graceful stop
    worker.start()
    logger.info("worker started", threads=threads, queue=settings.broker.queue)
    interval = settings.engine.sweep_every.total_seconds() if sweep_every is None else sweep_every
    try:
        _sweep_safely(actors)
        while not stop.wait(interval):
            _sweep_safely(actors)
    finally:
        # Lanes stop after the batch in hand; messages not started go back to the broker.
        runtime.engine.stopping.set()
        worker.stop(timeout=max(100, int(grace * 700)))  # ms; leaves time to close
    if stuck.stuck is not None:
        raise HandlerStuck(stuck.message())
    busy = sum(thread.is_alive() for thread in worker.workers)
    if busy:
        raise ShutdownTimeout(
            f"did not stop within {grace:g}s: abandoning the batch in hand of {busy} "
            f"worker thread(s) (rolled back, applied again by the next worker); exiting"
        )
    logger.info("worker stopped")


class ShutdownTimeout(ReadmodelError):
    """Worker threads still applying a batch when ``shutdown.grace`` ran out."""


def run_sweeper(runtime: Runtime, broker: dramatiq.Broker, stop: threading.Event) -> None:
    """Only the sweeper: re-send work for lanes whose checkpoint trails the log head."""
    actors = Actors(broker, runtime)
    interval = runtime.settings.engine.sweep_every.total_seconds()
    started()
    while True:
        _sweep_safely(actors)
        if stop.wait(interval):
            return


def _sweep_safely(actors: Actors) -> None:
    try:
        sent = sweep(actors)
    except Exception as exc:
        logger.warning("sweep failed", error=describe_broker_error(exc))
        return
    if sent:
        logger.debug("sweeper re-triggered lagging lanes", lanes=sent)


def run_pipeline(
    runtime: Runtime,
    broker: dramatiq.Broker,
    stop: threading.Event,
    *,
    threads: int = 8,
    relay_hooks: Iterable[RelayHooks] = (),
) -> None:
    """Relay and worker in one process (``readmodel run``)."""
    actors = Actors(broker, runtime)
    hooks = [Publisher(actors), *relay_hooks]
    relay = Relay(runtime.settings, hooks=hooks, log=runtime.log)
    relay_thread = threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True)
    started()  # the relay claims rows from here on: a signal now is a graceful stop
    relay_thread.start()
    try:
        run_worker(runtime, broker, stop, threads=threads, actors=actors)
    finally:
        stop.set()
        relay_thread.join(timeout=runtime.settings.shutdown.grace.total_seconds())


def run_until_caught_up(runtime: Runtime, *, deadline: float = 3600) -> tuple[int, int]:
    """Relay and apply in this process until every outbox is empty and every projection has
    reached the log head. Returns ``(events relayed, events applied)``."""
    relay = Relay(runtime.settings, log=runtime.log)
    relayed = applied = 0
    stop_at = time.monotonic() + deadline
    while True:
        results = relay.drain()
        relayed += sum(t.relayed for t in results.values())
        applied += runtime.engine.catch_up(deadline=max(1.0, stop_at - time.monotonic()))
        # What the readable sources gave is applied first: one bad tenant stops no other.
        _raise_unreadable([e for t in results.values() if not t.refused for e in t.errors])
        _raise_refused([e for t in results.values() if t.refused for e in t.errors])
        statuses = source_statuses(runtime.settings, runtime.log)
        _raise_unreadable([s.error for s in statuses if s.error and not s.refused])
        _raise_refused([s.error for s in statuses if s.error and s.refused])
        pending = sum(s.undelivered or 0 for s in statuses)
        if pending == 0 and not runtime.engine.lagging():
            return relayed, applied
        if time.monotonic() > stop_at:
            raise TimeoutError("projections did not catch up before the deadline")
        time.sleep(0.05)


def _raise_unreadable(errors: list[str]) -> None:
    """An outbox that cannot be read is not an empty one."""
    if errors:
        raise SourceError("; ".join(errors))


def _raise_refused(errors: list[str]) -> None:
    """A source whose ``binary_ids`` is not the rule the log records, or a registry member
    refused by the configuration (a bad row, or reading another source's or tenant's
    database), is not relayed: the configuration must
    change (exit 2, as ``relay --once`` and ``status``), trying again would not help."""
    if errors:
        raise ConfigError("; ".join(errors))
