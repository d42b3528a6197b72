"""Columns of a projection's own ``TypeDecorator`` types: what a later batch reads back of a
value a handler wrote to one.

The database stores such a column as the decorator's ``impl`` (for the dialect, through
nested decorators and variants) and compares its keys so: a decorator over ``citext`` or a
SQLite ``NOCASE`` string keeps ``'Ab'`` and ``'aB'`` one row. SQLAlchemy sends a value through
the decorator's ``process_bind_param`` and reads it back through ``process_result_value``;
the value a handler wrote is kept in its batch as that round trip gives it (the bound value
converted as the ``impl`` column stores it, then read back), so that ``tx.get`` in the batch
reads what a later batch reads (a decorator lower-casing e-mail addresses: ``'A@x'`` is read
``'a@x'``, and is the row of the key ``'a@x'``). Written, the kept value goes through
``process_bind_param`` again: a decorator must store a value it read back unchanged (as any
read-modify-write with SQLAlchemy needs). A decorator with neither method is its ``impl``.
One that overrides ``bind_processor``/``result_processor`` or SQL expressions instead is left
as it is: its values are kept as written, its keys compared as Python compares them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from projections.sql_text_values import Found

__all__ = ["decorated", "undecorated"]

# SQLAlchemy's own decorators, which the converters know as they are.
_KNOWN = (sa.Interval, sa.PickleType)
# What a decorator may override besides process_bind_param/process_result_value that changes
# values or the SQL sent: such a decorator is left alone.
_OPAQUE = ("bind_processor", "result_processor", "bind_expression", "column_expression")


def undecorated(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any]
) -> tuple[sa.types.TypeEngine[Any], tuple[TypeDecorator[Any], ...]]:
    """The type the database stores a column of ``column_type`` as, and the projection's
    decorators around it that change values (outermost first). ``column_type`` itself and
    no decorator when it is not a projection's own decorator, or one left alone."""
    decorators: list[TypeDecorator[Any]] = []
    found = column_type
    while isinstance(found, TypeDecorator) and not isinstance(found, _KNOWN):
        if any(_overrides(found, name) for name in _OPAQUE):
            return column_type, ()
        if found._has_bind_processor or found._has_result_processor:
            decorators.append(found)
        found = _variant(dialect, found.load_dialect_impl(dialect))
    return found, tuple(decorators)


def decorated(
    found: Found, decorators: tuple[TypeDecorator[Any], ...], dialect: Dialect
) -> tuple[Callable[[Any], Any], frozenset[type]]:
    """The converter of a column of ``decorators`` around a type converting as ``found``:
    every value (``None`` too) bound, converted, read back."""
    convert, exact = found or (None, frozenset())
    binds = [d.process_bind_param for d in decorators if d._has_bind_processor]
    results = [d.process_result_value for d in reversed(decorators) if d._has_result_processor]

    def as_read_back(value: Any) -> Any:
        for bind in binds:
            value = bind(value, dialect)
        if value is not None and convert is not None and type(value) not in exact:
            value = convert(value)
        for result in results:
            value = result(value, dialect)
        return value

    return as_read_back, frozenset()


def _overrides(decorator: TypeDecorator[Any], name: str) -> bool:
    return getattr(type(decorator), name) is not getattr(TypeDecorator, name)


def _variant(dialect: Dialect, column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    variants = getattr(column_type, "_variant_mapping", None)
    if variants and dialect.name in variants:
        return variants[dialect.name]  # type: ignore[no-any-return]
    return column_type
