"""Helpers for the reference chat service's tests: settings with a MongoDB chat source and a
MongoDB document store, and the chat database read back."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient

from config import Settings, load_settings
from outbox.mongo_connection import mongo_database
from projections.reference import CHAT_PROJECTION_MODULES, PROJECTION_MODULES
from projections.reference.chat_service import CONVERSATIONS, MESSAGES, NOTIFICATIONS


def chat_settings(
    store: str, services: dict[str, str], chat: str, docs: str, **other: Any
) -> Settings:
    """The five reference projections; ``chat`` is the chat service, ``docs`` the store of
    ``conversation_inbox``."""
    return load_settings(
        None,
        projections=PROJECTION_MODULES + CHAT_PROJECTION_MODULES,
        store={"url": store},
        stores={"docs": {"url": docs}},
        sources={**{name: {"url": url} for name, url in services.items()}, "chat": {"url": chat}},
        **other,
    )


def config_data(settings: Settings) -> dict[str, Any]:
    """``settings`` as a config file's data (for ``write_config``)."""
    return {
        "projections": settings.projections,
        "store": {"url": settings.store.url},
        "stores": {name: {"url": s.url} for name, s in settings.stores.items()},
        "sources": {name: {"url": s.url} for name, s in settings.sources.items()},
    }


def documents(url: str, *collections: str) -> dict[str, list[dict[str, Any]]]:
    """Every document of each collection of the database at ``url``, by ``_id``."""
    client: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
    try:
        database = client[mongo_database(url)]
        return {name: list(database[name].find().sort("_id", 1)) for name in collections}
    finally:
        client.close()


def chat_documents(url: str) -> dict[str, list[dict[str, Any]]]:
    return documents(url, CONVERSATIONS, MESSAGES, NOTIFICATIONS)
