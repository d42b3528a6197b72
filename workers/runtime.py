"""Everything a readmodel process needs, built once from settings: log, stores, projections,
the projection engine. Plain objects; the broker is wired on top in ``workers/actors.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from config import ConfigError, Settings
from outbox.db import create_engine
from outbox.log import EventLog
from outbox.migrate import START_AGAIN, upgrade
from outbox.source_groups import configured_groups
from projections.api import load_projections
from projections.cache import Cache, open_cache
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.sql_store import SqlStore
from projections.store import Store
from projections.stores import open_store
from projections.subscriptions import unfed_subscriptions


@dataclass
class Runtime:
    settings: Settings
    log: EventLog
    engine: ProjectionEngine

    @property
    def cache(self) -> Cache | None:
        """The query cache of ``[cache]`` (``None`` without one); the engine invalidates it."""
        return self.engine.cache

    def close(self) -> None:
        self.engine.close()
        if self.engine.cache is not None:
            self.engine.cache.close()
        self.log.close()


def build_runtime(
    settings: Settings,
    *,
    create_tables: bool = True,
    migrate: bool = True,
    threads: int = 8,
    check_sources: bool = True,
) -> Runtime:
    """Open the log and stores and load the configured projections.

    ``create_tables`` creates the read models' tables; with ``migrate`` (in-process use,
    tests, the demo) the stores are first migrated to head. The CLI checks the revision
    instead (``readmodel migrate`` upgrades) and passes ``migrate=False``.

    ``threads`` is how many threads apply batches at once: each holds its batch's
    connection while it reads the log on another, so the pool holds two per thread.

    Without ``check_sources`` (``status``, ``health``) the projections' sources are not
    checked here: the caller runs :func:`check_subscriptions` while it reads its report, so a log
    that does not answer (asked for a source only it may know) costs one wait, not two.
    """
    log = EventLog(settings.store.url, engine=create_engine(settings.store.url, **_pool(threads)))
    try:
        projections = load_projections(settings.projections, settings.store_urls)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.close()
        where = settings.config_file or "settings"
        raise ConfigError(
            f"invalid configuration:\n  {where}: projections: cannot load "
            f"{settings.projections}: {exc}"
        ) from exc
    if check_sources:
        try:
            _check_subscriptions(settings, projections, log)
        except BaseException:
            log.close()
            raise
    default = SqlStore(settings.store.url, engine=log.engine, label=settings.store_label("default"))
    stores: dict[str, Store] = {"default": default}
    for name, store_settings in settings.stores.items():
        if name != "default":
            label = settings.store_label(name)
            stores[name] = open_store(store_settings.url, label=label, **_pool(threads))
    cache = open_cache(settings.cache)
    try:
        engine = ProjectionEngine(
            LogReader(log),
            projections,
            stores,
            batch_size=settings.engine.batch_size,
            max_attempts=settings.engine.max_attempts,
            retry_backoff=settings.engine.retry_backoff.total_seconds(),
            handler_timeout=_seconds(settings.engine.handler_timeout),
            stuck_after=_seconds(settings.engine.stuck_exit_after),
            cache=cache,
            groups=configured_groups(settings.sources, settings.tenants),
        )
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    runtime = Runtime(settings, log, engine)
    if create_tables:
        try:
            if migrate:
                for store in stores.values():
                    if isinstance(store, SqlStore):
                        upgrade(store.engine, remedy=START_AGAIN, store=store.label)
            engine.create_tables()
        except BaseException:
            runtime.close()
            raise
    return runtime


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()


def check_subscriptions(runtime: Runtime) -> None:
    """Raise :class:`ConfigError` for a projection subscribed to a source nothing feeds
    (what :func:`build_runtime` checks unless told not to); the log's store failing raises
    its error."""
    projections = list(runtime.engine.projections.values())
    _check_subscriptions(runtime.settings, projections, runtime.log)


def _check_subscriptions(settings: Settings, projections: list[Any], log: EventLog) -> None:
    """Refuse a projection subscribed to a source nothing feeds
    (:mod:`projections.subscriptions`)."""
    unfed = unfed_subscriptions(settings, projections, log.engine)
    if unfed:
        where = settings.config_file or "settings"
        raise ConfigError(f"invalid configuration:\n  {where}: projections: {unfed[0].message}")


def _pool(threads: int) -> dict[str, Any]:
    """Pool sizes for ``threads`` applying threads plus the relay, sweeper and metrics."""
    if threads <= 8:
        return {}  # the defaults (10 + 20 overflow) suffice
    return {"pool_size": 10, "max_overflow": 2 * threads + 10}
