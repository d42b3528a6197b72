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
they are loaded, naming both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from projections.shadow_names import DRY_RUN_SUFFIX, SHADOW_SUFFIX, old_name, shadow_name

GENERATION_SUFFIX = "__g"


def rebuild_checkpoints(projection: str) -> str:
    """The projection name a rebuild of ``projection`` keeps its checkpoints under."""
    return f"{projection}{SHADOW_SUFFIX}"


def check_rebuild_names(projections: Sequence[Any]) -> None:
    """Raise ``ValueError`` when a projection's name, table or collection is one of the
    names another projection's (or its own) rebuild derives, in the same store."""
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
            if getattr(owner, "store", None) == getattr(other, "store", None):
                _check_pair(owner, other)


def _check_pair(owner: Any, other: Any) -> None:
    tables = {(t.schema, t.name.casefold()): t for t in other.tables}
    for table in owner.tables:
        for derived, kind in _table_names(table.name, tables, table.schema):
            clash = tables[(table.schema, derived.casefold())]
            raise ValueError(
                f"table {_full(clash)} of projection {other.name!r} is named like the {kind} "
                f"of table {_full(table)} that a replay of projection {owner.name!r} makes: "
                f"the replay would build into it, drop it or swap it away; rename one of them"
            )
    collections = set(other.collections)
    for collection in owner.collections:
        pattern = re.compile(rf"{re.escape(collection)}{GENERATION_SUFFIX}\d+\Z")
        for clash in sorted(c for c in collections if pattern.match(c)):
            raise ValueError(
                f"collection {clash!r} of projection {other.name!r} is named like a "
                f"generation of collection {collection!r} that a replay of projection "
                f"{owner.name!r} builds: the replay would build into it or drop it; rename "
                f"one of them"
            )


def _table_names(
    name: str, tables: dict[tuple[str | None, str], Any], schema: str | None
) -> Iterable[tuple[str, str]]:
    """The derived names of the table ``name`` that are among ``tables``."""
    shadow, old, dry_run = shadow_name(name), old_name(name), shadow_name(name, DRY_RUN_SUFFIX)
    leftover = re.compile(rf"{re.escape(old.casefold())}_\d+\Z")
    for key in tables:
        if key[0] != schema:
            continue
        if key[1] == shadow.casefold():
            yield key[1], "shadow table"
        elif key[1] == old.casefold() or leftover.match(key[1]):
            yield key[1], "old table"
        elif key[1] == dry_run.casefold():
            yield key[1], "dry run's table"


def _full(table: Any) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name
