"""Checks of a projection's declaration made when its class is defined, so that a mistake
is named at once rather than met by every read or every event: a tenant projection's tables
each hold the tenant column but its shared tables (which are its own and lack it), and
``key_tags`` format only what a cached get knows (the primary key of its table; a document's
``_id``)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from projections.api import Projection

_ROOT = re.compile(r"[^.\[]*")  # "{a.b}" and "{a[0]}" read the field "a"


def check_tenant_tables(cls: type[Projection]) -> None:
    """A tenant projection's tables all hold the tenant column, but the shared ones: a
    table without it would otherwise be read by every tenant, unnoticed."""
    column = cls.tenant_column
    if column is None:
        if cls.shared_tables or cls.shared_collections:
            kind = "shared_tables" if cls.shared_tables else "shared_collections"
            raise TypeError(f"{cls.__name__}: {kind} without a tenant_column")
        return
    unknown = [name for name in cls.shared_collections if name not in cls.collections]
    if unknown:
        raise TypeError(
            f"{cls.__name__}: shared_collections names {unknown[0]!r}, which is not one of "
            f"its collections ({', '.join(cls.collections) or 'none'})"
        )
    _check_shared_tables(cls, column)
    for table in cls.tables:
        shared = any(table is other for other in cls.shared_tables)
        if not shared and column not in table.c:
            raise TypeError(
                f"{cls.__name__}: table {table.name!r} has no tenant column {column!r}; add "
                f"it, or list the table in shared_tables if every tenant may read it"
            )


def _check_shared_tables(cls: type[Projection], column: str) -> None:
    """Each shared table is one of the projection's tables, without the tenant column: a
    shared table is read whole by every tenant, so with the column (rows of each tenant)
    every tenant would read every other's rows."""
    for table in cls.shared_tables:
        if not isinstance(table, sa.Table) or not any(table is own for own in cls.tables):
            name = table.name if isinstance(table, sa.Table) else table
            known = ", ".join(repr(own.name) for own in cls.tables) or "none"
            raise TypeError(
                f"{_owner(cls)}: shared_tables names {name!r}, which is not one of its "
                f"tables ({known}): list the sa.Table objects of its tables"
            )
        if column in table.c:
            raise TypeError(
                f"{_owner(cls)}: shared table {table.name!r} has the tenant column "
                f"{column!r}; shared_tables are for reference data without that column, "
                f"which every tenant reads whole (here every tenant would read every "
                f"tenant's rows): take {table.name!r} out of shared_tables to read it per "
                f"tenant, or drop the column"
            )


def check_key_tags(cls: type[Projection]) -> None:
    """Each ``key_tags`` entry names a table (collection) of the projection, and a format
    string's fields are columns of that table's primary key (a collection's: ``_id``), the
    only values a cached get has: another column failed every such get with a bare
    ``KeyError``. A function entry is the projection's business."""
    declared = getattr(cls, "key_tags", None) or {}
    tables = {table.name: table for table in cls.tables}
    for key, tag in declared.items():
        name = key.name if isinstance(key, sa.Table) else str(key)
        where = f"{_owner(cls)}: key_tags[{name!r}]"
        if name in tables:
            keys = [column.name for column in tables[name].primary_key.columns]
            what = f"primary key of table {name!r}"
        elif name in cls.collections:
            keys, what = ["_id"], f"key of collection {name!r}"
        else:
            known = ", ".join([*tables, *cls.collections]) or "none"
            raise TypeError(f"{where}: {name!r} is none of its tables or collections ({known})")
        if callable(tag):
            continue
        if not isinstance(tag, str):
            raise TypeError(f"{where}: expected a format string or a function, got {tag!r}")
        for field in _fields(tag, where):
            if field not in keys:
                shown = f"{{{field}}}" if field else "{}"
                raise TypeError(
                    f"{where}: {tag!r} formats {shown}, which is not a column of the {what} "
                    f"({', '.join(keys) or 'none'}): a cached get knows only its key"
                )


def _owner(cls: type[Projection]) -> str:
    """The class, and the projection's name when it has one of its own."""
    name = vars(cls).get("name")
    return f"{cls.__name__} (projection {name!r})" if isinstance(name, str) else cls.__name__


def _fields(tag: str, where: str) -> Iterator[str]:
    """The names ``tag`` formats (``""`` or a digit for a positional field)."""
    try:
        parsed: list[Any] = list(string.Formatter().parse(tag))
    except ValueError as exc:
        raise TypeError(f"{where}: {tag!r} is not a format string: {exc}") from None
    for _, field, spec, _ in parsed:
        if field is not None:
            match = _ROOT.match(field)
            yield match.group() if match else field
        if spec:
            yield from _fields(spec, where)
