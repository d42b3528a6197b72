"""The metadata of a shadow table (:mod:`projections.shadow`): a copy of a live table under
another name, in its own metadata, whose enum columns keep the live types and whose foreign
keys point at the shadows of the projection's tables they reference."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def copy_table(table: sa.Table, name: str, schema: str | None = None) -> sa.Table:
    """``table`` copied as ``name`` (in ``schema`` if given, else in the live table's), its
    foreign keys still naming the tables they reference: :func:`retarget_foreign_keys`."""
    metadata = sa.MetaData(naming_convention=dict(table.metadata.naming_convention))
    moved: dict[str, Any] = {}  # in the live table's schema
    if schema is not None:  # its foreign keys still name the live tables: retargeted
        moved = {"schema": schema, "referred_schema_fn": _referred_schema}
    shadow = table.to_metadata(metadata, name=name, **moved)
    _keep_type_schemas(table, shadow)
    return shadow


def retarget_foreign_keys(mapping: dict[sa.Table, sa.Table]) -> None:
    """Point each copy's foreign keys at the copies of the tables they reference (live
    table -> copy in ``mapping``; at the tables themselves for tables outside it): a copied
    foreign key still names the live table, which is not in the copy's metadata."""
    for live, shadow in mapping.items():
        targets = {(fk.parent.name, fk.target_fullname): fk for fk in live.foreign_keys}
        for fk in shadow.foreign_keys:
            live_fk = targets.get((fk.parent.name, fk.target_fullname))
            if live_fk is None:
                continue
            column = live_fk.column
            target = mapping.get(column.table)
            fk._set_target_column(target.c[column.key] if target is not None else column)


def _keep_type_schemas(live: sa.Table, shadow: sa.Table) -> None:
    """Give the shadow's enum columns the live columns' types: ``to_metadata`` puts a copied
    enum in the copy's schema (``None``, the search path's, for a table without one), so a
    shadow would make a new type beside the live one and the swap would change the column's
    type (and its default's cast)."""
    for column, copied in zip(live.columns, shadow.columns, strict=True):
        if isinstance(copied.type, sa.types.SchemaType):
            copied.type.schema = getattr(column.type, "schema", None)


def _referred_schema(table: sa.Table, to_schema: str, key: Any, referred: str | None) -> str | None:
    """The schema a copied foreign key's table is in: where it was (not the copy's)."""
    return referred
