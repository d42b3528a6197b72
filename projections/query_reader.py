"""Reading a projection's tables: the :class:`Reader` of ``@query`` methods, get by key, and
keyset pages by primary key behind an opaque cursor.

How values are typed (:mod:`projections.query_values`), the cursors
(:mod:`projections.query_cursors`) and :class:`QueryError` (:mod:`projections.query_errors`)
live in their own modules; the names callers import from here still are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import StoreError
from outbox.rows import json_safe
from projections.query_cursors import decode_cursor, encode_cursor, list_fingerprint
from projections.query_errors import QueryError
from projections.query_values import JsonValue, filter_value, key_value, sqlite_wall_time
from projections.session_zone_tags import session_key
from projections.tenant_scope import raw_handle, scoped_to_tenant

__all__ = ["JsonValue", "Page", "QueryError", "SqlReader", "filter_value"]


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


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
        self._zone: list[tzinfo | None] = []  # the session's, once known (shared by copies)

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
        return raw_handle(self, self._engine, "read.engine", self.projection)  # type: ignore[no-any-return]

    def for_tenant(self, tenant: str | None) -> SqlReader:
        """This reader, its reads of tenant tables limited to ``tenant``'s rows; a reader
        already scoped is refused another tenant (:mod:`projections.tenant_scope`)."""
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
        sqlite = self._engine.dialect.name == "sqlite"
        typed = [key_value(c, v, hint, sqlite=sqlite) for c, v in zip(columns, values, strict=True)]
        if sqlite:
            typed = [sqlite_wall_time(c, v) for c, v in zip(columns, typed, strict=True)]
        elif self._engine.dialect.name == "postgresql" and datetime in map(type, typed):
            zone = self._session_zone()
            typed = [session_key(c, v, zone) for c, v in zip(columns, typed, strict=True)]
        return tuple(typed)

    def _session_zone(self) -> tzinfo | None:
        """The store's session ``TimeZone`` (PostgreSQL), asked once: a key's timestamp is
        read as the session stores it (:func:`~projections.session_zone_tags.session_key`)."""
        if not self._zone:
            try:
                with self._engine.connect() as conn:
                    driver = conn.connection.driver_connection
                    self._zone.append(driver.info.timezone)  # type: ignore[union-attr]
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"{self.projection}: query failed: {describe_db_error(exc)}"
                ) from exc
        return self._zone[0]

    def key_dict(self, table: sa.Table, key: Any) -> dict[str, Any]:
        return {
            c.name: v for c, v in zip(table.primary_key.columns, self.key(table, key), strict=True)
        }

    def equals(self, table: sa.Table, equals: Mapping[str, Any]) -> list[Any]:
        sqlite = self._engine.dialect.name == "sqlite"
        return [
            self.column(table, name) == filter_value(self.column(table, name), value, sqlite=sqlite)
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
