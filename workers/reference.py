"""Wiring for the reference system's ``verify``: engines from settings, and whether the
pipeline had caught up (a projection still behind shows its lag as mismatches)."""

from __future__ import annotations

import sqlalchemy as sa

from config import ConfigError, Settings
from outbox.db import create_engine
from outbox.status import source_statuses
from projections.reference.provision import service_sources
from projections.reference.verify import CHECKS, VerifyReport, verify
from projections.sql_store import SqlStore
from workers.runtime import build_runtime


def run_verify(settings: Settings, *, keep: int = 100) -> tuple[VerifyReport, str]:
    """Verify every configured reference projection; returns the report and, when the
    pipeline trails the services, a sentence saying by how much (else ``""``)."""
    sources = service_sources(settings)
    runtime = build_runtime(settings, create_tables=False, migrate=False)
    services: dict[str, sa.Engine] = {}
    try:
        names = [name for name in runtime.engine.projections if name in CHECKS]
        if not names:
            raise ConfigError(
                "no reference projection is configured: add the modules of "
                "projections.reference.PROJECTION_MODULES to 'projections'"
            )
        stores: dict[str, sa.Engine] = {}
        for name in names:
            store = runtime.engine.store_of(name)
            if not isinstance(store, SqlStore):
                raise ConfigError(f"projection {name!r}: verify reads SQL stores only")
            stores[name] = store.engine
        services = {name: create_engine(s.url) for name, s in sources.items()}
        report = verify(services, stores, keep=keep)
        pending = sum(
            s.undelivered or 0
            for s in source_statuses(settings, runtime.log)
            if s.source in sources
        )
        lagging = runtime.engine.lagging(names)
        behind = ""
        if pending or lagging:
            behind = (
                f"the read models trail the services ({pending} outbox rows not relayed, "
                f"{len(lagging)} projection lanes behind the log): mismatches may be events "
                "not applied yet"
            )
        return report, behind
    finally:
        for engine in services.values():
            engine.dispose()
        runtime.close()
