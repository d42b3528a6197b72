"""Outbox tables of one timestamp column ``occurred`` for the tests of how sources read
timestamps (tests/test_epoch_timestamps.py, test_sql_epoch_units.py, test_sql_odd_dates.py),
and a watch on the SELECTs a source runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from outbox.db import create_engine
from outbox.source import SqlOutboxSource

SEQ = {
    "postgresql": "seq BIGSERIAL PRIMARY KEY",
    "mysql": "seq BIGINT AUTO_INCREMENT PRIMARY KEY",
    "sqlite": "seq INTEGER PRIMARY KEY AUTOINCREMENT",
}


def write_outbox(
    engine_name: str,
    url: str,
    column_type: str,
    values: list[Any],
    *,
    session_sql: str | None = None,
) -> None:
    """A fresh ``outbox`` table at ``url`` whose ``occurred`` column (of ``column_type``)
    holds one row per value, in list order (``session_sql`` run first in the same session)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if session_sql is not None:
                conn.exec_driver_sql(session_sql)
            conn.exec_driver_sql(
                f"CREATE TABLE outbox ({SEQ[engine_name]}, id VARCHAR(64) NOT NULL, "
                "aggregatetype VARCHAR(50) NOT NULL, aggregateid VARCHAR(50) NOT NULL, "
                f"type VARCHAR(50) NOT NULL, payload TEXT NOT NULL, occurred {column_type})"
            )
            for n, value in enumerate(values):
                conn.execute(
                    sa.text(
                        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, "
                        "occurred) VALUES (:id, 'order', 'o1', 'Placed', :payload, :occurred)"
                    ),
                    {"id": f"e{n}", "payload": f'{{"n": {n}}}', "occurred": value},
                )
    finally:
        engine.dispose()


@contextmanager
def selects_watched() -> Iterator[Callable[[SqlOutboxSource], list[str]]]:
    """``watch(source)``: the list the SELECTs ``source`` runs from then on are appended to
    (its table shape read first: transaction statements, SQLite's ``BEGIN``, left out)."""
    watched: list[tuple[sa.Engine, Callable[..., None]]] = []

    def watch(source: SqlOutboxSource) -> list[str]:
        assert source.column_names["occurred_at"] == "occurred"
        seen: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                seen.append(statement)

        sa.event.listen(source.engine, "before_cursor_execute", record)
        watched.append((source.engine, record))
        return seen

    try:
        yield watch
    finally:
        for engine, record in watched:
            sa.event.remove(engine, "before_cursor_execute", record)
