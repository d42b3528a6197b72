"""Reads of a document projection's collections (a MongoDB store), for
:class:`projections.query_service.Queries`: a document by ``_id``, and pages of documents
whose fields equal given values, in ``_id`` order. Reads go to the collections of the
projection's current generation (:mod:`projections.document_generations`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import bson
from pymongo.errors import PyMongoError

from outbox.errors import StoreError
from outbox.mongo import describe_mongo_error
from projections.api import Projection
from projections.document_generations import physical_name, read_current
from projections.query_reader import Page, QueryError


class DocumentReader:
    """Read-only access to one projection's collections in a MongoDB store."""

    def __init__(self, database: Any, projection: Projection) -> None:
        self.database = database
        self.projection = projection
        self._generation: int | None = None

    def collection(self, name: str | None) -> str:
        """``name``, or the projection's first collection; refused unless it is one of its own."""
        collections = self.projection.collections
        if name is None:
            return collections[0]
        if name not in collections:
            raise QueryError(
                f"projection {self.projection.name!r} has no collection {name!r} "
                f"(known: {', '.join(collections)})"
            )
        return name

    def get(self, collection: str, key: Any) -> dict[str, Any] | None:
        try:
            return self._current(
                lambda name: self.database[name].find_one({"_id": key}), collection
            )
        except PyMongoError as exc:
            raise StoreError(f"cannot read {collection}: {describe_mongo_error(exc)}") from exc

    def page(
        self, collection: str, where: Mapping[str, Any], *, after: str | None, limit: int
    ) -> Page:
        """Documents whose fields equal ``where``, by ``_id``; ``after`` is a page's ``next``."""
        if limit < 1:
            raise QueryError("limit must be at least 1")
        query: dict[str, Any] = dict(where)
        if after is not None:
            query["_id"] = {"$gt": _decode_cursor(after)}
        try:
            found = self._current(
                lambda name: list(self.database[name].find(query).sort("_id", 1).limit(limit + 1)),
                collection,
            )
        except PyMongoError as exc:
            raise StoreError(f"cannot read {collection}: {describe_mongo_error(exc)}") from exc
        rows = found[:limit]
        more = len(found) > limit
        return Page(rows, _encode_cursor(rows[-1]["_id"]) if more and rows else None)

    def _current(self, read: Any, collection: str) -> Any:
        """``read(physical name of collection)`` in the current generation (a rebuild's swap
        moves it); the generation last seen is kept, and checked after each read."""
        result, self._generation = read_current(
            self.database,
            self.projection.name,
            lambda generation: read(physical_name(collection, generation)),
            self._generation,
        )
        return result


def _encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(bson.encode({"k": key})).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Any:
    try:
        return bson.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["k"]
    except Exception:
        raise QueryError("not a cursor of this list (pass a page's next as after)") from None
