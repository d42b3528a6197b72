"""Values as a store keeps them: what a later batch reads back of a value a handler wrote.

:class:`projections.sql_tx.SqlTx` gives a handler the writes of earlier events of the same
batch from memory. Unless those values are stored as the database would store them, a
handler would see ``Decimal("0.5625")`` in a ``NUMERIC(10, 2)`` column inside a batch and
``Decimal("0.56")`` across a batch boundary: the result would depend on where batches fall
(live and replay batches differ). :func:`stored_values` gives, per table, a converter for
each column whose type the database converts values into; ``SqlTx.upsert`` applies them.

The conversions follow what PostgreSQL (through psycopg) and SQLite (through SQLAlchemy's
processors) were observed to return (``tests/test_batch_values.py`` checks each against the
database):

- PostgreSQL ``NUMERIC(p, s)``: rounded to ``s`` places, half away from zero (``NUMERIC(p)``
  is scale 0); a float is first taken with 15 significant digits (``float8_numeric``). A
  value needing more than ``p - s`` digits before the point once rounded is refused
  ("numeric field overflow"), as is a boolean (into any number column but ``INTEGER``).
- PostgreSQL integers: a float rounds half to even (``rint``), a ``Decimal`` half away from
  zero, a string of digits is parsed.
- SQLite ``NUMERIC``: SQLAlchemy binds a float and reads ``Decimal("%.<scale>f" % value)``
  (scale 10 when the type has none); the column's affinity keeps integral values as integers.
- SQLite integers: an integral float or a numeric string becomes an integer; other values
  are kept as they are (SQLite's type affinity). A ``Decimal``, which the driver cannot
  bind, becomes an integer as on PostgreSQL (half away from zero); NaN or infinity is
  refused naming the column (:class:`~projections.api.UnstorableValueError`).
- Floats: an integer or ``Decimal`` is read back as a float (``REAL`` on PostgreSQL: as the
  nearest single-precision value, printed shortest).
- Text (``CHAR(n)`` blank-padded, ``VARCHAR(n)`` lengths), enums, arrays: see
  :mod:`projections.sql_text_values`; booleans, datetimes and JSON:
  :mod:`projections.sql_other_values`.

Primary key columns are converted alike, and so are the keys a handler looks up
(:meth:`Converters.key`). A value no column keeps as written (NaN into an integer column or
any SQLite column, which stores it as NULL) is refused naming the column
(:class:`~projections.api.UnstorableValueError`); one a converter does not know (a type the
database refuses, an overflow) is left as it is: the flush then stores or refuses it.
But an integer the column would not keep (payloads carry integers exactly,
whatever their size) is refused at once, naming the column: see
:mod:`projections.sql_limits`.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from datetime import UTC, tzinfo
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any, NamedTuple, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.api import WideIntegerError
from projections.sql_keys import compile_key
from projections.sql_limits import (
    Bounds,
    Unstorable,
    UnstorableLength,
    UnstorableWide,
    integer_bounds,
    json_refusal,
    value_refusal,
)
from projections.sql_other_values import SQLITE_NAN, Converter, postgresql_other, sqlite_other
from projections.sql_text_values import Found, pg_array

__all__ = ["Column", "Converters", "WideIntegerError", "normalize", "stored_values"]


class Column(NamedTuple):
    """A converted or checked column of a table."""

    name: str
    convert: Converter | None
    exact: frozenset[type]  # value types that need no conversion
    bounds: Bounds | None  # the integers the column keeps, when not every one
    unwritable: Callable[[Exception], NoReturn] | None  # a JSON column's refusal of one
    unstorable: Callable[[Any, Unstorable], NoReturn]  # refuses what ``convert`` cannot keep


_NONE = type(None)
_INT64 = 2**63
_PG_INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
# What numeric_in and float8in also read (any case): NaN, infinities.
_SPECIAL = re.compile(r"\s*(nan|[+-]?inf(inity)?)\s*", re.ASCII | re.IGNORECASE)
_NAN = Decimal("NaN")
_NO_INTEGER = "an integer column holds no NaN or infinity"


class Converters:
    """The converters of one table's columns. :meth:`normalize` is compiled once per table
    (as ``dataclasses`` compiles ``__init__``): an upsert pays a test per converted column
    it names, a call only for a value of a type its column converts. So is :meth:`key`:
    a key of its columns' types is returned as it is, after a type test per column."""

    __slots__ = ("columns", "key", "keys", "normalize")

    def __init__(self, columns: tuple[Column, ...], keys: tuple[Column | None, ...]) -> None:
        self.columns = columns
        self.normalize: Callable[[dict[str, Any], Any], None] = _compile(columns)
        self.keys = keys if any(keys) else None
        """Per primary key column, its converter (``None`` when no key column has one)."""
        self.key: Callable[..., tuple[Any, ...] | None] = compile_key(
            self.keys, self._converted_key
        )
        """``key(key, lookup=False)``: ``key`` as its columns store it: a row upserted as
        ``{"id": "42"}`` into an integer key is found by ``get(table, 42)``, in its batch as in
        a later one. A key ``lookup`` longer than its column is kept as given: it matches no
        row; one with an integer outside its column's bounds is ``None``: no row has it."""

    def __bool__(self) -> bool:
        return bool(self.columns)

    def _converted_key(self, key: tuple[Any, ...], lookup: bool = False) -> tuple[Any, ...] | None:
        if self.keys is None:
            return key
        out = []
        for value, column in zip(key, self.keys, strict=True):
            if column is not None and column.convert is not None:
                if value is not None and type(value) not in column.exact:
                    try:
                        value = column.convert(value)
                    except UnstorableLength as exc:
                        if not lookup:
                            column.unstorable(value, exc)
                    except UnstorableWide as exc:
                        if lookup and column.bounds is not None:
                            return None  # past any integer the column keeps: no row
                        column.unstorable(value, exc)
                    except Unstorable as exc:
                        column.unstorable(value, exc)
            out.append(value)
        return tuple(out)


def _compile(columns: tuple[Column, ...]) -> Callable[[dict[str, Any], Any], None]:
    """``normalize(row, given)`` for these columns, its names closure cells (fast to load).
    It refuses an integer out of a column's bounds before converting (and, where the
    column converts a ``Decimal`` or text into one, after): ``row`` may be converted in
    part then, so a caller passes a copy it can drop."""
    names: dict[str, Any] = {
        "_MISSING": _MISSING,
        "_type": type,
        "_int": int,
        "_list": list,
        "_Unstorable": Unstorable,
    }
    body = ["    def normalize(row, given):", "        get = given.get"]
    for i, (name, convert, exact, bounds, unwritable, unstorable) in enumerate(columns):
        tests = []  # the value's type first: one of the column's own ends the tests
        for j, kind in enumerate(kind for kind in exact if kind is not _NONE):
            names[f"kind{i}_{j}"] = kind
            tests.append(f"kind is not kind{i}_{j}")
        tests.append("value is not _MISSING")
        if _NONE in exact:
            tests.append("value is not None")
        body.append(f"        value = get({name!r}, _MISSING)")
        if bounds is not None or any(test.startswith("kind") for test in tests):
            body.append("        kind = _type(value)")
        out_of_bounds = f"(value > high{i} or value < low{i})"
        if bounds is not None:
            names |= {f"low{i}": bounds.low, f"high{i}": bounds.high, f"refuse{i}": bounds.refuse}
            body.append(f"        if kind is _int and {out_of_bounds}:")
            body.append(f"            refuse{i}(value)")
            if bounds.items:
                names[f"items{i}"] = bounds.check_items
                body.append("        elif kind is _list:")
                body.append(f"            items{i}(value)")
        if convert is not None:
            names[f"convert{i}"] = convert
            names[f"unstorable{i}"] = unstorable
            body.append(f"        if {' and '.join(tests)}:")
            body.append("            try:")
            body.append(f"                value = convert{i}(value)")
            body.append("            except _Unstorable as exc:")
            body.append(f"                unstorable{i}(value, exc)")
            if unwritable is not None:
                names[f"unwritable{i}"] = unwritable
                body.append("            except TypeError as exc:")
                body.append(f"                unwritable{i}(exc)")
            body.append(f"            row[{name!r}] = value")
            if bounds is not None and bounds.converted:
                body.append(f"            if _type(value) is _int and {out_of_bounds}:")
                body.append(f"                refuse{i}(value)")
    source = "\n".join([f"def make({', '.join(names)}):", *body, "    return normalize"])
    scope: dict[str, Any] = {}
    exec(source, scope)  # noqa: S102 - code built from the table's column names (repr'd)
    return scope["make"](**names)  # type: ignore[no-any-return]


_MISSING = object()
_converters: dict[tuple[str, sa.Table, tzinfo | None], Converters] = {}


def stored_values(dialect: Dialect, table: sa.Table, zone: tzinfo | None = None) -> Converters:
    """The converters of ``table``'s columns whose values the database converts (computed
    once per dialect, table and session time zone ``zone``, PostgreSQL's ``TimeZone``; empty
    for a table that needs none, or another dialect)."""
    key = (dialect.name, table, zone)
    found = _converters.get(key)
    if found is None:
        context = _Context(dialect, table, zone)
        columns: dict[str, Column] = {}
        for column in table.columns:
            converter = _converter(context, column)
            bounds = integer_bounds(dialect, table, column)
            if converter is not None or bounds is not None:
                convert, exact = converter or (None, frozenset())
                json = isinstance(column.type, sa.JSON) and convert is not None
                unwritable = json_refusal(table, column) if json else None
                unstorable = value_refusal(table, column)
                columns[column.name] = Column(
                    column.name, convert, exact, bounds, unwritable, unstorable
                )
        keys = tuple(columns.get(column.name) for column in table.primary_key.columns)
        found = _converters[key] = Converters(tuple(columns.values()), keys)
    return found


class _Context:
    """What a column's converter depends on besides its type."""

    def __init__(self, dialect: Dialect, table: sa.Table, zone: tzinfo | None) -> None:
        self.dialect = dialect
        self.zone = zone or UTC


def normalize(converters: Converters, row: dict[str, Any], given: Any) -> None:
    """Convert, in place, the values of ``row`` whose columns ``given`` (a mapping) names."""
    converters.normalize(row, given)


def _converter(
    context: _Context, column: sa.Column[Any]
) -> tuple[Converter, frozenset[type]] | None:
    dialect, column_type = context.dialect, column.type
    variants = getattr(column_type, "_variant_mapping", None)  # with_variant(type, dialect)
    if variants and dialect.name in variants:
        column_type = variants[dialect.name]
    if dialect.name == "postgresql":
        if isinstance(column_type, sa.ARRAY):  # its elements as its item type converts one
            return pg_array(dialect, column_type, lambda item: _pg_any(context, item))
        found = _postgresql(dialect, column_type)
        if found is None:
            found = postgresql_other(context.dialect, column_type, context.zone)
        return found
    if dialect.name == "sqlite":
        found = _sqlite(dialect, column_type)
        if found is None:
            found = sqlite_other(dialect, column_type, _sqlite_integer)
        return found
    return None


def _pg_any(context: _Context, column_type: sa.types.TypeEngine[Any]) -> Found:
    found = _postgresql(context.dialect, column_type)
    return found or postgresql_other(context.dialect, column_type, context.zone)


# -- PostgreSQL ------------------------------------------------------------------------


def _postgresql(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any]
) -> tuple[Converter, frozenset[type]] | None:
    if isinstance(column_type, sa.Float):
        sql = column_type.compile(dialect=dialect).upper()
        single = sql == "REAL" or (
            sql.startswith("FLOAT(")
            and column_type.precision is not None
            and column_type.precision <= 24
        )
        to_float = _pg_real if single else _pg_double
        if column_type.asdecimal:
            scale = column_type._effective_decimal_return_scale
            return _then(to_float, float, _decimal_places(scale)), frozenset({_NONE})
        return to_float, frozenset({_NONE} if single else {float, _NONE})
    if isinstance(column_type, sa.Numeric):
        scale = column_type.scale
        if scale is None and column_type.precision is not None:
            scale = 0  # NUMERIC(p) is NUMERIC(p, 0)
        to_decimal = _pg_numeric(scale, column_type.precision)
        if not column_type.asdecimal:
            return _then(to_decimal, Decimal, float), frozenset({_NONE})
        return to_decimal, frozenset({_NONE})
    if isinstance(column_type, sa.Integer):
        # PostgreSQL casts a boolean to INTEGER (int4) on assignment, to no other integer.
        if column_type.compile(dialect=dialect).upper() == "INTEGER":
            return _pg_int4, frozenset({int, _NONE})
        return _pg_bigint, frozenset({int, _NONE})
    return None


def _pg_numeric(scale: int | None, precision: int | None) -> Converter:
    """``NUMERIC(precision, scale)`` (``precision`` given: no infinity, and at most
    ``precision - scale`` digits before the point once rounded, else "numeric field
    overflow")."""
    exponent = None if scale is None else Decimal(1).scaleb(-scale)
    limit = None if precision is None else Decimal(1).scaleb(precision - (scale or 0))
    # A Decimal already at the scale fits when it has fewer digits before the point.
    digits = MAX_EMAX if precision is None else precision - (scale or 0)

    def convert(value: Any) -> Any:
        kind = type(value)
        if (
            kind is Decimal
            and exponent is not None
            and value.same_quantum(exponent)  # finite, at the scale
            and value.adjusted() < digits
            and (value or not value.is_signed())  # no negative zero
        ):
            return value
        try:
            if kind is Decimal:
                number = value
            elif kind is int:
                number = Decimal(value)
            elif kind is float:
                if not math.isfinite(value):
                    number = Decimal(value)
                else:
                    number = Decimal(f"{value:.15g}")  # float8_numeric: DBL_DIG digits
            elif kind is str and (_NUMBER.fullmatch(value) or _SPECIAL.fullmatch(value)):
                number = Decimal(value.strip())
            elif kind is bool:
                raise Unstorable(_NO_BOOLEAN_NUMBER)
            else:
                return value
            if number.is_nan():
                return value if number.is_snan() else _NAN
            if number.is_infinite():
                if limit is not None:
                    raise Unstorable("a NUMERIC(p, s) column holds no infinity")
                return number
            # copy_abs: exact, where abs() rounds to the thread's context (28 digits).
            if limit is not None and number.copy_abs() >= limit:  # before rounding
                _overflow(precision, scale)
            if exponent is not None:
                number = number.quantize(exponent, ROUND_HALF_UP, _WIDE)
            elif number.as_tuple().exponent > 0:  # type: ignore[operator]
                number = number.quantize(1, context=_WIDE)  # PostgreSQL writes 1E+2 as 100
            if limit is not None and number.copy_abs() >= limit:  # 99.995 is 100.00
                _overflow(precision, scale)
        except (InvalidOperation, ValueError):
            return value
        return number if number else number.copy_abs()  # no negative zero

    return convert


def _overflow(precision: int | None, scale: int | None) -> NoReturn:
    digits = (precision or 0) - (scale or 0)
    raise Unstorable(
        f"numeric field overflow: a NUMERIC({precision}, {scale or 0}) column holds less than "
        f"10^{digits} in magnitude once rounded to {scale or 0} places"
    )


# Wide enough for any NUMERIC(p, s) (p at most 1000) and PostgreSQL's unbounded numeric.
_WIDE = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_NO_BOOLEAN_NUMBER = "PostgreSQL casts no boolean to a number column: write 1 or 0"
_NO_INTEGER_TEXT = "PostgreSQL reads no integer from this text (write the number, rounded)"


_FAR_PAST_64_BITS = 100  # an exponent from which no integer column could hold the value


def _decimal_integer(value: Decimal) -> int:
    """``value`` rounded half away from zero, as PostgreSQL rounds it into an integer column;
    refused before it is written out as an ``int`` when far past what any integer column holds
    (a Decimal of exponent 3,000,000 takes minutes to write out); nearer ones are refused by
    the column's bounds, naming the integer."""
    if value.adjusted() >= _FAR_PAST_64_BITS:
        raise UnstorableWide("it is past 64 bits: no integer column holds it")
    return int(value.to_integral_value(ROUND_HALF_UP))


def _pg_integer(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise Unstorable(_NO_INTEGER)
        return round(value)  # rint: half to even
    if kind is Decimal:
        if not value.is_finite():
            raise Unstorable(_NO_INTEGER)
        return _decimal_integer(value)
    if kind is str:
        if _PG_INTEGER.fullmatch(value):
            return _integer_text(value)
        if _NUMBER.fullmatch(value) or _SPECIAL.fullmatch(value):
            raise Unstorable(_NO_INTEGER_TEXT)
    return value


def _integer_text(text: str) -> int:
    """The integer of ``text`` (digits, a sign, blanks: as ``int8in`` reads it); refused when
    far past 64 bits, before Python reads it (at most 4,300 digits: a ValueError); nearer ones
    are refused by the column's bounds, naming the integer."""
    text = text.strip()
    sign = "-" if text[0] == "-" else ""
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _FAR_PAST_64_BITS:
        raise UnstorableWide("it is past 64 bits: no integer column holds it")
    return int(sign + (digits or "0"))


def _pg_bigint(value: Any) -> Any:
    """BIGINT and SMALLINT: PostgreSQL casts a boolean to ``INTEGER`` only."""
    if type(value) is bool:
        raise Unstorable(_NO_BOOLEAN_NUMBER)
    return _pg_integer(value)


def _pg_int4(value: Any) -> Any:
    return int(value) if type(value) is bool else _pg_integer(value)


def _pg_double(value: Any) -> Any:
    kind = type(value)
    if kind is bool:
        raise Unstorable(_NO_BOOLEAN_NUMBER)
    if (
        kind is int
        or kind is Decimal
        or (kind is str and (_NUMBER.fullmatch(value) or _SPECIAL.fullmatch(value)))
    ):
        try:
            return float(value)
        except (OverflowError, ValueError):
            return value
    return value


def _pg_real(value: Any) -> Any:
    """The nearest single-precision value, as PostgreSQL prints it (shortest digits)."""
    number = _pg_double(value)
    if type(number) is not float:
        return value
    if not math.isfinite(number):
        return number
    try:
        single = _SINGLE.unpack(_SINGLE.pack(number))[0]
    except (OverflowError, struct.error):
        return value
    for digits in range(1, 10):
        shortest = float(f"{single:.{digits}g}")
        if _SINGLE.unpack(_SINGLE.pack(shortest))[0] == single:
            return shortest
    return single


_SINGLE = struct.Struct("f")


# -- SQLite ----------------------------------------------------------------------------


def _sqlite(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any]
) -> tuple[Converter, frozenset[type]] | None:
    if isinstance(column_type, sa.Numeric | sa.Float):  # SQLAlchemy binds a float
        impl = column_type.dialect_impl(dialect)
        bind = impl.bind_processor(dialect) or float
        result = impl.result_processor(dialect, None)
        # REAL affinity keeps floats; NUMERIC affinity stores an integral float as an integer.
        real = isinstance(column_type, sa.Float)
        stored = _sqlite_real if real else _sqlite_integral
        return _sqlite_bound(bind, stored, result), frozenset({_NONE})
    if isinstance(column_type, sa.Integer):
        return _sqlite_integer_column, frozenset({int, _NONE})
    return None


def _sqlite_integer_column(value: Any) -> Any:
    """INTEGER affinity, and a ``Decimal`` (which the driver cannot bind) as PostgreSQL
    stores it: rounded half away from zero; NaN or infinity is refused."""
    if type(value) is not Decimal:
        return _sqlite_integer(value)
    if not value.is_finite():
        raise Unstorable(_NO_INTEGER)
    return _decimal_integer(value)


def _sqlite_bound(bind: Converter, stored: Converter, result: Converter | None) -> Converter:
    def convert(value: Any) -> Any:
        try:
            number = bind(value)
        except (TypeError, ValueError, OverflowError):
            return value  # the flush refuses it
        if type(number) is not float:
            return value
        if number != number:
            raise Unstorable(SQLITE_NAN)
        number = stored(number)
        if result is None:
            return number
        number = result(number)
        # Written again, -0.0 is stored as the integer 0 (read back as 0.00, not -0.00).
        return number if number else number.copy_abs()

    return convert


def _sqlite_real(value: float) -> float:
    """REAL affinity stores an integral float as an integer: -0.0 is read back as 0.0."""
    return value if value else 0.0


def _sqlite_integral(value: float) -> float | int:
    if value.is_integer() and -_INT64 <= value < _INT64:
        return int(value)
    return value


def _sqlite_integer(value: Any) -> Any:
    """INTEGER affinity: an integral float, or a string that reads as a number, is stored
    as a number (an integer when it is one)."""
    kind = type(value)
    if kind is float:
        if value != value:
            raise Unstorable(SQLITE_NAN)
        return _sqlite_integral(value) if math.isfinite(value) else value
    if kind is bool:
        return int(value)
    if kind is str and _NUMBER.fullmatch(value):
        text = value.strip()
        if _PG_INTEGER.fullmatch(text):
            try:
                number = _integer_text(text)
            except UnstorableWide:
                number = float(text)  # stored as REAL, as a number past 64 bits
                if not math.isfinite(number):
                    raise
                return number
            return number if -_INT64 <= number < _INT64 else float(number)
        number = float(text)
        return _sqlite_integral(number) if math.isfinite(number) else number
    if kind is Decimal and value.is_nan():
        raise Unstorable(SQLITE_NAN)
    return value


def _then(first: Converter, kind: type, second: Converter) -> Converter:
    """``first``, then ``second`` when that gave a ``kind`` (else the value is left to the
    flush)."""

    def convert(value: Any) -> Any:
        converted = first(value)
        return second(converted) if type(converted) is kind else converted

    return convert


def _decimal_places(scale: int) -> Converter:
    def convert(value: float) -> Decimal:
        return Decimal(f"{value:.{scale}f}")

    return convert
