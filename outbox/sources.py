"""Build the right outbox source for a configured URL."""

from __future__ import annotations

from config import SourceSettings
from outbox.db import engine_kind
from outbox.mysql import MySqlOutboxSource
from outbox.postgres import PostgresOutboxSource
from outbox.source import OutboxSource, SqlOutboxSource
from outbox.sqlite import SqliteOutboxSource

_BY_KIND: dict[str, type[SqlOutboxSource]] = {
    "postgresql": PostgresOutboxSource,
    "mysql": MySqlOutboxSource,
    "sqlite": SqliteOutboxSource,
}


def source_kind(url: str) -> str:
    """``postgresql``, ``mysql``, ``sqlite`` or ``mongodb``."""
    if url.lower().startswith(("mongodb://", "mongodb+srv://")):
        return "mongodb"
    return engine_kind(url)


def open_source(name: str, settings: SourceSettings) -> OutboxSource:
    """The outbox source for ``settings.url`` (nothing is connected until it is used)."""
    if source_kind(settings.url) == "mongodb":
        from outbox.mongo import MongoOutboxSource

        return MongoOutboxSource(name, settings)
    return _BY_KIND[engine_kind(settings.url)](name, settings)
