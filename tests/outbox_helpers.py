"""Helpers for tests that write into outbox tables."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from pymongo import MongoClient, ReturnDocument

from config import SourceSettings
from outbox.sources import open_source


def init_outbox(settings: SourceSettings, name: str = "src") -> None:
    """Create the outbox table of ``settings`` exactly as ``readmodel outbox init`` does."""
    source = open_source(name, settings)
    try:
        source.install()
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


Event = tuple[str, str, str, dict[str, Any]]


class OutboxDb(Protocol):
    """A service database with an outbox, as a test writes and counts it."""

    def insert(self, events: Iterable[Event]) -> None: ...

    def count(self, *, pending_only: bool) -> int: ...

    def close(self) -> None: ...


class SqlOutboxDb:
    def __init__(self, url: str) -> None:
        from outbox.db import create_engine

        self.engine = create_engine(url)

    def insert(self, events: Iterable[Event]) -> None:
        insert_events(self.engine, events)

    def count(self, *, pending_only: bool) -> int:
        where = " WHERE dispatched_at IS NULL" if pending_only else ""
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM outbox{where}").scalar_one())

    def close(self) -> None:
        self.engine.dispose()


class MongoOutboxDb:
    """Writes outbox documents as a service should: ``seq`` from a counter document
    incremented in the same transaction as the inserts, so ``seq`` order is commit order."""

    def __init__(self, url: str, collection: str = "outbox") -> None:
        from outbox.mongo_connection import mongo_database

        self.client: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
        self.db = self.client.get_database(mongo_database(url))
        self.outbox = self.db.get_collection(collection)
        self.collection = collection

    def insert(self, events: Iterable[Event]) -> None:
        self.insert_documents(
            [
                {"aggregatetype": a, "aggregateid": b, "type": c, "payload": p}
                for a, b, c, p in events
            ]
        )

    def insert_documents(self, documents: list[dict[str, Any]]) -> None:
        """Insert outbox documents, filling ``seq``, ``id`` and ``timestamp`` where missing."""
        if not documents:
            return

        def write(session: Any) -> None:
            counter = self.db.get_collection("counters").find_one_and_update(
                {"_id": self.collection},
                {"$inc": {"seq": len(documents)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            first = counter["seq"] - len(documents) + 1
            now = datetime.now(UTC)
            rows = [
                {"seq": first + i, "id": str(uuid.uuid4()), "timestamp": now, **document}
                for i, document in enumerate(documents)
            ]
            self.outbox.insert_many(rows, session=session)

        with self.client.start_session() as session:
            session.with_transaction(write)  # retried whole on a write conflict

    def count(self, *, pending_only: bool) -> int:
        query = {"dispatched_at": None} if pending_only else {}
        return self.outbox.count_documents(query)

    def close(self) -> None:
        self.client.close()


def outbox_db(url: str) -> OutboxDb:
    if url.startswith("mongodb"):
        return MongoOutboxDb(url)
    return SqlOutboxDb(url)


def append_unacknowledged(source: Any, log: Any, limit: int) -> None:
    """Claim up to ``limit`` rows of ``source`` (leading it), append them to ``log`` and lose
    the lead without acknowledging them: a relay that crashed between append and ack (the
    rows stay in the outbox, to be delivered again)."""
    from outbox.rows import decode_rows

    rows = source.claim(limit)
    records, malformed = decode_rows(
        rows,
        source=source.name,
        column_names=source.column_names,
        default_tenant=None,
        max_payload_bytes=1 << 20,
    )
    log.append(source.name, records, malformed)
    source.lose_leadership()
