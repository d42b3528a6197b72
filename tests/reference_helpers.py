"""Helpers for the reference-system tests: settings for its three services, and service
tables read back row by row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import Settings, load_settings
from outbox.db import create_engine
from outbox.status import source_statuses
from projections.reference import PROJECTION_MODULES
from projections.reference.services import service_tables
from workers.runtime import build_runtime

SERVICES = ("auth", "products", "orders")


def reference_settings(store: str, services: dict[str, str], **other: Any) -> Settings:
    """Settings with the four reference projections over the given service databases."""
    return load_settings(
        None,
        projections=PROJECTION_MODULES,
        store={"url": store},
        sources={name: {"url": url} for name, url in services.items()},
        **other,
    )


def service_rows(services: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every service table, by table, in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, url in services.items():
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                for table in service_tables(name):
                    query = sa.select(table).order_by(*table.primary_key.columns)
                    out[f"{name}.{table.name}"] = [tuple(row) for row in conn.execute(query)]
        finally:
            engine.dispose()
    return out


def count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar_one())
    finally:
        engine.dispose()


def pipeline_caught_up(config: Path) -> bool:
    """Every source's outbox is relayed and no projection lags the log."""
    settings = load_settings(config)
    runtime = build_runtime(settings, create_tables=False, migrate=False)
    try:
        pending = sum(s.undelivered or 0 for s in source_statuses(settings, runtime.log))
        return pending == 0 and not runtime.engine.lagging()
    finally:
        runtime.close()
