"""Values of sized text, enum, text-UUID and PostgreSQL array columns as a store keeps them.

A companion of :mod:`projections.sql_values` and :mod:`projections.sql_other_values`, observed
on PostgreSQL (through psycopg) and SQLite (through SQLAlchemy's processors), and checked by
``tests/test_batch_text_values.py`` and ``tests/test_batch_array_values.py``:

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
- PostgreSQL ``ARRAY``: a list (or tuple) of any depth, each element converted as its item
  type's column converts a value, except that text is cut to a ``VARCHAR(n)``'s length
  whatever the excess (an array is cast as an explicit cast cuts) and a boolean array takes
  no text (SQLAlchemy binds none). Refused: another value (SQLAlchemy would send a string's
  characters), sub-arrays of unequal lengths, empty sub-arrays, a list mixing sub-lists and
  values, or values of several types once converted (psycopg sends no such list).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.sql_limits import Unstorable, UnstorableLength, UnstorableWide

Converter = Callable[[Any], Any]
Found = tuple[Converter, frozenset[type]] | None

_NONE = type(None)
NUL_TEXT = (
    "PostgreSQL text holds no NUL character ('\\x00'): remove it, or write bytes to a bytea column"
)


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
        if "\x00" in stored:
            raise Unstorable(NUL_TEXT)
        size = len(stored)
        if size > length:
            if not cut and stored[length:].strip(" "):
                raise UnstorableLength(
                    f"value too long for type {sql}: {size} characters (PostgreSQL cuts only "
                    "blanks past the length)",
                    stored,
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
        except (LookupError, TypeError):  # TypeError: a list or dict (unhashable)
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


# -- Arrays (PostgreSQL) -------------------------------------------------------------------

_PG_INTEGER_BITS = {"SMALLINT": 16, "INTEGER": 32, "BIGINT": 64}
_NOT_ARRAY = "an ARRAY column takes a list (SQLAlchemy would send a text's characters)"
_RAGGED = "PostgreSQL takes no sub-arrays of unequal lengths (multidimensional arrays)"
_EMPTY = "PostgreSQL takes no empty sub-array"
_MIXED_DEPTH = "a list mixes sub-lists and values (PostgreSQL takes no such array)"
_FLAG_ITEM = "a boolean array takes True or False, or 0 or 1 (SQLAlchemy binds no text into it)"


def pg_array(
    dialect: Dialect,
    column_type: sa.ARRAY[Any],
    converter_of: Callable[[sa.types.TypeEngine[Any]], Found],
) -> Found:
    """The converter of a PostgreSQL ``ARRAY`` column, given ``converter_of``, the converter of
    a column of a type (its item type's, applied to each element)."""
    item = column_type.item_type
    if isinstance(item, sa.String) and not isinstance(item, sa.Enum):
        text, _ = converter_of(sa.Text()) or (None, None)
        found = sized_text(dialect, item, text, cut=True) if text is not None else None
        if found is None:
            found = converter_of(item)
            if found is not None:  # each str too: PostgreSQL text holds no NUL
                found = (found[0], found[1] - {str})
    elif isinstance(item, sa.Boolean):
        found = converter_of(item)
        if found is not None:
            found = (_no_text(found[0]), found[1])
    elif isinstance(item, sa.JSON | sa.ARRAY):
        found = None
    else:
        found = converter_of(item)
    if found is None:
        return None
    element, exact = found
    bits = None
    if isinstance(item, sa.Integer):
        sql = item.compile(dialect=dialect).upper()
        bits = _PG_INTEGER_BITS.get(sql, 64), sql

    def convert(value: Any) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise Unstorable(_NOT_ARRAY)
        kinds: set[type] = set()
        converted = _elements(value, element, exact, kinds, "")
        if len(kinds) > 1:
            names = ", ".join(sorted(kind.__name__ for kind in kinds))
            raise Unstorable(f"psycopg sends no list mixing values of types {names}")
        if bits is not None and int in kinds:
            _check_width(converted, bits, "")
        return converted

    return convert, frozenset({_NONE})


def _elements(
    value: list[Any] | tuple[Any, ...],
    element: Converter,
    exact: frozenset[type],
    kinds: set[type],
    where: str,
) -> list[Any]:
    """``value``'s elements converted (sub-lists of equal lengths, as SQLAlchemy binds them:
    a level is of sub-lists when its first element is one), the types of the values in
    ``kinds``."""
    if value and isinstance(value[0], list | tuple):
        rows = []
        shape = None
        for index, row in enumerate(value):
            if not isinstance(row, list | tuple):
                raise Unstorable(f"item {where}[{index}]: {_MIXED_DEPTH}")
            if not row:
                raise Unstorable(f"item {where}[{index}]: {_EMPTY}")
            converted = _elements(row, element, exact, kinds, f"{where}[{index}]")
            found = _shape(converted)
            if shape is not None and found != shape:
                raise Unstorable(f"item {where}[{index}]: {_RAGGED}")
            shape = found
            rows.append(converted)
        return rows
    out = []
    for index, item in enumerate(value):
        if isinstance(item, list | tuple):
            raise Unstorable(f"item {where}[{index}]: {_MIXED_DEPTH}")
        if item is not None and type(item) not in exact:
            try:
                item = element(item)
            except Unstorable as exc:
                kind = type(exc)
                raise kind(f"item {where}[{index}]: {exc.why}") from None
        if item is not None:
            kinds.add(type(item))
        out.append(item)
    return out


def _shape(value: list[Any]) -> tuple[int, ...]:
    if value and isinstance(value[0], list):
        return (len(value), *_shape(value[0]))
    return (len(value),)


def _check_width(value: list[Any], bits: tuple[int, str], where: str) -> None:
    """Refuse an integer out of the item type's width (a text or a ``Decimal`` converted)."""
    width, sql = bits
    bound = 2 ** (width - 1)
    for index, item in enumerate(value):
        if type(item) is list:
            _check_width(item, bits, f"{where}[{index}]")
        elif type(item) is int and not -bound <= item < bound:
            raise UnstorableWide(
                f"item {where}[{index}] is past the {width}-bit integers an array of {sql} holds"
            )


def _no_text(convert: Converter) -> Converter:
    def checked(value: Any) -> Any:
        if type(value) is str:
            raise Unstorable(_FLAG_ITEM)
        try:
            return convert(value)
        except Unstorable:
            raise Unstorable(_FLAG_ITEM) from None

    return checked
