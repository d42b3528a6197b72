"""Everything a readmodel process needs, built once from settings: log, stores, projections,
the projection engine. Plain objects; the broker is wired on top in ``workers/actors.py``."""

from __future__ import annotations

from dataclasses import dataclass

from config import Settings
from outbox.errors import ReadmodelError
from outbox.log import EventLog
from projections.api import load_projections
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.sql_store import SqlStore
from projections.store import Store


@dataclass
class Runtime:
    settings: Settings
    log: EventLog
    engine: ProjectionEngine

    def close(self) -> None:
        self.engine.close()
        self.log.close()


def build_runtime(settings: Settings, *, create_tables: bool = True) -> Runtime:
    """Open the log and stores and load the configured projections."""
    log = EventLog(settings.store.url)
    try:
        projections = load_projections(settings.projections)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.close()
        raise ReadmodelError(f"cannot load projections {settings.projections}: {exc}") from exc
    stores: dict[str, Store] = {"default": SqlStore(settings.store.url, engine=log.engine)}
    for name, store_settings in settings.stores.items():
        if name != "default":
            stores[name] = SqlStore(store_settings.url)
    engine = ProjectionEngine(
        LogReader(log),
        projections,
        stores,
        batch_size=settings.engine.batch_size,
        max_attempts=settings.engine.max_attempts,
        retry_backoff=settings.engine.retry_backoff.total_seconds(),
    )
    if create_tables:
        log.create_tables()
        engine.create_tables()
    return Runtime(settings, log, engine)
