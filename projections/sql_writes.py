"""Writing a batch's folded writes: deletes (referencing tables first), then COPY of new
rows and upserts grouped by column set (referenced tables first), each a single statement
per table and column set.

:class:`projections.sql_tx.SqlTx` folds the writes of a batch's handlers per key; at commit it
hands them to a :class:`PendingWrites`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
import structlog
from psycopg.types.json import Json

from outbox.db_errors import without_values
from projections.api import UnstorableValueError
from projections.sql_number_values import pg_single_precision
from projections.sql_plans import (
    TablePlan,
    as_is,
    by_column_set,
    driver_cursor,
    table_plan,
    upsert_statement,
    value_tuples,
)

logger = structlog.get_logger("readmodel.projections")


class RefusedWrite(Exception):
    """The database (or the driver, encoding the values) refused writes for what they hold,
    or a lookup for the value looked up: doing it again fails again. Raised by
    :class:`SqlTx` around the error of its own statements (:func:`refusals`), so that a
    flush inside a handler (``tx.get``, ``tx.find``) is not taken for that handler's own
    failure, nor a handler's own query for the store's refusal; stores apply the batch's
    events one by one to find the event to blame."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(without_values(error)))  # logged: without the values refused
        self.error = error


_REFUSED = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,  # a value too big for an index row, say
    # A value of a type the column cannot take (a boolean for a NUMERIC column, a timestamp
    # for a BIGINT): the statements are built from the tables, the types from the values.
    psycopg.errors.DatatypeMismatch,
    psycopg.errors.CannotCoerce,
    # Two rows of one upsert PostgreSQL finds one key though Python does not (a citext key's
    # 'É' and 'é', a nondeterministic collation's 'A' and 'a'): batches of one write them.
    psycopg.errors.CardinalityViolation,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    TypeError,  # a value the driver or the JSON encoder cannot take
    ValueError,
    OverflowError,
)


def refused_write(exc: BaseException) -> bool:
    """Whether writing failed for the values written, not for the connection, the server's
    state or the schema (a missing table refuses every batch alike: not one event's fault)."""
    if isinstance(exc, RefusedWrite):
        return True
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, _REFUSED):
        return True
    message = str(exc)
    if isinstance(exc, psycopg.errors.UndefinedFunction):
        return message.startswith("operator does not exist")  # a key of another type
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
        return message.startswith(("cannot adapt type", "cannot dump"))  # client-side
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return message.startswith("Error binding parameter")
    return False


@contextmanager
def refusals() -> Iterator[None]:
    """Raise what the database or the driver refuses in the block for the values it was
    sent (:func:`refused_write`) as :class:`RefusedWrite`; anything else as it is."""
    try:
        yield
    except RefusedWrite:
        raise
    except Exception as exc:
        if refused_write(exc):
            raise RefusedWrite(exc) from exc
        raise


# Refusals of a value whatever the database holds, so whatever the attempt: PostgreSQL's
# data exceptions (class 22: out of range, too long, not a number...), a type the column
# cannot take, a value too big for an index row, a value the driver cannot send. Not an
# integrity error (a missing row or a duplicate key can be another lane's doing) nor a
# TypeError or ValueError, which a handler's own code raises too.
_FOR_GOOD = (
    psycopg.DataError,
    psycopg.errors.DatatypeMismatch,
    psycopg.errors.CannotCoerce,
    psycopg.errors.ProgramLimitExceeded,
    sqlite3.DataError,
    UnstorableValueError,  # WideIntegerError too: refused by the write, naming the column
)


def refused_for_good(error: BaseException) -> bool:
    """Whether ``error`` refuses a value written, alike on every attempt (see ``_FOR_GOOD``)."""
    if isinstance(error, sa.exc.StatementError) and error.orig is not None:
        error = error.orig
    if isinstance(error, psycopg.IntegrityError | sqlite3.IntegrityError):
        return False
    if isinstance(error, _FOR_GOOD):
        return True
    # A key of another type than the table's, a value the driver cannot bind.
    return refused_write(error) and isinstance(
        error, psycopg.ProgrammingError | sqlite3.ProgrammingError | sqlite3.InterfaceError
    )


DELETE = "delete"
UPSERT = "upsert"
REPLACE = "replace"  # a delete, then an upsert of the whole row
UNREAD: Any = object()

# (table name, key) -> (operation, row); the row is None for a delete.
Key = tuple[str, tuple[Any, ...]]
Entry = tuple[str, dict[str, Any] | None]


class NewRows:
    """Tables filled from empty by one writer (a rebuild's shadow tables).

    There, a row whose key the transaction has not read back from the table is most likely
    new: :class:`SqlTx` COPYs such rows, and those it read and found missing, instead of
    upserting them. A savepoint makes this exact: when a key exists after all, the COPY is
    rolled back and the rows are upserted, and from then on that table COPYs only rows
    known to be missing."""

    def __init__(self) -> None:
        self.existing_found: set[str] = set()


class PendingWrites:
    """The writes of one batch, folded per key, in the order their tables were first written.

    ``read`` holds what the batch read for each key (``None``: found missing); with
    ``new_rows`` it decides which rows are COPYed as new (see :class:`NewRows`).
    """

    def __init__(
        self,
        pending: dict[Key, Entry],
        order: Sequence[sa.Table],
        read: dict[Key, dict[str, Any] | None],
        new_rows: NewRows | None,
    ) -> None:
        self.pending = pending
        self.order = list(order)
        self.read = read
        self.new_rows = new_rows

    def write(self, conn: sa.Connection) -> None:
        """Send every write on ``conn`` (in its transaction)."""
        if not self.pending:
            return
        by_table: dict[str, list[Any]] = {}
        for item in self.pending.items():
            items = by_table.get(item[0][0])
            if items is None:
                by_table[item[0][0]] = [item]
            else:
                items.append(item)
        tables = [physical for physical in self.order if physical.name in by_table]
        if any(physical.foreign_keys for physical in tables):
            tables = list(sa.schema.sort_tables(tables))  # referenced tables first
        writes = [self._sort_out(conn, physical, by_table[physical.name]) for physical in tables]
        for physical, plan, deletes, _, _ in reversed(writes):  # referencing rows first
            if deletes:
                self._delete(conn, physical, plan, deletes)
        for physical, plan, _, copies, upserts in writes:
            self._insert(conn, physical, plan, copies, upserts)

    def _sort_out(self, conn: sa.Connection, physical: sa.Table, items: list[Any]) -> Any:
        """``(table, plan, deletes, copies, upserts)`` for ``items`` (``((name, key), (op,
        row))`` of this table, in pending order); copies and upserts by column set."""
        deletes: list[tuple[Any, ...]] = []
        upserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        postgresql = conn.dialect.name == "postgresql"
        plan = table_plan(conn.dialect, physical) if postgresql else None
        copies: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        new_rows = self.new_rows if plan is not None else None
        # Unread keys are taken for new until a COPY of this table met an existing one.
        unread_new = new_rows is not None and physical.name not in new_rows.existing_found
        read = self.read
        for k, (op, row) in items:
            if op != UPSERT:
                deletes.append(k[1])
                if op == DELETE or row is None:
                    continue
            elif new_rows is not None:
                seen = read.get(k, UNREAD)
                if seen is None or (seen is UNREAD and unread_new):
                    group = copies.get(columns := tuple(row))
                    if group is None:
                        copies[columns] = [row]
                    else:
                        group.append(row)
                    continue
            group = upserts.get(columns := tuple(row))
            if group is None:
                upserts[columns] = [row]
            else:
                group.append(row)
        # Grouped by the rows' key order (cheap), then by column set (sorted names).
        return physical, plan, deletes, by_column_set(copies), by_column_set(upserts)

    def _delete(
        self,
        conn: sa.Connection,
        physical: sa.Table,
        plan: TablePlan | None,
        deletes: list[tuple[Any, ...]],
    ) -> None:
        if plan is not None and plan.key_type is not None:
            firsts = [k[0] for k in deletes]
            document = plan.json_keys(firsts)
            if document is None:
                driver_cursor(conn).execute(plan.delete_any, (firsts,))
            else:
                driver_cursor(conn).execute(plan.delete_any_json, (Json(document, dumps=as_is),))
        else:
            pk = list(physical.primary_key.columns)
            params = [{f"k{i}": v for i, v in enumerate(key)} for key in deletes]
            where = [c == as_compared(conn, c, sa.bindparam(f"k{i}")) for i, c in enumerate(pk)]
            conn.execute(sa.delete(physical).where(*where), params)

    def _insert(
        self,
        conn: sa.Connection,
        physical: sa.Table,
        plan: TablePlan | None,
        copies: dict[tuple[str, ...], list[dict[str, Any]]],
        upserts: dict[tuple[str, ...], list[dict[str, Any]]],
    ) -> None:
        for columns, rows in copies.items():
            if not self._copy(conn, plan, columns, rows):  # type: ignore[arg-type]
                upserts.setdefault(columns, []).extend(rows)
        for columns, rows in upserts.items():
            document = None if plan is None else plan.json_rows(columns, rows)
            if document is not None:
                # The rows travel as one JSON document (encoded in C), read by json_to_recordset.
                statement = plan.upsert_json(columns)  # type: ignore[union-attr]
                driver_cursor(conn).execute(statement, (Json(document, dumps=as_is),))
            elif plan is not None and (arrays := _uniform_arrays(columns, rows)) is not None:
                # One statement per column set: the rows travel as one array per column.
                driver_cursor(conn).execute(plan.upsert_unnest(columns), arrays)
            else:
                statement = upsert_statement(conn.dialect.name, physical, columns)
                conn.execute(statement, rows)

    def _copy(
        self,
        conn: sa.Connection,
        plan: TablePlan,
        columns: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> bool:
        """COPY rows that are probably new; ``False`` (nothing written) when a value needs the
        upsert's conversions or the COPY fails: a key exists after all (or a partial row of
        an existing key misses a NOT NULL column); the upsert then decides what happens."""
        values = value_tuples(columns, rows)
        types = plan.copy_types_of(columns, values)
        if types is None:
            return False
        cursor = driver_cursor(conn)
        cursor.execute("SAVEPOINT rm_copy_new")
        try:
            with cursor.copy(plan.copy_statement(columns)) as copy:
                copy.set_types(types)
                write_row = copy.write_row
                for value in values:
                    write_row(value)
        except Exception as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT rm_copy_new")
            logger.debug(
                "copy of new rows gave way to upserts",
                table=plan.table_name,
                error=type(exc).__name__,
            )
            self.new_rows.existing_found.add(plan.table_name)  # type: ignore[union-attr]
            return False
        cursor.execute("RELEASE SAVEPOINT rm_copy_new")
        return True


def as_compared(conn: sa.Connection, column: sa.Column[Any], value: Any) -> Any:
    """``value`` (a parameter) to compare with ``column``: cast to a PostgreSQL ``real``
    column's type (sent as a double, the column was compared widened, and 0.1 matched no
    row); as it is for any other column."""
    if conn.dialect.name == "postgresql" and pg_single_precision(conn.dialect, column.type):
        return sa.cast(value, column.type)
    return value


def _uniform_arrays(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[list[Any]] | None:
    """One list per column, or ``None`` when a column mixes value types (``0`` beside
    ``4.5``): psycopg cannot send such a list as one array; SQLAlchemy binds each row."""
    arrays = []
    for name in columns:
        values = [row[name] for row in rows]
        if len(set(map(type, values)) - {type(None)}) > 1:
            return None
        arrays.append(values)
    return arrays
