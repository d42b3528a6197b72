"""Helpers for tests that write into outbox tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from config import SourceSettings
from outbox.sources import open_source


def init_outbox(settings: SourceSettings, name: str = "src") -> None:
    """Create the outbox table of ``settings`` exactly as ``readmodel outbox init`` does."""
    source = open_source(name, settings)
    try:
        with source.engine.begin() as conn:
            for statement in source.ddl():
                conn.exec_driver_sql(statement)
    finally:
        source.close()


def insert_events(
    engine: sa.Engine,
    events: Iterable[tuple[str, str, str, dict[str, Any]]],
    *,
    table: str = "outbox",
    columns: Sequence[str] = ("aggregatetype", "aggregateid", "type", "payload"),
) -> None:
    """Insert ``(aggregate_type, aggregate_id, event_type, payload)`` rows in one transaction."""
    t = sa.table(table, *[sa.column(c) for c in columns])
    rows = [dict(zip(columns, (a, b, c, json.dumps(p)), strict=True)) for a, b, c, p in events]
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(t), rows)


def migrate_store(url: str) -> None:
    """Bring a test read store to the current revision, as `readmodel migrate` would."""
    from outbox.migrate import engine_for, upgrade

    with engine_for(url) as engine:
        upgrade(engine)
