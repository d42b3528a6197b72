"""The cache invalidation journal of a MongoDB store (``rm_invalidations``), mixed into
:class:`projections.mongo_store.MongoStore`: an invalidation is journaled in the batch's
transaction, so that one the cache never heard of (a crash, Redis down) is redone
(:mod:`projections.invalidations`).

A journal document is stamped by the server's clock (``$currentDate``) and its age is read
against the server's clock too: the sweeper redoes the ones ``cache.redo_after`` old, and
a worker host whose clock is behind would otherwise redo lost invalidations late (caches
stale longer), one ahead would redo them early.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from outbox.errors import StoreError
from outbox.mongo_connection import describe_mongo_error as _describe
from projections.store import Invalidation

__all__ = ["INVALIDATIONS", "DocumentInvalidations"]

INVALIDATIONS = "rm_invalidations"


class DocumentInvalidations:
    """The invalidation journal half of a MongoDB store; needs its ``client`` and
    ``database``."""

    client: MongoClient[Any]
    database: Database[Any]
    journal_invalidations: bool

    def journal(
        self, session: ClientSession | None, projection: str, tags: set[str] | None
    ) -> Invalidation | None:
        """Journal an invalidation of ``tags`` (in ``session``'s transaction), so that it is
        redone if the process dies before the cache hears of it. The id is the time in
        milliseconds and 20 random bits: lanes never contend on a counter for it."""
        if not tags:
            return None
        ordered = tuple(sorted(tags))
        while True:
            journal_id = int(time.time() * 1000) << 20 | random.getrandbits(20)
            try:
                # an upsert that never matches: an insert stamped by the server's clock
                # (a taken id still raises DuplicateKeyError)
                self.database[INVALIDATIONS].update_one(
                    {"_id": journal_id, "tags": {"$exists": False}},
                    {
                        "$setOnInsert": {"projection": projection, "tags": list(ordered)},
                        "$currentDate": {"created_at": True},
                    },
                    upsert=True,
                    session=session,
                )
                return Invalidation(journal_id, projection, ordered)
            except DuplicateKeyError:
                if session is not None:
                    raise
                continue

    def journal_invalidation(self, projection: str, tags: Sequence[str]) -> Invalidation | None:
        if not self.journal_invalidations:
            return None
        try:
            return self.journal(None, projection, set(tags))
        except PyMongoError as exc:
            raise StoreError(f"cannot write {INVALIDATIONS}: {_describe(exc)}") from exc

    def pending_invalidations(
        self, older_than: float = 0.0, limit: int = 1000
    ) -> list[Invalidation]:
        """Journaled invalidations at least ``older_than`` seconds old by the server's
        clock."""
        query: dict[str, Any] = {}
        try:
            if older_than > 0:
                cutoff = self._server_now() - timedelta(seconds=older_than)
                query["created_at"] = {"$lte": cutoff}
            found = list(self.database[INVALIDATIONS].find(query).sort("_id", 1).limit(limit))
        except PyMongoError as exc:
            raise StoreError(f"cannot read {INVALIDATIONS}: {_describe(exc)}") from exc
        return [Invalidation(int(d["_id"]), d["projection"], tuple(d["tags"])) for d in found]

    def forget_invalidations(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        try:
            self.database[INVALIDATIONS].delete_many({"_id": {"$in": list(ids)}})
        except PyMongoError as exc:
            raise StoreError(f"cannot delete {INVALIDATIONS}: {_describe(exc)}") from exc

    def _server_now(self) -> datetime:
        """The server's clock (``hello``'s ``localTime``)."""
        local = self.client.admin.command("hello").get("localTime")
        if not isinstance(local, datetime):
            raise StoreError("the MongoDB server did not tell its time (hello: localTime)")
        return local if local.tzinfo else local.replace(tzinfo=UTC)
