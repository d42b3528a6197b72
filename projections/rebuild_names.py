"""The names a projection's rebuild derives from its own, and the refusal of a registry in
which one of them is another projection's (or the same one's) name.

A rebuild of ``P`` keeps its progress as the checkpoints of ``P__rebuild``
(:func:`rebuild_checkpoints`); it builds SQL tables into shadows ``<table>__rebuild``, leaves
the live ones as ``<table>__old`` (``<table>__old_<n>``) and its dry run makes
``<table>__dry_run`` in a savepoint (:mod:`projections.shadow_names`); it builds MongoDB
collections as generations ``<collection>__g<n>``. A projection named
``P__rebuild`` would have its checkpoints deleted by P's replay cleanup, and a table or a
collection of the store named like one of P's would be built into, dropped or swapped
away by P's rebuild: :func:`check_rebuild_names` refuses such a set of projections when
they are loaded, naming both. A table named like a dry run's is no clash: the dry run
makes its copies temporary where a table of their name is (:mod:`projections.shadow_plan`),
and on SQLite makes none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from projections.shadow_names import SHADOW_SUFFIX, old_name, shadow_name
from projections.store_identifiers import TableKey, table_key

GENERATION_SUFFIX = "__g"


def rebuild_checkpoints(projection: str) -> str:
    """The projection name a rebuild of ``projection`` keeps its checkpoints under."""
    return f"{projection}{SHADOW_SUFFIX}"


def check_rebuild_names(projections: Sequence[Any], kinds: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` when a projection's name, table or collection is one of the
    names another projection's (or its own) rebuild derives, in the same store; table names
    are compared as the store's kind (``kinds``) resolves them
    (:mod:`projections.store_identifiers`)."""
    kinds = kinds or {}
    names = {p.name: p for p in projections}
    for owner in projections:
        other = names.get(rebuild_checkpoints(owner.name))
        if other is not None:
            raise ValueError(
                f"projection {other.name!r} is named like the rebuild checkpoints of projection "
                f"{owner.name!r} (a replay of {owner.name!r} keeps its progress under that "
                f"name and its cleanup deletes them): rename {other.name!r}"
            )
    for owner in projections:
        for other in projections:
            store = getattr(owner, "store", None)
            if store == getattr(other, "store", None):
                _check_pair(owner, other, kinds.get(store or "default"))


def _check_pair(owner: Any, other: Any, kind: str | None) -> None:
    tables = {table_key(t.name, t.schema, kind): t for t in other.tables}
    for table in owner.tables:
        for clash, kind_of_name in _table_names(table, tables, kind):
            raise ValueError(
                f"table {_full(clash)} of projection {other.name!r} is named like the "
                f"{kind_of_name} of table {_full(table)} that a replay of projection "
                f"{owner.name!r} makes: the replay would build into it, drop it or swap it "
                f"away; rename one of them"
            )
    collections = set(other.collections)
    for collection in owner.collections:
        pattern = re.compile(rf"{re.escape(collection)}{GENERATION_SUFFIX}\d+\Z")
        for found in sorted(c for c in collections if pattern.match(c)):
            raise ValueError(
                f"collection {found!r} of projection {other.name!r} is named like a "
                f"generation of collection {collection!r} that a replay of projection "
                f"{owner.name!r} builds: the replay would build into it or drop it; rename "
                f"one of them"
            )


def _table_names(
    table: Any, tables: dict[TableKey, Any], kind: str | None
) -> Iterable[tuple[Any, str]]:
    """The tables among ``tables`` named like a derived name of ``table``, and which."""
    schema = table.schema

    def key(name: str) -> TableKey:
        return table_key(name, schema, kind)

    shadow, old = key(shadow_name(table.name)), key(old_name(table.name))
    leftover = re.compile(rf"{re.escape(old[1])}_\d+\Z")
    for found, other in tables.items():
        if found[0] != old[0]:
            continue
        if found == shadow:
            yield other, "shadow table"
        elif found == old or leftover.match(found[1]):
            yield other, "old table"


def _full(table: Any) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name
