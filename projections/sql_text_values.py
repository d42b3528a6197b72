"""Values of sized text, enum and text-UUID columns as a store keeps them.

A companion of :mod:`projections.sql_values` and :mod:`projections.sql_other_values`, observed
on PostgreSQL (through psycopg) and SQLite (through SQLAlchemy's processors), and checked by
``tests/test_batch_text_values.py``:

- PostgreSQL ``VARCHAR(n)`` / ``CHAR(n)`` (``String(n)``, ``CHAR``, ``NCHAR``...): a value is
  first the text the column stores of it (a number, boolean or date as the server prints
  it); text longer than ``n`` characters is cut to ``n`` when the excess is only blanks (as
  PostgreSQL's assignment does, without a word), refused otherwise ("value too long", which
  failed the whole batch at the flush, or was hidden by a later write of the row in the
  batch); ``CHAR(n)`` is blank-padded to ``n`` (``CHAR`` alone is ``CHAR(1)``). SQLite
  enforces no length: its text columns keep what :mod:`projections.sql_other_values` says.
- ``Enum`` (native or not, on both stores): a value SQLAlchemy binds to one of the enum's
  values is read back as SQLAlchemy reads it (with an enum class, its member: ``'RED'`` and
  ``Color.RED`` both read ``Color.RED``); any other value is refused naming the column and
  its values (PostgreSQL refused it at the flush; a non-native enum, and SQLite, stored it
  and no later read of the row succeeded).
- ``Uuid(as_uuid=False)``: read back as ``str(uuid.UUID(...))``, the canonical text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.sql_limits import Unstorable, UnstorableLength

Converter = Callable[[Any], Any]
Found = tuple[Converter, frozenset[type]] | None

_NONE = type(None)


# -- Sized text (PostgreSQL) -------------------------------------------------------------

_TYPE_NAME = re.compile(r"[A-Z ]+")
_BLANK_PADDED = frozenset({"CHAR", "NCHAR", "CHARACTER", "NATIONAL CHAR", "NATIONAL CHARACTER"})


def sized_text(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any], text: Converter, cut: bool = False
) -> Found:
    """The converter of a PostgreSQL ``VARCHAR(n)`` or ``CHAR(n)`` column (``None`` for text of
    any length), given ``text``: what a text column stores of a value. ``cut``: text longer
    than the column is cut, as an explicit cast (an array's) cuts it, not refused."""
    found = _TYPE_NAME.match(column_type.compile(dialect=dialect).upper())
    name = found.group().strip() if found else ""
    padded = name in _BLANK_PADDED
    length = getattr(column_type, "length", None) or (1 if padded else None)
    if length is None:
        return None
    sql = f"character{'' if padded else ' varying'}({length})"

    def convert(value: Any) -> Any:
        stored = value if type(value) is str else text(value)
        if type(stored) is not str:
            return stored  # the flush stores or refuses it
        size = len(stored)
        if size > length:
            if not cut and stored[length:].strip(" "):
                raise UnstorableLength(
                    f"value too long for type {sql}: {size} characters (PostgreSQL cuts only "
                    "blanks past the length)"
                )
            stored = stored[:length]
        elif padded and size < length:
            stored = stored.ljust(length)
        return stored

    return convert, frozenset({_NONE})


# -- Enums (both stores) -----------------------------------------------------------------


def enum_value(dialect: Dialect, column_type: sa.Enum) -> Found:
    """The converter of an ``Enum`` column: what SQLAlchemy binds, read back as it reads it;
    a value it binds to no value of the enum is refused, naming them."""
    impl = column_type.dialect_impl(dialect)
    bind = impl.bind_processor(dialect)
    result = impl.result_processor(dialect, None)
    allowed = [str(value) for value in column_type.enums]
    known = frozenset(allowed)
    names = ", ".join(map(repr, allowed))
    enum_class = column_type.enum_class
    members = f" (or a member of {enum_class.__name__})" if enum_class is not None else ""
    why = f"an Enum column takes one of {names}{members}"

    def convert(value: Any) -> Any:
        try:
            bound = value if bind is None else bind(value)
        except LookupError:
            raise Unstorable(why) from None
        if isinstance(bound, str) and type(bound) is not str:
            bound = str.__str__(bound)  # a str enum's member: drivers send its text
        if type(bound) is not str or bound not in known:
            raise Unstorable(why)
        try:
            return bound if result is None else result(bound)
        except LookupError:
            raise Unstorable(why) from None

    return convert, frozenset({_NONE})


# -- Text UUIDs (both stores) ------------------------------------------------------------


def uuid_text(to_uuid: Converter) -> Found:
    """The converter of a ``Uuid(as_uuid=False)`` column, given ``to_uuid``, that of a
    ``Uuid`` column (which refuses what is no UUID): the canonical text read back."""

    def convert(value: Any) -> str:
        return str(to_uuid(value))

    return convert, frozenset({_NONE})
