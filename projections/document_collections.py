"""A document projection's collections and their indexes, made the same way for every
generation (:mod:`projections.document_generations`): by the store when a worker starts, and
by a rebuild for the generation it writes.

Beside ``_id``, a collection gets the indexes its projection declares
(``collection_indexes``) and, in a projection with a ``tenant_column``, ``(tenant field,
_id)`` on each collection its tenants do not share: every handler read and write, get, list
and ``@query`` read of such a collection is limited to one tenant, and lists go by ``_id``
within it, so without that index each of them would scan every tenant's documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, OperationFailure

from outbox.errors import StoreError
from projections.api import Projection


def create_collections(database: Database, names: Iterable[str]) -> None:
    """Create those of the collections ``names`` that do not exist yet (another process
    may be creating them at the same time)."""
    present = set(database.list_collection_names())
    for name in names:
        if name not in present:
            try:
                database.create_collection(name)
            except CollectionInvalid:  # another process made it since we listed
                pass
            except OperationFailure as exc:
                if exc.code != 48:  # NamespaceExists: the same, seen by the server
                    raise


def tenant_index(projection: Projection, collection: str) -> tuple[str, ...] | None:
    """The index by tenant of ``collection`` (declared name), or ``None`` for a collection
    every tenant shares (or a projection without tenants)."""
    field = projection.tenant_column
    if field is None or collection in projection.shared_collections:
        return None
    return (field, "_id")


def indexes_of(projection: Projection, collection: str) -> list[tuple[str, ...]]:
    """The fields of each index ``collection`` (declared name) gets beside ``_id``: those
    the projection declares, then its tenant index."""
    found = [
        (fields,) if isinstance(fields, str) else tuple(fields)
        for fields in projection.collection_indexes.get(collection, ())
    ]
    by_tenant = tenant_index(projection, collection)
    if by_tenant is not None and by_tenant not in found:
        found.append(by_tenant)
    return found


def create_collection_indexes(
    database: Database, projection: Projection, physical: Mapping[str, str]
) -> None:
    """The indexes of ``projection``'s collections of one generation (``physical``:
    declared name -> collection): declared ones and the tenant index, each unless an index
    of the same keys exists (whatever its name). The tenant index never stops a start: one
    the server refuses for an index in its way is logged and left out."""
    for collection in projection.collection_indexes:
        if collection not in projection.collections:
            raise StoreError(
                f"projection {projection.name!r} declares indexes on {collection!r}, "
                f"which is not one of its collections"
            )
    for collection, name in physical.items():
        present = database[name].index_information()
        for keys in indexes_of(projection, collection):
            spec = [(field, ASCENDING) for field in keys]
            if any(list(info["key"]) == spec for info in present.values()):
                continue  # made before, maybe by hand under another name: it serves as is
            try:
                database[name].create_index(spec)
            except OperationFailure as exc:
                if keys != tenant_index(projection, collection) or exc.code not in _CONFLICTS:
                    raise
                _tenant_index_conflict(database, name, spec, exc)


_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
"""What the server answers when an index of the same keys, or of the same name, exists."""


def _tenant_index_conflict(
    database: Database, name: str, spec: list[tuple[str, int]], exc: OperationFailure
) -> None:
    """Log that the tenant index of collection ``name`` was not made, for an index there that
    the server says is in its way: the worker starts anyway (the index only speeds reads)."""
    default_name = "_".join(f"{field}_{order}" for field, order in spec)
    existing = [
        f"{index} ({', '.join(f'{field}: {order}' for field, order in info['key'])})"
        for index, info in database[name].index_information().items()
        if index == default_name or list(info["key"]) == spec
    ]
    structlog.get_logger("readmodel.store").warning(
        "tenant index not created: an existing index is in its way",
        collection=name,
        existing=existing,
        wanted=", ".join(field for field, _ in spec),
        reason=exc.details.get("errmsg") if exc.details else str(exc),
    )


def index_warnings(
    database: Database, projection: Projection, physical: Mapping[str, str]
) -> list[str]:
    """A warning (logged, and returned) for each index on ``projection``'s collections of
    one generation that it does not declare (made by hand): a rebuild's next generation
    will not have it."""
    found = []
    for collection, name in physical.items():
        made = {("_id",), *indexes_of(projection, collection)}
        for index, info in database[name].index_information().items():
            keys = tuple(key for key, _ in info["key"])
            if keys not in made:
                found.append(
                    f"index {index} on {name} ({', '.join(keys)}) is not declared in "
                    f"collection_indexes: the new generation will not have it (declare it)"
                )
                structlog.get_logger("readmodel.replay").warning(
                    "a rebuild drops an undeclared index", detail=found[-1]
                )
    return found
