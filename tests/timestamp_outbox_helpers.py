"""For the tests of how sources read timestamps (tests/test_epoch_timestamps.py,
test_sql_epoch_units.py, test_sql_odd_dates.py, test_mongo_epoch_units.py): outbox tables of
one timestamp column ``occurred``, a watch on the SELECTs a source runs, what the relay logs
and parks, and the oldest age ``status`` reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.parking import ParkedEvents
from outbox.relay import Relay
from outbox.source import SqlOutboxSource
from outbox.sources import open_source

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


DAY = 86_400.0


def relayed(settings: Settings) -> tuple[list[tuple[int, datetime | None]], list[str]]:
    """``(n of the payload, occurred_at)`` of each event the relay logs from source ``svc``,
    in log order, and the reasons of those it parks."""
    relay = Relay(settings)
    try:
        totals = relay.drain()["svc"]
        assert totals.errors == []
        logged = [(e.payload["n"], e.occurred_at) for e in relay.log.read("svc")]
        parked = [p.reason for p in ParkedEvents(relay.log.engine).list(source="svc")]
    finally:
        relay.close()
    return logged, parked


def pending(settings: Settings) -> tuple[int, float | None]:
    """Source ``svc``'s undelivered rows and oldest age in seconds, as ``status`` reads them."""
    source = open_source("svc", settings.sources["svc"])
    try:
        stats = source.pending()
    finally:
        source.close()
    return stats.undelivered, stats.oldest_age_seconds


def ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def about(age: float | None, days: float, slack: float = 600) -> bool:
    """``age`` is ``days`` old, give or take the minutes a slow machine takes to ask (and
    ``slack`` more: a DATE column's value is the midnight before)."""
    return age is not None and days * DAY - 60 <= age <= days * DAY + slack
