"""Build the right outbox source for a configured DSN."""

from __future__ import annotations

from config import SourceSettings
from outbox.db import engine_kind
from outbox.mysql import MySqlOutboxSource
from outbox.postgres import PostgresOutboxSource
from outbox.source import SqlOutboxSource
from outbox.sqlite import SqliteOutboxSource

_BY_KIND: dict[str, type[SqlOutboxSource]] = {
    "postgresql": PostgresOutboxSource,
    "mysql": MySqlOutboxSource,
    "sqlite": SqliteOutboxSource,
}


def open_source(name: str, settings: SourceSettings) -> SqlOutboxSource:
    """The outbox source for ``settings.url`` (nothing is connected until it is used)."""
    return _BY_KIND[engine_kind(settings.url)](name, settings)
