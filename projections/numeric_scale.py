"""Numbers given with more places than a ``NUMERIC(p, s)`` key keeps (``0.125`` for
``NUMERIC(10, 2)``), rounded as the store rounds them on a write, so that a key, a filter
and the tags of an event find the row the same number wrote.

PostgreSQL rounds half away from zero (``0.125`` is the row ``0.13``, ``-0.125`` the row
``-0.13``; ``NUMERIC(p)`` is ``NUMERIC(p, 0)``); SQLite keeps the double SQLAlchemy binds (but
a whole number of 64 bits, kept exactly: :mod:`outbox.sqlite_whole_numbers`), read back at
the scale (``0.125`` is ``0.12``, ``0.165`` is ``0.17``:
:mod:`projections.sql_sqlite_numbers`), and a ``NUMERIC`` without a scale as the double
itself (nothing rounded here).

An applied event tags its aggregate id as the service spelled it (``price:0.125``), where
a cached get of the row is tagged with the row's key (``price:0.13``): a SQL store's
batch therefore also invalidates each tag whose id has more places than a ``NUMERIC`` key
column of the projection keeps, rounded to that column's scale (:func:`with_scaled_spellings`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from outbox.sqlite_whole_numbers import whole_int
from projections.sql_number_values import WIDE_CONTEXT
from projections.tag_spelling import key_text, tag_number

__all__ = ["at_scale", "key_scales", "numeric_scale", "with_scaled_spellings"]


def numeric_scale(column_type: Any, sqlite: bool) -> int | None:
    """The places a ``NUMERIC`` column of ``column_type`` rounds a number to on the store
    (``None``: it keeps the number as given, or is no ``NUMERIC``)."""
    if isinstance(column_type, sa.Float):
        return None
    scale = getattr(column_type, "scale", None)  # a TypeDecorator's: its impl's
    if scale is None and not sqlite and isinstance(column_type, sa.Numeric):
        if column_type.precision is not None:
            return 0  # PostgreSQL's NUMERIC(p) is NUMERIC(p, 0)
    return scale


def at_scale(value: Decimal, scale: int, sqlite: bool) -> Decimal:
    """``value`` (finite) at ``scale`` places, as a store of the kind writes it, at any
    number of digits; ``value`` itself when no row could hold it (past the exponents a
    decimal context takes)."""
    if sqlite:
        whole = whole_int(value)  # bound as the int it is (outbox.sqlite_whole_numbers)
        if whole is not None:  # exact at any scale (quantize stops at 28 digits)
            return Decimal(f"{whole}.{'0' * scale}") if scale else Decimal(whole)
        return Decimal(f"{float(value):.{scale}f}")
    try:  # at any number of digits (the default context rounds to 28)
        rounded = value.quantize(Decimal(1).scaleb(-scale), ROUND_HALF_UP, WIDE_CONTEXT)
    except ArithmeticError:
        return value
    return rounded if rounded else rounded.copy_abs()  # the server keeps no -0


def key_scales(tables: Iterable[sa.Table], sqlite: bool) -> frozenset[int]:
    """The scales of the ``NUMERIC`` primary-key columns of ``tables``."""
    scales = (numeric_scale(c.type, sqlite) for t in tables for c in t.primary_key.columns)
    return frozenset(scale for scale in scales if scale is not None)


def with_scaled_spellings(
    tags: set[str] | None, tables: Iterable[sa.Table], sqlite: bool
) -> set[str] | None:
    """``tags`` and, for each whose id is a number of more places than a ``NUMERIC`` key
    column of ``tables`` keeps, the tag of that number as the column keeps it; ``tags``
    itself when none is."""
    if not tags:
        return tags
    scales = key_scales(tables, sqlite)
    if not scales:
        return tags
    spelled = set(tags)
    for tag in tags:
        found = tag_number(tag)
        if found is None:
            continue
        head, number = found
        places = -number.as_tuple().exponent  # type: ignore[operator]
        for scale in scales:
            if places > scale:
                spelled.add(head + str(key_text(at_scale(number, scale, sqlite))))
    return spelled
