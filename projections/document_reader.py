"""Reads of a document projection's collections (a MongoDB store), for
:class:`projections.query_service.Queries`: a document by ``_id``, pages of documents whose
fields equal given values, in ``_id`` order (MongoDB's, across BSON types), behind a cursor
that only that list, of that tenant, takes (:func:`projections.query_cursors.list_fingerprint`),
and the :class:`projections.queries.Reader` of a document projection's ``@query`` methods
(``get``, ``first``, ``find`` by collection name). Reads go to the collections of the
projection's current generation (:mod:`projections.document_generations`); for a
projection with a ``tenant_column``, a reader for one tenant
(:meth:`DocumentReader.for_tenant`) sees only that tenant's documents (and those of its
``shared_collections``).

Documents come back JSON-ready, as a table's rows do, so a cached read returns what an
uncached one does: ObjectIds and Decimal128 as text (as the MongoDB outbox source reads
them, :func:`outbox.mongo_values.described`), datetimes as ISO 8601 text, binary as text or
``{"$base64": ...}``. A filter value that is a :class:`~decimal.Decimal` (``--where
amount:=12.5``) is compared as the double when that is the same number (what a JSON payload
stores), else as a Decimal128 (exact)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import bson
from bson.decimal128 import Decimal128
from bson.errors import BSONError, InvalidDocument
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import PyMongoError

from outbox.errors import StoreError
from outbox.mongo_connection import describe_mongo_error
from outbox.mongo_values import described
from outbox.rows import json_safe
from projections.api import Projection
from projections.document_generations import physical_name, read_current
from projections.query_cursors import cursor_key, encode_cursor, list_fingerprint
from projections.query_errors import QueryError
from projections.query_reader import Page
from projections.query_values import json_number, plain_value
from projections.tenant_scope import raw_handle, scoped_to_tenant


class DocumentReader:
    """Read-only access to one projection's collections in a MongoDB store."""

    def __init__(self, database: Any, projection: Projection) -> None:
        self._database = database
        self.projection = projection
        self._field = projection.tenant_column
        self._shared = frozenset(projection.shared_collections)
        self._tenant: str | None = None
        self._query: str | None = None
        self._generation: list[int | None] = [None]  # shared with the tenants' copies

    @property
    def tenant(self) -> str | None:
        """The tenant whose documents this reader reads (``None``: unscoped)."""
        return self._tenant

    @property
    def database(self) -> Any:
        """The store's database: raw access, refused to a reader scoped to a tenant."""
        return raw_handle(self, self._database, "read.database", self.projection.name)

    def for_tenant(self, tenant: str | None) -> DocumentReader:
        """This reader, its reads of tenant collections limited to ``tenant``'s documents; a
        reader already scoped is refused another tenant (:mod:`projections.tenant_scope`)."""
        return scoped_to_tenant(self, self.projection.name, self._field, tenant, "documents")

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

    def _scoped(self, collection: str, query: dict[str, Any]) -> dict[str, Any]:
        """``query`` and the tenant filter of ``collection`` (none for a shared one); a
        ``query`` naming the tenant field too matches only where both agree."""
        query = {name: _filter_value(value) for name, value in query.items()}
        field = self._field
        if self._tenant is None or field is None or collection in self._shared:
            return query
        return (
            {"$and": [query, {field: self.tenant}]}
            if field in query
            else {**query, field: self.tenant}
        )

    # -- the Reader protocol -------------------------------------------------------

    def get(self, collection: str, key: Any) -> dict[str, Any] | None:
        """The document with ``_id == key``, or ``None``."""
        name = self.collection(collection)
        query = self._scoped(name, {"_id": key})
        found = self._read(name, lambda physical: self._database[physical].find_one(query))
        return None if found is None else _json_ready(found)

    def first(self, collection: str, **equals: Any) -> dict[str, Any] | None:
        """One document whose fields equal ``equals`` (the lowest ``_id``), or ``None``."""
        found = self.find(collection, limit=1, **equals)
        return found[0] if found else None

    def find(
        self,
        collection: str,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        **equals: Any,
    ) -> list[dict[str, Any]]:
        """Documents whose fields equal ``equals``, by ``order_by`` (field names, ``-name``
        for descending; default ``_id``), at most ``limit`` (none for ``0``)."""
        name = self.collection(collection)
        if limit is not None and limit < 0:
            raise QueryError(f"limit must not be negative (got {limit})")
        if order_by is None:
            names = ["_id"]
        else:
            names = [order_by] if isinstance(order_by, str) else list(order_by)
        sort = [(n.lstrip("-"), DESCENDING if n.startswith("-") else ASCENDING) for n in names]
        query = self._scoped(name, equals)

        def read(physical: str) -> list[dict[str, Any]]:
            cursor = self._database[physical].find(query).sort(sort)
            return list(cursor if limit is None else cursor.limit(limit))

        if limit == 0:  # to the driver, limit(0) is no limit
            return []
        return [_json_ready(document) for document in self._read(name, read)]

    def rows(self, statement: Any) -> list[dict[str, Any]]:
        raise QueryError(
            f"projection {self.projection.name!r} keeps documents: a query reads them with "
            f"get, first or find"
        )

    # -- pages ---------------------------------------------------------------------

    def page(
        self, collection: str, where: Mapping[str, Any], *, after: str | None, limit: int
    ) -> Page:
        """Documents whose fields equal ``where``, by ``_id``; ``after`` is a page's ``next``."""
        if limit < 1:
            raise QueryError("limit must be at least 1")
        name = self.collection(collection)
        query = self._scoped(name, dict(where))
        fingerprint = list_fingerprint(self.projection.name, name, _typed(where), self.tenant)
        if after is not None:
            last = cursor_key(after, fingerprint, _bson_loads, _sortable)
            query = {"$and": [query, _after_id(last)]}
        found = self._read(
            name,
            lambda physical: list(
                self._database[physical].find(query).sort("_id", 1).limit(limit + 1)
            ),
        )
        rows = found[:limit]
        more = len(found) > limit
        cursor = encode_cursor(rows[-1]["_id"], fingerprint, bson.encode) if more and rows else None
        return Page([_json_ready(document) for document in rows], cursor)

    def _read(self, collection: str, read: Any) -> Any:
        """``read(physical name of collection)`` in the current generation (a rebuild's swap
        moves it); the generation last seen is kept, and checked after each read."""
        try:
            result, self._generation[0] = read_current(
                self._database,
                self.projection.name,
                lambda generation: read(physical_name(collection, generation)),
                self._generation[0],
            )
        except PyMongoError as exc:
            raise StoreError(f"cannot read {collection}: {describe_mongo_error(exc)}") from exc
        except (OverflowError, InvalidDocument) as exc:  # a filter value BSON cannot hold
            raise QueryError(f"cannot read {collection} by that filter: {exc}") from None
        return result


def _json_ready(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` in the types JSON holds (the same before and after a cache)."""
    return json_safe(described(document))


def _filter_value(value: Any) -> Any:
    """A filter's value as BSON holds it: a ``--where`` JSON value unwrapped, a
    :class:`~decimal.Decimal` as the same double, else as a Decimal128."""
    value = json_number(plain_value(value))
    if isinstance(value, Decimal):
        try:
            return Decimal128(value)
        except ArithmeticError:  # more digits than a Decimal128 holds: no such document
            raise QueryError(f"{value} has more digits than a stored number holds") from None
    if isinstance(value, list):
        return [_filter_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _filter_value(item) for key, item in value.items()}
    return value


def _typed(where: Mapping[str, Any]) -> dict[str, str]:
    """``where``'s values as BSON compares them, typed (``5`` is not ``"5"`` to MongoDB),
    for a cursor's fingerprint."""
    return {name: repr(_filter_value(value)) for name, value in where.items()}


_SORT_RANK = {
    -1: 0,  # minKey
    6: 1,  # undefined
    10: 2,  # null
    **dict.fromkeys((1, 16, 18, 19), 3),  # numbers: double, int, long, decimal
    **dict.fromkeys((2, 14), 4),  # string, symbol
    3: 5,  # object
    4: 6,  # array
    5: 7,  # binData
    7: 8,  # objectId
    8: 9,  # bool
    9: 10,  # date
    17: 11,  # timestamp
    11: 12,  # regex
    12: 13,  # dbPointer
    13: 14,  # javascript
    15: 15,  # javascriptWithScope
    127: 16,  # maxKey
}
"""BSON type numbers by MongoDB's order across types (the order ``_id`` sorts by); types of
one rank compare by value."""


def _after_id(last: Any) -> dict[str, Any]:
    """The filter of the ``_id``s that sort after ``last``: ``$gt`` compares within the type
    of ``last`` only (after the last number it matches no text), so those of every type that
    sorts later are added."""
    rank = _SORT_RANK[_bson_type(last)]
    later = [other for other, its in _SORT_RANK.items() if its > rank]
    if not later:
        return {"_id": {"$gt": last}}
    return {"$or": [{"_id": {"$gt": last}}, {"_id": {"$type": later}}]}


def _bson_type(value: Any) -> int:
    """The BSON type number ``value`` is written with."""
    code = bson.encode({"k": value})[4]
    return code - 256 if code > 127 else code  # minKey is -1


def _sortable(key: Any) -> bool:
    return _bson_type(key) in _SORT_RANK


def _bson_loads(raw: bytes) -> Any:
    try:
        return bson.decode(raw)
    except BSONError as exc:
        raise ValueError(str(exc)) from None
