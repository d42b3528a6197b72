"""Build the right outbox source for a configured URL."""

from __future__ import annotations

from config import SourceSettings
from outbox.db import describe_db_error, engine_kind
from outbox.errors import SourceError
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
    """The outbox source for ``settings.url`` (nothing is connected until it is used).
    A URL that validation accepts but that cannot be opened (a driver not installed, a
    query option the driver refuses) raises :class:`SourceError`, that source's error."""
    try:
        if source_kind(settings.url) == "mongodb":
            from outbox.mongo import MongoOutboxSource

            return MongoOutboxSource(name, settings)
        return _BY_KIND[engine_kind(settings.url)](name, settings)
    except Exception as exc:
        raise source_failure(name, exc) from exc


def source_failure(name: str, exc: BaseException) -> SourceError:
    """Any exception opening or using source ``name`` as that source's :class:`SourceError`:
    one line naming the source, without the DSN or its password (never a traceback, whose
    frames hold the DSN)."""
    if isinstance(exc, SourceError):
        return exc
    return SourceError(f"source {name!r} cannot be opened or used: {describe_db_error(exc)}")
