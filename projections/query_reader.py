"""Reading a projection's tables: the :class:`Reader` of ``@query`` methods, get by key, and
keyset pages by primary key behind an opaque cursor."""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import ReadmodelError, StoreError
from outbox.rows import json_safe


class QueryError(ReadmodelError):
    """The query itself is wrong: unknown projection, table, column or query, a column
    without an index, a bad key or cursor. Nothing was read."""


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


@dataclass(frozen=True, slots=True)
class JsonValue:
    """A filter value given as JSON (``readmodel query --where field:=JSON``): ``value`` as
    parsed (exact: an ``int``, a :class:`~decimal.Decimal` for a number with a fraction or
    an exponent; a KEY's ``{"$oid": HEX}`` an ObjectId), ``text`` as given. Unlike a Python
    value, which is sent as it is (text read as the column's type), it must suit its column:
    ``7`` is refused for a text one."""

    value: Any
    text: str


def plain_value(value: Any) -> Any:
    """``value`` without its :class:`JsonValue` wrapping, a JSON number with a fraction as a
    ``float`` when that is the same number (``0.1``: what a JSON payload stores), else as the
    exact :class:`~decimal.Decimal`; a Python value as it is."""
    return json_number(value.value) if isinstance(value, JsonValue) else value


def json_number(value: Any) -> Any:
    """``value`` with each :class:`~decimal.Decimal` in it as a ``float`` when that is the
    same number (``0.1``, as a JSON payload is stored), else as it is."""
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) and Decimal(repr(number)) == value else value
    if isinstance(value, list):
        return [json_number(item) for item in value]
    if isinstance(value, dict):
        return {key: json_number(item) for key, item in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: ``rows`` and the cursor of the next page (``None`` at the end)."""

    rows: list[dict[str, Any]]
    next: str | None
    stale: bool = False
    consistency: Any = None
    """When ``stale``: the consistency error that says how far the projection got."""


class SqlReader:
    """Read-only access to one projection's tables in a SQL store (implements ``Reader``)."""

    def __init__(
        self,
        engine: sa.Engine,
        projection: str,
        tables: Sequence[sa.Table],
        *,
        tenant_column: str | None = None,
        shared_tables: Sequence[sa.Table] = (),
        tenant: str | None = None,
    ) -> None:
        self._engine = engine
        self.projection = projection
        self.tables = {t.name: t for t in tables}
        self._tenant_column = tenant_column
        self.shared = frozenset(t.name for t in shared_tables)
        self._tenant = tenant
        self._query: str | None = None

    @property
    def tenant(self) -> str | None:
        """The tenant whose rows this reader reads (``None``: unscoped)."""
        return self._tenant

    @property
    def tenant_column(self) -> str | None:
        return self._tenant_column

    @property
    def engine(self) -> sa.Engine:
        """The store's engine: raw access, refused to a reader scoped to a tenant."""
        from projections.tenant_scope import raw_handle  # it imports QueryError from here

        return raw_handle(self, self._engine, "read.engine", self.projection)  # type: ignore[no-any-return]

    def for_tenant(self, tenant: str | None) -> SqlReader:
        """This reader, its reads of tenant tables limited to ``tenant``'s rows; a reader
        already scoped is refused another tenant (:mod:`projections.tenant_scope`)."""
        from projections.tenant_scope import scoped_to_tenant

        return scoped_to_tenant(self, self.projection, self.tenant_column, tenant, "rows")

    def _scope(self, table: sa.Table) -> list[Any]:
        """The tenant filter of ``table`` (none for a shared table)."""
        if self.tenant is None or table.name in self.shared:
            return []
        if self.tenant_column not in table.c:  # fail closed (the projection checks it too)
            raise QueryError(f"table {table.name!r} has no tenant column {self.tenant_column!r}")
        return [table.c[self.tenant_column] == self.tenant]

    def scoped_column(self, table: sa.Table) -> str | None:
        """The tenant column this reader's reads of ``table`` filter on, if any."""
        return self.tenant_column if self._scope(table) else None

    def table(self, table: sa.Table | str | None) -> sa.Table:
        if table is None:
            if not self.tables:
                raise QueryError(f"projection {self.projection!r} has no tables")
            return next(iter(self.tables.values()))
        name = table.name if isinstance(table, sa.Table) else table
        try:
            return self.tables[name]
        except KeyError:
            raise QueryError(
                f"projection {self.projection!r} has no table {name!r} "
                f"(known: {_known(self.tables)})"
            ) from None

    def column(self, table: sa.Table, name: str) -> sa.Column[Any]:
        try:
            return table.c[name]
        except KeyError:
            raise QueryError(
                f"table {table.name!r} has no column {name!r} (columns: {_known(table.c.keys())})"
            ) from None

    # -- the Reader protocol -------------------------------------------------------

    def get(self, table: sa.Table | str, key: Any) -> dict[str, Any] | None:
        t = self.table(table)
        key_values = zip(t.primary_key.columns, self.key(t, key), strict=True)
        where = [col == value for col, value in key_values]
        return self._one(sa.select(t).where(*where, *self._scope(t)))

    def first(self, table: sa.Table | str, **equals: Any) -> dict[str, Any] | None:
        rows = self.find(table, limit=1, **equals)
        return rows[0] if rows else None

    def find(
        self,
        table: sa.Table | str,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        **equals: Any,
    ) -> list[dict[str, Any]]:
        t = self.table(table)
        if limit is not None and limit < 0:
            raise QueryError(f"limit must not be negative (got {limit})")
        statement = sa.select(t).where(*self.equals(t, equals), *self._scope(t))
        if order_by is None:
            statement = statement.order_by(*t.primary_key.columns)
        else:
            names = [order_by] if isinstance(order_by, str) else list(order_by)
            statement = statement.order_by(*(self._order(t, n) for n in names))
        if limit is not None:
            statement = statement.limit(limit)
        return self._rows(statement)

    def rows(self, statement: sa.Select[Any]) -> list[dict[str, Any]]:
        if self.tenant is not None:
            raise QueryError(
                f"projection {self.projection!r} keeps rows per tenant: a statement of the "
                f"query's own cannot be limited to one; read with get, first or find"
            )
        return self._rows(statement)

    def _rows(self, statement: sa.Select[Any]) -> list[dict[str, Any]]:
        try:
            with self._engine.connect() as conn:
                return [json_safe(dict(row._mapping)) for row in conn.execute(statement)]
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.projection}: query failed: {describe_db_error(exc)}") from exc

    def _one(self, statement: sa.Select[Any]) -> dict[str, Any] | None:
        rows = self._rows(statement.limit(1))
        return rows[0] if rows else None

    def _order(self, table: sa.Table, name: str) -> Any:
        descending = name.startswith("-")
        column = self.column(table, name.lstrip("-"))
        return column.desc() if descending else column.asc()

    # -- keys, filters, pages ------------------------------------------------------

    def key(self, table: sa.Table, key: Any) -> tuple[Any, ...]:
        """``key`` (a value, a tuple, or ``a,b`` text for a composite key; a
        :class:`JsonValue`, of a list for a composite key) as typed values."""
        columns = list(table.primary_key.columns)
        shown = key.text if isinstance(key, JsonValue) else repr(key)
        if isinstance(key, JsonValue) and isinstance(key.value, list) and len(columns) > 1:
            key = tuple(JsonValue(v, orjson.dumps(v, default=str).decode()) for v in key.value)
        elif isinstance(key, str) and len(columns) > 1:
            key = tuple(key.split(","))
        values = key if isinstance(key, tuple | list) else (key,)
        if len(values) != len(columns):
            raise QueryError(
                f"table {table.name!r}: key {shown} does not match its primary key "
                f"({', '.join(c.name for c in columns)})"
            )
        hint = (
            "give the key as text: VALUE, or typed: :=JSON"
            if len(columns) == 1
            else f"give the key as text: {','.join(['VALUE'] * len(columns))}, "
            f"or typed: :='[{', '.join(['JSON'] * len(columns))}]'"
        )
        return tuple(filter_value(c, v, hint) for c, v in zip(columns, values, strict=True))

    def key_dict(self, table: sa.Table, key: Any) -> dict[str, Any]:
        return {
            c.name: v for c, v in zip(table.primary_key.columns, self.key(table, key), strict=True)
        }

    def equals(self, table: sa.Table, equals: Mapping[str, Any]) -> list[Any]:
        return [
            self.column(table, name) == filter_value(self.column(table, name), value)
            for name, value in equals.items()
        ]

    def page(
        self,
        table: sa.Table,
        where: Mapping[str, Any],
        *,
        after: str | None,
        limit: int,
    ) -> Page:
        """Rows matching ``where`` in primary-key order, after the cursor ``after``.

        Keyset pagination: the cursor holds the last primary key of the page, so rows
        inserted or deleted between pages never make a later page repeat or skip a row
        that existed throughout.
        """
        if limit < 1:
            raise QueryError(f"limit must be at least 1 (got {limit})")
        pk = list(table.primary_key.columns)
        statement = sa.select(table).where(*self.equals(table, where), *self._scope(table))
        statement = statement.order_by(*pk)
        fingerprint = list_fingerprint(self.projection, table.name, where, self.tenant)
        if after:
            last = decode_cursor(after, fingerprint, pk)
            if len(pk) == 1:
                statement = statement.where(pk[0] > last[0])
            else:
                statement = statement.where(sa.tuple_(*pk) > sa.tuple_(*last))
        rows = self._rows(statement.limit(limit + 1))
        if len(rows) <= limit:
            return Page(rows, None)
        rows = rows[:limit]
        return Page(rows, encode_cursor([rows[-1][c.name] for c in pk], fingerprint))


def coerce(column: sa.Column[Any], value: Any) -> Any:
    """A value from the command line or a cursor (text) as the column's Python type; a
    whole number as ``int`` in an integer column (``42.0`` finds row 42: one spelling per
    row, so the cache key and tag of ``42.0`` are those an event of row 42 invalidates)."""
    if isinstance(value, float | Decimal) and _integer_column(column):
        return _whole(value)
    if isinstance(value, Decimal):
        return _canonical_decimal(column, value)
    if value is None or not isinstance(value, str):
        return value
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    try:
        if python_type is bool:
            if value.lower() in ("true", "1", "yes", "t"):
                return True
            if value.lower() in ("false", "0", "no", "f"):
                return False
            raise ValueError(value)
        if python_type is Decimal:
            return _canonical_decimal(column, Decimal(value))
        if python_type in (int, float, uuid.UUID):
            return python_type(value)
        if python_type is datetime:
            return datetime.fromisoformat(value)
        if python_type is date:
            return date.fromisoformat(value)
        if python_type is time:
            return time.fromisoformat(value)
        if python_type in (timedelta, bytes, dict, list):
            raise QueryError(
                f"column {column.name!r}: {python_type.__name__} values cannot be given as text"
            )
    except (ValueError, ArithmeticError):
        raise QueryError(
            f"column {column.name!r}: {value!r} is not a valid {python_type.__name__}"
        ) from None
    return value


def filter_value(column: sa.Column[Any], value: Any, hint: str | None = None) -> Any:
    """A filter's value as the column's Python type: a :class:`JsonValue` only when it is of
    the column's kind (a JSON number for a number column, ``true``/``false`` for a boolean
    one); anything else as :func:`coerce` reads it (text as the column's type). ``hint``
    says how to give the value otherwise (a ``--where`` filter's by default)."""
    if isinstance(value, JsonValue):
        return _json_value(column, value, hint or f"give text as {column.name}=VALUE")
    return coerce(column, value)


def _json_value(column: sa.Column[Any], given: JsonValue, hint: str) -> Any:
    value = given.value
    if value is None:
        return None
    if isinstance(value, str):
        return coerce(column, value)
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    number = not isinstance(value, bool) and isinstance(value, int | Decimal)
    if isinstance(value, dict | list):
        if python_type in (dict, list):
            return value
    elif python_type is bool:
        if isinstance(value, bool):
            return value
    elif python_type is int:  # no row holds an integer past 64 bits: refused as such
        if number and -(2**63) <= value < 2**63 and value == value // 1:
            return int(value)
    elif python_type is float:
        if number:
            return float(value)
    elif python_type is Decimal:
        if number:
            return _canonical_decimal(column, Decimal(value))
    raise QueryError(
        f"column {column.name!r}: {given.text.strip()} is not a valid "
        f"{python_type.__name__} ({hint})"
    )


def _integer_column(column: sa.Column[Any]) -> bool:
    try:
        return column.type.python_type is int
    except NotImplementedError:
        return False


def _whole(value: float | Decimal) -> int | float | Decimal:
    """``value`` as an ``int`` when it is a whole number (no row of an integer column holds
    anything else: a fraction is kept, and finds nothing)."""
    try:
        return int(value) if value == int(value) else value
    except (OverflowError, ValueError, ArithmeticError):  # inf, nan
        return value


def _canonical_decimal(column: sa.Column[Any], value: Decimal) -> Decimal:
    """``value`` at the column's scale (``1.5`` -> ``1.50`` for NUMERIC(10, 2)), as the
    database returns it: one spelling per row, for cache keys and tags alike."""
    scale = getattr(column.type, "scale", None)
    if scale is None or not value.is_finite():
        return value
    try:
        return value.quantize(Decimal(1).scaleb(-scale))
    except ArithmeticError:  # more digits than any row of the column can hold: no such row
        return value


def list_fingerprint(
    projection: str, listed: str, where: Mapping[str, Any], tenant: str | None
) -> str:
    """What a list's cursors are made for: the projection, the table or collection listed
    (whose key orders it), the filters (each value by its ``str``: where ``5`` and ``"5"``
    are different filters, the caller passes them typed, e.g. by ``repr``) and the tenant."""
    scope = {} if tenant is None else {"\x00tenant": tenant}
    fields = sorted((k, str(v)) for k, v in {**where, **scope}.items())
    return hashlib.blake2s(orjson.dumps([projection, listed, fields]), digest_size=6).hexdigest()


def encode_cursor(key: Any, fingerprint: str, dumps: Callable[[Any], bytes] = orjson.dumps) -> str:
    """The opaque cursor of the page after ``key``, for the list of ``fingerprint``
    (``dumps``: how the key is written, JSON for a table's)."""
    raw = dumps({"k": key, "f": fingerprint})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_key(
    cursor: str,
    fingerprint: str,
    loads: Callable[[bytes], Any] = orjson.loads,
    valid: Callable[[Any], bool] = lambda key: True,
) -> Any:
    """The key ``cursor`` holds; :class:`QueryError` unless it is one (``loads`` raises
    ``ValueError`` for what it cannot read; ``valid`` says whether a key is of the list's
    kind) that the list of ``fingerprint`` made."""
    try:
        data = loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key, made_for = data["k"], data["f"]
    except (ValueError, TypeError, KeyError):
        key, made_for = None, None
    if made_for is None or not valid(key):
        raise QueryError(f"cursor {cursor!r} is not a cursor this query returned")
    if made_for != fingerprint:
        raise _another_list(cursor)
    return key


def _another_list(cursor: str) -> QueryError:
    return QueryError(
        f"cursor {cursor!r} belongs to another list (other projection, table or collection, "
        f"filters or tenant)"
    )


def decode_cursor(cursor: str, fingerprint: str, pk: list[sa.Column[Any]]) -> tuple[Any, ...]:
    """The primary key a table's cursor holds, as the columns' types."""
    key = cursor_key(cursor, fingerprint, valid=_key_list)
    if len(key) != len(pk):
        raise _another_list(cursor)
    return tuple(coerce(c, v) if isinstance(v, str) else v for c, v in zip(pk, key, strict=True))


def _key_list(key: Any) -> bool:
    return isinstance(key, list) and all(v is None or type(v) in (str, int, float) for v in key)
