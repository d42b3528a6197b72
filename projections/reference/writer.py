"""Writes the simulator's business actions into one service database, fast.

Each action is one transaction: its state changes, then its outbox rows. Statements are
compiled once per shape and run on the driver's own connection (psycopg prepares them
after a few runs), and each service has a thread of its own, so the three databases
commit in parallel while the simulator plans the next actions. A service receives its
actions in the order they were planned, so its final state does not depend on timing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from config import SourceSettings
from outbox.db import create_engine, describe_db_error, engine_kind, redact_dsn
from outbox.errors import ReadmodelError, SourceError

Write = tuple[str, sa.TableClause, str | None, list[dict[str, Any]]]
Event = tuple[str, str, str, dict[str, Any]]


def insert(table: sa.TableClause, rows: dict[str, Any] | list[dict[str, Any]]) -> Write:
    """Insert one row or several rows of the same columns."""
    return ("insert", table, None, rows if isinstance(rows, list) else [rows])


def update(table: sa.TableClause, key: str, row: dict[str, Any]) -> Write:
    """Update the row whose ``key`` column equals ``row[key]`` with the other values."""
    return ("update", table, key, [row])


class ServiceWriter:
    """One service database: a connection, a thread, and the compiled statements."""

    def __init__(self, name: str, settings: SourceSettings, *, backlog: int = 256) -> None:
        self.name = name
        self.url = settings.url
        self.kind = engine_kind(settings.url)
        self.engine = create_engine(settings.url)
        c = settings.columns
        self.columns = {
            "aggregate_type": c.aggregate_type,
            "aggregate_id": c.aggregate_id,
            "event_type": c.event_type,
            "payload": c.payload,
        }
        if c.event_id:
            self.columns["event_id"] = c.event_id
        self.outbox = sa.table(
            settings.table,
            *[sa.column(column) for column in self.columns.values()],
            schema=settings.schema_name,
        )
        self.events = 0
        self.error: ReadmodelError | None = None
        self._compiled: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None]] = {}
        self._queue: queue.Queue[list[Write] | None] = queue.Queue(maxsize=backlog)
        self._thread = threading.Thread(target=self._run, name=f"simulate-{name}", daemon=True)
        self._thread.start()

    def submit(self, writes: list[Write], events: Sequence[Event], event_ids: list[str]) -> None:
        """Queue one business action (its writes, then its outbox rows)."""
        if self.error is not None:
            raise self.error
        rows = []
        for (aggregate_type, aggregate_id, event_type, payload), event_id in zip(
            events, event_ids, strict=True
        ):
            row = {
                self.columns["aggregate_type"]: aggregate_type,
                self.columns["aggregate_id"]: aggregate_id,
                self.columns["event_type"]: event_type,
                self.columns["payload"]: orjson.dumps(payload).decode(),
            }
            if "event_id" in self.columns:
                row[self.columns["event_id"]] = event_id
            rows.append(row)
        self.events += len(rows)
        self._queue.put([*writes, insert(self.outbox, rows)])

    def close(self) -> None:
        """Wait for every queued action; raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.engine.dispose()
        if self.error is not None:
            raise self.error

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        raw: Any = None
        try:
            raw = self.engine.raw_connection()
            driver = raw.driver_connection
            if self.kind == "postgresql":  # a load generator: no need to wait for the WAL flush
                driver.execute("SET synchronous_commit = off")
                driver.commit()
            while (action := self._queue.get()) is not None:
                self._apply(driver, action)
        except Exception as exc:
            message = f"source {self.name!r} ({redact_dsn(self.url)}): {describe_db_error(exc)}"
            if "integrity" in type(exc).__name__.lower() or "unique" in str(exc).lower():
                # Reached and refused: not "unreachable" (SourceError, exit 3) but a failure.
                self.error = ReadmodelError(
                    f"{message} (does the database hold data of an earlier run with the same "
                    f"--seed? use another seed or fresh databases)"
                )
            else:
                self.error = SourceError(message)
            while self._queue.get() is not None:  # unblock the planner; it raises next
                pass
        finally:
            if raw is not None:
                raw.close()

    def _apply(self, driver: Any, action: list[Write]) -> None:
        cursor = driver.cursor()
        try:
            if self.kind == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            for op, table, key, rows in action:
                sql, order = self._statement(op, table, key, rows[0])
                params = [self._params(row, key, order) for row in rows]
                if len(params) == 1:
                    cursor.execute(sql, params[0])
                else:
                    cursor.executemany(sql, params)
            if self.kind == "sqlite":
                cursor.execute("COMMIT")
            else:
                driver.commit()
        except BaseException:
            if self.kind == "sqlite":
                if driver.in_transaction:
                    cursor.execute("ROLLBACK")
            else:
                driver.rollback()
            raise
        finally:
            cursor.close()

    def _statement(
        self, op: str, table: sa.TableClause, key: str | None, row: Mapping[str, Any]
    ) -> tuple[str, tuple[str, ...] | None]:
        columns = tuple(name for name in row if name != key)
        cache_key = (op, table.name, key, columns)
        found = self._compiled.get(cache_key)
        if found is None:
            if op == "insert":
                statement: Any = table.insert()
            else:
                statement = table.update().where(table.c[key] == sa.bindparam("key_"))
            compiled = statement.compile(dialect=self.engine.dialect, column_keys=list(columns))
            order = tuple(compiled.positiontup) if compiled.positional else None
            found = self._compiled[cache_key] = (compiled.string, order)
        return found

    def _params(
        self, row: Mapping[str, Any], key: str | None, order: tuple[str, ...] | None
    ) -> Any:
        values = {name: self._value(value) for name, value in row.items() if name != key}
        if key is not None:
            values["key_"] = row[key]
        return values if order is None else tuple(values[name] for name in order)

    def _value(self, value: Any) -> Any:
        if self.kind == "sqlite" and isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
        return value
