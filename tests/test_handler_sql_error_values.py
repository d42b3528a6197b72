"""A table projection's handler that raises a database error of its own (an insert on its
own PostgreSQL connection, psycopg's or SQLAlchemy's, refused for a duplicate of a unique
column) fails its event without the value: PostgreSQL's DETAIL (``Key (email)=(...)
already exists``) and SQLAlchemy's parameters quote it. The parked reason, its traceback,
the log lines and a strict replay's error name the error and the constraint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from projections.api import Event, Projection, Tx, on
from projections.replay import Replayer
from projections.replay_types import ReplayError, ReplayOptions
from tests.projection_fixtures import engine_on, log_events

PLANTED = "planted-secret@example.com"
_ENROL = (
    "INSERT INTO handler_people (id, email) VALUES (%(id)s, %(email)s) "
    "ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email"
)

enrolments = sa.Table("sql_enrolments", sa.MetaData(), sa.Column("id", sa.Text, primary_key=True))


class Enrolments(Projection):
    """Its handler writes the person's address into a table of its own (``handler_people``,
    a unique ``email``) on its own connection, then a row through the Tx."""

    name = "sql_enrolments"
    tables = (enrolments,)
    partitions = 1
    dsn: ClassVar[str] = ""

    @on("crm", "Enrolled")
    def enrolled(self, event: Event[dict], tx: Tx) -> None:
        row = {"id": event.aggregate_id, "email": event.payload["email"]}
        if event.payload.get("via") == "sqlalchemy":
            own = sa.create_engine(self.dsn.replace("postgresql://", "postgresql+psycopg://"))
            try:
                with own.begin() as conn:
                    conn.exec_driver_sql(_ENROL, row)
            finally:
                own.dispose()
        else:
            with psycopg.connect(self.dsn) as conn:
                conn.execute(_ENROL, row)
        tx.upsert(enrolments, {"id": event.aggregate_id})


@pytest.fixture
def url(pg_database: Callable[[], str]) -> Iterator[str]:
    """A database whose ``handler_people`` holds :data:`PLANTED` under ``people_email``."""
    made = pg_database()
    dsn = made.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE handler_people (id text PRIMARY KEY, email text "
            "CONSTRAINT people_email UNIQUE)"
        )
        conn.execute("INSERT INTO handler_people VALUES ('taken', %s)", (PLANTED,))
    Enrolments.dsn = dsn
    yield made
    Enrolments.dsn = ""


@pytest.mark.parametrize("batch_size", [1, 50])
@pytest.mark.parametrize("via", ["psycopg", "sqlalchemy"])
def test_a_handlers_own_duplicate_is_parked_without_the_value(
    via: str, batch_size: int, url: str
) -> None:
    events = [
        ("p0", "Enrolled", {"email": "fresh@example.com", "via": via}),
        ("p1", "Enrolled", {"email": PLANTED, "via": via}),
    ]
    with capture_logs() as logs:
        with engine_on(url, [Enrolments()], batch_size=batch_size, max_attempts=1) as (
            log,
            store,
            engine,
        ):
            log_events(log, events, source="crm", aggregate_type="person")
            engine.catch_up(deadline=60)
            (parked,) = store.parked(Enrolments.name)
    assert parked.aggregate_id == "p1"
    assert "UniqueViolation" in parked.reason and "people_email" in parked.reason, parked.reason
    assert "23505" in parked.reason, parked.reason
    assert any(line.get("event") == "event parked" for line in logs), logs
    for text in (parked.reason, parked.detail or "", repr(logs)):
        assert PLANTED not in text, text
        assert "already exists" not in text, text


def test_a_strict_replay_stops_at_a_handlers_own_duplicate_without_the_value(url: str) -> None:
    events = [
        ("p0", "Enrolled", {"email": "fresh@example.com"}),
        ("p1", "Enrolled", {"email": PLANTED}),
    ]
    with psycopg.connect(Enrolments.dsn) as conn:
        conn.execute("DELETE FROM handler_people")
    with engine_on(url, [Enrolments()], max_attempts=1) as (log, store, engine):
        log_events(log, events, source="crm", aggregate_type="person")
        engine.catch_up(deadline=60)
        assert store.parked(Enrolments.name) == []
        with psycopg.connect(Enrolments.dsn) as conn:
            conn.execute("DELETE FROM handler_people WHERE id = 'p1'")
            conn.execute("INSERT INTO handler_people VALUES ('taken', %s)", (PLANTED,))
        with capture_logs() as logs:
            with pytest.raises(ReplayError) as stopped:
                Replayer(engine.reader, Enrolments(), store, batch_size=16).run(ReplayOptions())
    message = str(stopped.value)
    assert "replay stopped at crm:2 (Enrolled of person:p1)" in message, message
    assert "UniqueViolation" in message and "people_email" in message, message
    for text in (message, repr(stopped.value.error), repr(logs)):
        assert PLANTED not in text, text
