"""Build the right read-model store for a configured URL."""

from __future__ import annotations

from typing import Any

from projections.store import Store


def is_mongodb(url: str) -> bool:
    return url.lower().startswith(("mongodb://", "mongodb+srv://"))


def open_store(url: str, *, label: str | None = None, **engine_options: Any) -> Store:
    """A :class:`~projections.sql_store.SqlStore` (``engine_options`` go to its engine) or a
    :class:`~projections.mongo_store.MongoStore`; nothing is connected until it is used.
    ``label``: the store's name in messages (:meth:`config.Settings.store_label`)."""
    if is_mongodb(url):
        from projections.mongo_store import MongoStore

        return MongoStore(url, label=label)
    from outbox.db import create_engine
    from projections.sql_store import SqlStore

    return SqlStore(url, engine=create_engine(url, **engine_options), label=label)
