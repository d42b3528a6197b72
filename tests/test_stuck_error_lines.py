"""A store that refuses the counting of stuck attempts is logged as the database's reason,
never the statement or its parameters (:func:`outbox.error_text.describe_error`).

Before: ``counting the journalled stuck attempts failed`` and ``the stuck handler's attempt
could not be counted`` logged ``error=repr(exc)``: SQLAlchemy's repr, with ``[SQL: INSERT
INTO rm_failures ...]`` and ``[parameters: ...]``, the attempt's error text among them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from projections import stuck_events, stuck_journal
from projections.engine import ProjectionEngine
from projections.handler_timeout import StuckHandler
from projections.sql_store import SqlStore
from projections.stuck_events import STUCK_ERROR, counting, park_stuck
from projections.stuck_journal import Attempt
from tests.broker_helpers import wait_until
from tests.projection_fixtures import Totals, engine_on, log_events

VALUE = "secret-payload-value"
EVENTS = [
    ("acct-0", "Deposited", {"amount": 10, "seq": 1}),
    ("acct-1", "Deposited", {"amount": 20, "seq": 1}),
]
REFUSE = {  # a statement refused, as a full disk or a read-only replica refuses it
    "postgresql": "ALTER TABLE rm_failures ADD CONSTRAINT refused CHECK (attempts < 0) NOT VALID",
    "sqlite": "CREATE TRIGGER refused BEFORE INSERT ON rm_failures "
    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
}


@pytest.fixture
def engine_for(
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[str], ProjectionEngine]]:
    """``engine_for("postgresql" | "sqlite")``: the log and :class:`Totals` in one fresh
    database whose ``rm_failures`` refuses every insert."""
    monkeypatch.setattr(stuck_events, "RECORD_WAIT", 0.5)
    opened: list[Any] = []

    def make(kind: str) -> ProjectionEngine:
        url = pg_database() if kind == "postgresql" else sqlite_database()
        context = engine_on(url, [Totals()], max_attempts=2)
        log, store, engine = context.__enter__()
        opened.append(context)
        log_events(log, EVENTS, source="bank", aggregate_type="account")
        with store.engine.begin() as conn:
            conn.exec_driver_sql(REFUSE[kind])
        return engine

    yield make
    for context in reversed(opened):
        context.__exit__(None, None, None)


def _store(engine: ProjectionEngine) -> SqlStore:
    store = engine.stores["default"]
    assert isinstance(store, SqlStore)
    return store


def _without_statement(error: object) -> str:
    assert isinstance(error, str) and len(error) <= 200, error
    for leak in ("[SQL:", "[parameters:", "INSERT", "rm_failures.", VALUE, "[attempt"):
        assert leak not in error, error
    return error


def test_a_journalled_attempt_the_store_refuses(
    engine_for: Callable[[str], ProjectionEngine],
) -> None:
    engine = engine_for("sqlite")
    journal = _store(engine).stuck_journal()
    assert journal is not None
    attempt = uuid.uuid4().hex
    error = f"{STUCK_ERROR} [attempt {attempt}]: stuck in a handler holding {VALUE}"
    stuck_journal.append(journal, Attempt(attempt, "totals", "bank", 2, error))
    with capture_logs() as logs:
        assert park_stuck(engine) == 0  # the worker starts all the same
    [line] = [e for e in logs if e["event"] == "counting the journalled stuck attempts failed"]
    assert _without_statement(line["error"]) == "IntegrityError: refused by the test"
    kept = journal.with_name(journal.name + ".replaying")  # to be counted at a later start
    assert kept.exists() and VALUE in kept.read_text()


def test_a_stuck_attempt_the_store_refuses(
    engine_for: Callable[[str], ProjectionEngine],
) -> None:
    engine = engine_for("postgresql")
    projection = engine.projections["totals"]
    event = engine.reader.at_positions("bank", [2])[0]
    told: list[StuckHandler] = []
    action = counting(told.append, _store(engine), engine.lane_of(projection, event))
    event_name = "the stuck handler's attempt could not be counted"
    with capture_logs() as logs:
        action(StuckHandler("totals", "bank", 2, "Deposited", 9.0, event))
        assert wait_until(lambda: any(e["event"] == event_name for e in logs), 10)
    assert told and told[0].attempts is None
    [line] = [e for e in logs if e["event"] == event_name]
    assert (line["projection"], line["source"], line["position"]) == ("totals", "bank", 2)
    assert _without_statement(line["error"]) == (
        'CheckViolation: new row for relation "rm_failures" violates check constraint '
        '"refused" (SQLSTATE 23514; constraint refused; table rm_failures)'
    )
    assert "Failing row" not in line["error"] and "HandlerStuck" not in line["error"]


def test_the_refusal_quotes_the_row(engine_for: Callable[[str], ProjectionEngine]) -> None:
    """The refusal the line above tells is PostgreSQL's own, quoting the refused row (which
    the line leaves out)."""
    engine = engine_for("postgresql")
    projection = engine.projections["totals"]
    event = engine.reader.at_positions("bank", [2])[0]
    with pytest.raises(sa.exc.IntegrityError) as raised:
        _store(engine).record_failure(engine.lane_of(projection, event), event, VALUE)
    assert "Failing row contains" in repr(raised.value) and VALUE in repr(raised.value)
