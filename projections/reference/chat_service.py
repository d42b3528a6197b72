"""The chat / notifications service of the reference system: its MongoDB database.

Collections (the service's own data, the ground truth ``verify`` reads):

- ``conversations``: ``_id``, ``subject``, ``participant_ids`` (users of the auth service),
  ``message_count``, ``created_at``, ``last_message_at``;
- ``messages``: ``_id``, ``conversation_id``, ``number`` (from 1 in its conversation),
  ``sender_id``, ``body``, ``sent_at``;
- ``notifications``: ``_id``, ``user_id``, ``number`` (from 1 per user), ``kind``,
  ``title``, ``body``, ``reference_id``, ``sent_at``;
- ``counters``: the outbox's ``seq`` counter, and the outbox collection itself (the source's
  ``table``).

The chat service is optional: a configuration without a ``chat`` source has none, and the
simulator and ``verify`` say they skip it.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.errors import PyMongoError

from config import ConfigError, Settings, SourceSettings
from outbox.errors import SourceError
from outbox.mongo_connection import describe_mongo_error, mongo_client, mongo_database
from outbox.sources import open_source, source_kind
from projections.reference.events import CHAT

CONVERSATIONS, MESSAGES, NOTIFICATIONS, COUNTERS = (
    "conversations",
    "messages",
    "notifications",
    "counters",
)

INDEXES: dict[str, list[tuple[list[tuple[str, int]], bool]]] = {
    CONVERSATIONS: [([("participant_ids", ASCENDING)], False)],
    MESSAGES: [([("conversation_id", ASCENDING), ("number", ASCENDING)], True)],
    NOTIFICATIONS: [([("user_id", ASCENDING), ("number", ASCENDING)], True)],
}
"""Collection -> (keys, unique) of each index the service needs."""

NO_CHAT = "chat: skipped, the config has no [sources.chat] (a MongoDB chat service)"


def chat_source(settings: Settings) -> SourceSettings | None:
    """The chat service's source, or ``None`` when the config has none; it must be MongoDB."""
    found = settings.sources.get(CHAT)
    if found is None:
        return None
    if source_kind(found.url) != "mongodb":
        raise ConfigError(
            "sources.chat: the reference chat service runs on MongoDB; "
            'give it a url = "mongodb://host/database"'
        )
    return found


def chat_statements(settings: SourceSettings) -> list[str]:
    """What :func:`init_chat` does, as mongosh commands: the service's indexes, then the
    outbox's (``readmodel outbox init``)."""
    commands = []
    for collection, indexes in INDEXES.items():
        for keys, unique in indexes:
            spec = ", ".join(f"{field!r}: {direction}" for field, direction in keys)
            options = ", {unique: true}" if unique else ""
            commands.append(f"db.getCollection({collection!r}).createIndex({{{spec}}}{options})")
    source = open_source(CHAT, settings)
    try:
        return commands + source.ddl()
    finally:
        source.close()


def init_chat(settings: SourceSettings) -> int:
    """Create the service's indexes and the outbox's (idempotent); returns how many."""
    client: Any = mongo_client(settings.url)
    try:
        database = client.get_database(mongo_database(settings.url))
        for collection, indexes in INDEXES.items():
            for keys, unique in indexes:
                database[collection].create_index(keys, unique=unique)
    except PyMongoError as exc:
        raise SourceError(f"source 'chat': {describe_mongo_error(exc)}") from exc
    finally:
        client.close()
    source = open_source(CHAT, settings)
    try:
        source.install()
    finally:
        source.close()
    return sum(len(i) for i in INDEXES.values()) + len(source.ddl())
