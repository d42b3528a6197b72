"""One owner per table and collection of a store: two projections declaring the same table
or the same collection would write one set of rows, each checkpointed apart, and a replay
of one would rebuild, swap away or drop the other's data. "The same" is what the store
resolves to one table (:mod:`projections.store_identifiers`: on PostgreSQL ``"Orders"`` and
``orders`` are two tables, ``orders`` and ``public.orders`` one; on SQLite ``Orders`` and
``orders`` are one); collection names match as written. ``shared_tables`` and
``shared_collections`` are about tenants (what every tenant of one projection reads), not a
table shared between projections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections.store_identifiers import PG_NAME_BYTES, POSTGRESQL, pg_too_long, table_key


def check_owners(projections: Sequence[Any], kinds: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming both projections and the table (collection) when two
    projections of one store declare the same table or collection; ``kinds`` gives each
    store's kind (:func:`~projections.store_identifiers.store_kinds`)."""
    kinds = kinds or {}
    tables: dict[tuple[str, str | None, str], tuple[Any, Any]] = {}
    collections: dict[tuple[str, str], Any] = {}
    for projection in projections:
        store = getattr(projection, "store", "default")
        for table in projection.tables:
            key = (store, *table_key(table.name, table.schema, kinds.get(store)))
            owner, first = tables.setdefault(key, (projection, table))
            if owner is not projection:
                raise ValueError(
                    f"projections {owner.name!r} and {projection.name!r} both declare table "
                    f"{_full(table)}{_spelled(first, table)}{_cut(first, table, kinds.get(store))}"
                    f" in store {store!r}: each would "
                    f"write the other's rows, and a replay of one would rebuild, swap away or "
                    f"drop the other's; give each its own table"
                )
        for collection in projection.collections:
            owner = collections.setdefault((store, collection), projection)
            if owner is not projection:
                raise ValueError(
                    f"projections {owner.name!r} and {projection.name!r} both declare "
                    f"collection {collection!r} in store {store!r}: each would write the "
                    f"other's documents, and a replay of one would rebuild or drop the "
                    f"other's; give each its own collection"
                )


def _full(table: Any) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def _spelled(first: Any, table: Any) -> str:
    """`` (spelled X by the first)`` when the first declaration spells the name otherwise."""
    return "" if _full(first) == _full(table) else f" (spelled {_full(first)} by the first)"


def _cut(first: Any, table: Any, kind: str | None) -> str:
    """Why two names that differ are one table, when PostgreSQL cut one short."""
    names = [str(n) for t in (first, table) for n in (t.schema, t.name) if n is not None]
    if kind != POSTGRESQL or not any(pg_too_long(name) for name in names):
        return ""
    return (
        f" (PostgreSQL keeps the first {PG_NAME_BYTES} bytes of a name, in which the two are alike)"
    )
