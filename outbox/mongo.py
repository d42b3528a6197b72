"""MongoDB outbox source: a lease document for leadership, ``position``-ordered finds, change
stream wake-ups.

MongoDB has neither row locks nor session locks, so one active relay per source is a lease:
a document in :data:`LEASES` that the leader renews (``beat`` + 1) every third of
``settings.lease``. A standby watches the beat on its own monotonic clock and takes over,
by compare-and-set on the beat it saw, once the beat has not moved for a whole lease; no two
machines' clocks are ever compared. A leader that could not renew within the lease stops
claiming. Should a paused leader still append a batch after a takeover, the event log drops
the copies by event id, and the batch was a prefix of the outbox in order, so nothing is
reordered.

A find sees only committed documents. Order per aggregate holds when the service gives an
aggregate's events increasing ``position`` values in commit order: a counter document
incremented (``$inc``) in the same transaction as the outbox insert does that.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bson import Decimal128
from bson.errors import BSONError
from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from config import SourceSettings
from outbox.errors import NotLeaderError, SourceError
from outbox.mongo_connection import describe_mongo_error, mongo_client, mongo_database
from outbox.mongo_pending import pending_figures
from outbox.mongo_values import UnsupportedValue, described, plain, plain_scalar, plain_timestamp
from outbox.rows import FIELDS, Unreadable
from outbox.source import OutboxSource, PendingStats

LEASES = "readmodel_relay_leases"
"""The collection, in the source's database, holding one lease document per outbox."""

_CHUNK = 5000


class MongoOutboxSource(OutboxSource):
    """An outbox collection in a MongoDB database (the URL's path names the database)."""

    binary_ids_rule = None  # BSON UUIDs are read as UUID text whatever binary_ids says

    def __init__(
        self, name: str, settings: SourceSettings, *, client: MongoClient[Any] | None = None
    ) -> None:
        super().__init__(name, settings)
        try:
            self._connect(client or mongo_client(settings.url))
        except (PyMongoError, ValueError) as exc:
            raise SourceError(
                f"source {name!r} ({self.display_url}): {describe_mongo_error(exc)}"
            ) from exc
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = settings.lease.total_seconds()
        self._leading = False
        self._may_hold = False  # a lease write was sent: the lease may be ours
        self._renewed = 0.0  # monotonic time of the last renewal we know succeeded
        self._seen: tuple[Any, Any] | None = None  # (owner, beat) a standby last saw
        self._seen_since = 0.0
        self._stream: Any = None
        self._streams_work = settings.notify
        self._claimed: list[tuple[Any, Any]] = []  # (position, _id) of the last claim
        self._recent: deque[set[Any]] = deque(maxlen=4)  # _ids of the latest acknowledgements
        columns = settings.columns.model_dump()
        self._fields = {field: columns.get(field, "") for field in FIELDS}
        if settings.on_dispatch == "delete":
            self._fields_dispatched = ""
        else:
            self._fields_dispatched = columns["dispatched_at"]

    def _connect(self, client: MongoClient[Any]) -> None:
        self._client = client
        database = self._client.get_database(mongo_database(self.settings.url))
        self._outbox: Collection[Any] = database.get_collection(self.settings.table)
        self._leases: Collection[Any] = database.get_collection(LEASES)

    # -- shape ---------------------------------------------------------------------

    @property
    def column_names(self) -> dict[str, str]:
        """Field -> document field ('' for an optional field the outbox does not use)."""
        return dict(self._fields)

    def _pending_filter(self) -> dict[str, Any]:
        if self._fields_dispatched:
            return {self._fields_dispatched: None}
        return {}

    # -- leadership ----------------------------------------------------------------

    def try_lead(self) -> bool:
        try:
            if self._leading:
                return self._renew()
            return self._acquire()
        except PyMongoError as exc:
            self.lose_leadership()
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_mongo_error(exc)}"
            ) from exc

    @property
    def leading(self) -> bool:
        return self._leading

    def _acquire(self) -> bool:
        key = self.settings.table
        lease = self._leases.find_one({"_id": key})
        now = time.monotonic()
        if lease is None:
            self._may_hold = True
            try:
                self._leases.insert_one(
                    {"_id": key, "owner": self._owner, "beat": 0, "renewed_at": _utcnow()}
                )
            except DuplicateKeyError:
                return False
            return self._won(now)
        seen = (lease.get("owner"), lease.get("beat"))
        if seen[0] == self._owner:  # ours still: nobody took over while we were late
            self._seen_since = now - self._lease
        elif seen != self._seen:
            self._seen, self._seen_since = seen, now
            return False
        if now - self._seen_since < self._lease:
            return False
        self._may_hold = True
        taken = self._leases.find_one_and_update(
            {"_id": key, "owner": seen[0], "beat": seen[1]},
            {"$set": {"owner": self._owner, "renewed_at": _utcnow()}, "$inc": {"beat": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if taken is None:
            return False
        return self._won(now)

    def try_lead_once(self) -> bool:
        """Lead, or see the lease renewed (another relay is alive). A process that starts,
        drains and exits (``relay --once``) saw a dead relay's lease for the first time at
        each run, so it never led: the lease is watched here until it is renewed or has not
        been for a whole ``lease``, and is then taken over."""
        deadline = time.monotonic() + self._lease * 1.5
        first: tuple[Any, Any] | None = None
        while not self.try_lead():
            if first is None:
                first = self._seen
            elif self._seen != first:  # renewed (or handed over): a live relay leads
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self._lease / 10, 0.5))
        return True

    def _won(self, now: float) -> bool:
        self._leading = True
        self._renewed = now
        self._seen = None
        self._open_stream()
        return True

    def _renew(self) -> bool:
        now = time.monotonic()
        if now - self._renewed < self._lease / 3:
            return True
        if now - self._renewed >= self._lease:  # a standby may have taken over meanwhile
            self.lose_leadership()
            return self._acquire()
        renewed = self._leases.find_one_and_update(
            {"_id": self.settings.table, "owner": self._owner},
            {"$inc": {"beat": 1}, "$set": {"renewed_at": _utcnow()}},
        )
        if renewed is None:
            self.lose_leadership()
            return False
        self._renewed = now
        return True

    def lose_leadership(self) -> None:
        self._leading = False
        self._close_stream()

    def _leader(self) -> None:
        if not self._leading:
            raise NotLeaderError(f"source {self.name!r}: this relay is not the leader")
        if time.monotonic() - self._renewed >= self._lease:
            self.lose_leadership()
            raise NotLeaderError(f"source {self.name!r}: this relay's lease ran out")

    # -- claims --------------------------------------------------------------------

    def claim(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` undelivered documents in ``position`` order; documents whose
        position is missing or not a number come first, to be parked (they have no place
        in the order)."""
        self._leader()
        position = self._fields["position"]
        pending = self._pending_filter()
        try:
            unordered = list(
                self._outbox.find(
                    {**pending, position: {"$not": {"$type": "number"}}}, limit=min(limit, 100)
                )
            )
            documents = unordered + list(
                self._outbox.find(
                    {**pending, position: {"$type": "number"}},
                    sort=[(position, ASCENDING)],
                    limit=limit,
                )
            )
        except (PyMongoError, BSONError) as exc:
            self.lose_leadership()
            raise SourceError(
                f"source {self.name!r}: claim failed: {describe_mongo_error(exc)}"
            ) from exc
        rows = [self._row(document) for document in documents]
        self._claimed = [(row[0], doc["_id"]) for row, doc in zip(rows, documents, strict=True)]
        return rows

    def _row(self, document: dict[str, Any]) -> tuple[Any, ...]:
        """A document shaped like :data:`FIELDS`: the position as stored, BSON types turned
        into what JSON and the log hold; a position :class:`~outbox.rows.Unreadable` when
        the document cannot become an event in order."""
        values: list[Any] = []
        problem = None
        for field, name in self._fields.items():
            value = document.get(name) if name else None
            try:
                if field == "position":
                    values.append(value)
                    if not isinstance(value, int | float | Decimal128) or isinstance(value, bool):
                        problem = f"no position to order it by ({name!r} = {value!r})"
                elif field in ("payload", "headers"):
                    values.append(plain(value))
                elif field == "occurred_at":
                    values.append(plain_timestamp(value))
                else:
                    values.append(plain_scalar(value))
            except UnsupportedValue as exc:
                values.append(described(value))  # kept, as text, in the parked row
                problem = problem or f"field {name!r} holds {exc}"
        if problem is not None:
            values[0] = Unreadable(values[0], problem)
        return tuple(values)

    def acknowledge(self, positions: Sequence[Any]) -> None:
        """Delete or mark the claimed documents, by ``_id``: two documents may share a
        position, and only the claimed one is relayed."""
        self._leader()
        try:
            wanted: Any = set(positions)
        except TypeError:  # an unhashable position (a document as _id): compare one by one
            wanted = list(positions)
        ids = [key for position, key in self._claimed if position in wanted]
        try:
            for start in range(0, len(ids), _CHUNK):
                chunk = {"_id": {"$in": ids[start : start + _CHUNK]}}
                if self._fields_dispatched:
                    self._outbox.update_many(chunk, {"$set": {self._fields_dispatched: _utcnow()}})
                else:
                    self._outbox.delete_many(chunk)
        except PyMongoError as exc:
            self.lose_leadership()
            raise SourceError(
                f"source {self.name!r}: acknowledging documents failed: {describe_mongo_error(exc)}"
            ) from exc
        self._recent.append(set(ids))

    def release(self) -> None:
        """Nothing is locked: claimed documents stay where they are until acknowledged."""

    # -- wake-ups ------------------------------------------------------------------

    def _open_stream(self) -> None:
        if not self._streams_work or self._stream is not None:
            return
        try:
            self._stream = self._outbox.watch(
                [{"$match": {"operationType": "insert"}}], max_await_time_ms=200
            )
        except OperationFailure:  # a standalone server has no change streams: poll
            self._streams_work = False
        except PyMongoError:
            self._stream = None

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except PyMongoError:
                pass

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Sleep up to ``timeout``, returning when a document that was not relayed yet is
        inserted (a change stream, on replica sets) or ``stop`` is set. The lease is renewed
        meanwhile, whatever ``poll_max`` is."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._leading:
                try:
                    if not self._renew():
                        return
                except PyMongoError:
                    return  # the next try_lead reports it
                if self._stream is None:
                    self._open_stream()
            step = min(left, self._lease / 4)
            if self._stream is None:
                stop.wait(step)
            elif self._inserted_within(step):
                return

    def _inserted_within(self, seconds: float) -> bool:
        """Whether the change stream reports, within ``seconds``, an insert of a document
        not acknowledged lately (those were relayed by the claim their insert woke)."""
        until = time.monotonic() + seconds
        try:
            while time.monotonic() < until:
                if not self._stream.alive:
                    self._close_stream()
                    return False
                change = self._stream.try_next()
                if change is None:
                    continue
                key = change.get("documentKey", {}).get("_id")
                if not any(key in ids for ids in self._recent):
                    return True
        except PyMongoError:
            self._close_stream()
        return False

    # -- housekeeping and status ---------------------------------------------------

    def purge_dispatched(self) -> int:
        if not self._fields_dispatched:
            return 0
        cutoff = _utcnow() - self.settings.retention
        try:
            purged = self._outbox.delete_many({self._fields_dispatched: {"$lt": cutoff}})
            return purged.deleted_count
        except PyMongoError:
            return 0

    def pending(self) -> PendingStats:
        pending, unit = self._pending_filter(), self.settings.timestamp_unit
        try:
            figures = pending_figures(self._outbox, pending, self._fields["occurred_at"], unit)
        except (PyMongoError, BSONError) as exc:
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_mongo_error(exc)}"
            ) from exc
        age = None
        if figures.oldest is not None:
            now = figures.server_now or _utcnow()
            age = max(0.0, (now - figures.oldest).total_seconds())
        return PendingStats(figures.undelivered, age)

    def ddl(self) -> list[str]:
        """What :meth:`install` does, as mongosh commands."""
        collection = f"db.getCollection({self.settings.table!r})"
        position = self._fields["position"]
        commands = [f"{collection}.createIndex({{{position!r}: 1}}, {{unique: true}})"]
        if self._fields_dispatched:
            commands.append(
                f"{collection}.createIndex({{{self._fields_dispatched!r}: 1, {position!r}: 1}})"
            )
        return commands

    def install(self) -> None:
        position = self._fields["position"]
        try:
            self._outbox.create_index([(position, ASCENDING)], unique=True)
            if self._fields_dispatched:
                self._outbox.create_index(
                    [(self._fields_dispatched, ASCENDING), (position, ASCENDING)]
                )
        except PyMongoError as exc:
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_mongo_error(exc)}"
            ) from exc

    def close(self) -> None:
        """Hand the lease over at once (if this relay still holds it) and close the
        connections; the source may be used again, with new ones. A source that never sent
        a lease write (``status``, metrics, health) holds none: no command is sent for it."""
        if self._may_hold:
            try:
                self._leases.delete_one({"_id": self.settings.table, "owner": self._owner})
            except PyMongoError:
                pass
        self.lose_leadership()
        self._client.close()
        self._connect(mongo_client(self.settings.url))


def _utcnow() -> datetime:
    return datetime.now(UTC)
