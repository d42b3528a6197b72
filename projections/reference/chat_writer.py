"""Writes the simulator's chat actions into the chat service's MongoDB database.

Each action is one multi-document transaction: its state changes, then its outbox
documents, whose ``seq`` comes from a counter document incremented in the same transaction
(so ``seq`` order is commit order, and writers serialize on the counter). Like
:class:`~projections.reference.writer.ServiceWriter`, the writes run on a thread of their
own, in the order the actions were planned.
"""

from __future__ import annotations

import queue
import threading
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from config import SourceSettings
from outbox.errors import ReadmodelError, SourceError
from outbox.mongo_connection import describe_mongo_error, mongo_client, mongo_database
from projections.reference.chat_service import COUNTERS
from projections.reference.writer import Event

Operation = tuple[str, str, dict[str, Any], dict[str, Any] | None]
"""``("insert", collection, document, None)`` or ``("update", collection, filter, update)``."""


def insert_doc(collection: str, document: dict[str, Any]) -> Operation:
    return ("insert", collection, document, None)


def update_doc(collection: str, where: dict[str, Any], change: dict[str, Any]) -> Operation:
    return ("update", collection, where, change)


class ChatWriter:
    """The chat database: a client, a thread, and the outbox's field names."""

    def __init__(self, settings: SourceSettings, *, backlog: int = 256) -> None:
        self.url = settings.url
        self.client: Any = mongo_client(settings.url)
        self.database = self.client.get_database(mongo_database(settings.url))
        self.outbox = settings.table
        c = settings.columns
        self.fields = {
            "position": c.position,
            "event_id": c.event_id,
            "aggregate_type": c.aggregate_type,
            "aggregate_id": c.aggregate_id,
            "event_type": c.event_type,
            "payload": c.payload,
            "occurred_at": c.occurred_at,
        }
        self.error: ReadmodelError | None = None
        self._queue: queue.Queue[tuple[list[Operation], list[Event], list[str]] | None] = (
            queue.Queue(maxsize=backlog)
        )
        self._thread = threading.Thread(target=self._run, name="simulate-chat", daemon=True)
        self._thread.start()

    def submit(
        self, operations: list[Operation], events: list[Event], event_ids: list[str]
    ) -> None:
        """Queue one business action (its writes, then its outbox documents)."""
        if self.error is not None:
            raise self.error
        self._queue.put((operations, events, event_ids))

    def close(self) -> None:
        """Wait for every queued action; raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.client.close()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with self.client.start_session() as session:
                while (action := self._queue.get()) is not None:
                    session.with_transaction(lambda s, action=action: self._apply(s, *action))
        except Exception as exc:
            message = f"source 'chat': {describe_mongo_error(exc)}"
            if isinstance(exc, DuplicateKeyError) or "E11000" in str(exc):
                self.error = ReadmodelError(
                    f"{message} (does the database hold data of an earlier run with the same "
                    f"--seed? use another seed or fresh databases)"
                )
            elif isinstance(exc, PyMongoError):
                self.error = SourceError(message)
            else:
                self.error = ReadmodelError(message)
            while self._queue.get() is not None:  # unblock the planner; it raises next
                pass

    def _apply(
        self, session: Any, operations: list[Operation], events: list[Event], event_ids: list[str]
    ) -> None:
        for op, collection, first, second in operations:
            if op == "insert":
                self.database[collection].insert_one(dict(first), session=session)
            else:
                self.database[collection].update_one(first, second, session=session)
        if not events:
            return
        f = self.fields
        counter = self.database[COUNTERS].find_one_and_update(
            {"_id": self.outbox},
            {"$inc": {"seq": len(events)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        first_seq = int(counter["seq"]) - len(events) + 1
        now = datetime.now(UTC)
        documents = []
        for i, ((aggregate_type, aggregate_id, event_type, payload), event_id) in enumerate(
            zip(events, event_ids, strict=True)
        ):
            document = {
                f["position"]: first_seq + i,
                f["aggregate_type"]: aggregate_type,
                f["aggregate_id"]: aggregate_id,
                f["event_type"]: event_type,
                f["payload"]: payload,
            }
            if f["event_id"]:
                document[f["event_id"]] = event_id
            if f["occurred_at"]:
                document[f["occurred_at"]] = now
            documents.append(document)
        self.database[self.outbox].insert_many(documents, session=session)
